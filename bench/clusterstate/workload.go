package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
)

// Config is one measurement.
type Config struct {
	Sessions    int           // sessions created for the memory figures and the sweep
	Duration    time.Duration // measured time of each throughput phase
	Conc        int           // goroutines calling at once, as a replica's relays do
	Rate        int           // connection events/s of the paced phase (its latency is the one a replica sees below saturation)
	Reps        int
	Prefix      string // REDIS_KEY_PREFIX
	Replica     string // this replica's id, as stored in c:REPLICA and P{N}:r:REPLICA
	Bot         string
	Interval    time.Duration // the bot's check interval (connection mode)
	ForgetAfter time.Duration
	RedisBin    string
	Log         io.Writer
}

func (c *Config) defaults() {
	if c.Sessions <= 0 {
		c.Sessions = 20000
	}
	if c.Duration <= 0 {
		c.Duration = 3 * time.Second
	}
	if c.Conc <= 0 {
		c.Conc = 64
	}
	if c.Rate <= 0 {
		c.Rate = 10000
	}
	if c.Reps <= 0 {
		c.Reps = 3
	}
	if c.Prefix == "" {
		c.Prefix = "presence-sidecar:"
	}
	if c.Replica == "" {
		// A Kubernetes pod name, what a replica's id usually is.
		c.Replica = "5f7d8c9b"
	}
	if c.Bot == "" {
		c.Bot = "bot-1"
	}
	if c.Interval <= 0 {
		c.Interval = 5 * time.Minute
	}
	if c.ForgetAfter <= 0 {
		c.ForgetAfter = 24 * time.Hour
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

func (c *Config) logf(format string, a ...any) { fmt.Fprintf(c.Log, format+"\n", a...) }

// session is one client of the workload: a UUID session id, as the sidecar's
// clients send them, and its W3C traceparent (55 characters).
type session struct {
	ID, Trace string
}

func sessions(seed uint64, n int) []session {
	r := rand.New(rand.NewPCG(seed, 0x5e551))
	b := make([]byte, 16+16+8)
	out := make([]session, n)
	for i := range out {
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		b[6] = b[6]&0x0f | 0x40 // version 4
		b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
		u := hex.EncodeToString(b[:16])
		out[i] = session{
			ID:    u[:8] + "-" + u[8:12] + "-" + u[12:16] + "-" + u[16:20] + "-" + u[20:],
			Trace: "00-" + hex.EncodeToString(b[16:32]) + "-" + hex.EncodeToString(b[32:40]) + "-01",
		}
	}
	return out
}

func (c *Config) event(s session, interval time.Duration, handed bool) redisstate.Event {
	return redisstate.Event{Bot: c.Bot, Mode: redisstate.Mode{Interval: interval}, HandedOver: handed, TraceParent: s.Trace}
}

// parallel runs fn(i) for i in [0, n) on conc goroutines, each taking the
// indexes i ≡ g (mod conc): one session is only ever stated by one
// goroutine, as a replica serialises one session's writes.
func parallel(n, conc int, fn func(i int) error) error {
	var wg sync.WaitGroup
	var first atomic.Value
	for g := range conc {
		wg.Go(func() {
			for i := g; i < n; i += conc {
				if err := fn(i); err != nil {
					first.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, ok := first.Load().(error); ok {
		return err
	}
	return nil
}

// open states one live connection of s on replica; closeAll states none.
func (c *Config) open(ctx context.Context, st *redisstate.State, s session, replica string, interval time.Duration, handed bool) error {
	_, _, err := st.Conns(ctx, s.ID, replica, 1, c.event(s, interval, handed))
	return err
}

func (c *Config) closeAll(ctx context.Context, st *redisstate.State, s session, replica string, interval time.Duration) error {
	_, _, err := st.Conns(ctx, s.ID, replica, 0, c.event(s, interval, false))
	return err
}

// sweep runs the presence engine's sweeper: every shard in turn, Fire with
// limit, again over the shards that returned a full batch, until each has
// returned less than a full one. (The engine sweeps every shard each tick;
// leaving out the drained ones keeps the calls that decide nothing out of
// the per-call figures, which are then those of a call with a batch.) It
// returns the decisions, the time taken and each call's latency.
func sweep(ctx context.Context, st *redisstate.State, limit int) (decided int, took time.Duration, calls []time.Duration, err error) {
	start := time.Now()
	todo := make([]int, redisstate.Shards)
	for n := range todo {
		todo[n] = n
	}
	for len(todo) > 0 {
		var again []int
		for _, n := range todo {
			t0 := time.Now()
			d, err := st.Fire(ctx, n, limit)
			if err != nil {
				return decided, time.Since(start), calls, err
			}
			calls = append(calls, time.Since(t0))
			decided += len(d)
			if len(d) == limit {
				again = append(again, n)
			}
		}
		todo = again
	}
	return decided, time.Since(start), calls, nil
}
