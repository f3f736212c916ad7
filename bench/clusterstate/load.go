package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
)

// errDone from an op ends its goroutine's part of the phase: the work it
// had to do is done.
var errDone = errors.New("done")

// op is one kind of call of a phase; g is the goroutine, k its k-th call of
// this kind.
type op struct {
	name string
	fn   func(ctx context.Context, g, k int) error
}

// phase runs ops round-robin on conc goroutines for dur: closed-loop (each
// goroutine calls again as soon as its call returns, so Redis and the
// client run flat out) when rate is 0, else paced at rate calls/s in all.
// It records every call's client-side latency by op, and Redis's own
// figures for the phase, under the figure names "name.…".
func (c *Config) phase(ctx context.Context, srv *server, name string, conc int, dur time.Duration, rate int, ops ...op) (Figures, error) {
	f := Figures{}
	cpu0, err := srv.resetStats(ctx)
	if err != nil {
		return nil, err
	}
	lat := make([][][]time.Duration, conc) // goroutine → op → latencies
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	start := time.Now()
	end := start.Add(dur)
	var period time.Duration
	if rate > 0 {
		period = time.Duration(float64(time.Second) * float64(conc) / float64(rate))
	}
	for g := range conc {
		lat[g] = make([][]time.Duration, len(ops))
		wg.Go(func() {
			// Paced goroutines start spread over one period, not all at once.
			next := start.Add(time.Duration(g) * period / time.Duration(conc))
			for i := 0; ; i++ {
				if period > 0 {
					time.Sleep(time.Until(next))
					next = next.Add(period)
				}
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				o := i % len(ops)
				if err := ops[o].fn(ctx, g, i/len(ops)); errors.Is(err, errDone) {
					return
				} else if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("%s %s: %w", name, ops[o].name, err)
					}
					mu.Unlock()
					return
				}
				lat[g][o] = append(lat[g][o], time.Since(t0))
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	if first != nil {
		return nil, first
	}
	total := 0
	for o := range ops {
		var all []time.Duration
		for g := range conc {
			all = append(all, lat[g][o]...)
		}
		total += len(all)
		latencies(f, name+"."+ops[o].name, all)
	}
	f[name+".rate"] = float64(total) / el.Seconds()
	st, err := srv.stats(ctx, cpu0)
	if err != nil {
		return nil, err
	}
	putServer(f, name, st, el)
	return f, nil
}

// latencies puts p50, p99 and max of d (exact, from the sorted sample) in
// µs.
func latencies(f Figures, name string, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	q := func(p float64) float64 {
		return float64(d[min(len(d)-1, int(p*float64(len(d))))]) / 1e3
	}
	f[name+".p50"], f[name+".p99"], f[name+".max"] = q(0.50), q(0.99), float64(d[len(d)-1])/1e3
	f[name+".n"] = float64(len(d))
}

func putServer(f Figures, name string, st serverStats, el time.Duration) {
	f[name+".srv.usec"] = st.UsecPerCall
	f[name+".srv.p50"], f[name+".srv.p99"], f[name+".srv.p999"] = st.P50, st.P99, st.P3
	f[name+".srv.cpu"] = st.CPU / el.Seconds()
	f[name+".srv.slow"] = float64(st.Slow)
	f[name+".srv.calls"] = float64(st.Calls)
}

// throughput measures the calls a replica makes, each against sessions
// in the state it finds them in production.
func (c *Config) throughput(ctx context.Context, srv *server, st *redisstate.State, ss []session, f Figures) error {
	n, conc := len(ss), c.Conc
	if err := srv.do(ctx, "FLUSHALL", "SYNC").Error(); err != nil {
		return err
	}
	// Every session known and disconnected (deadline 5 min ahead): a
	// connection event is then a reconnect (open) and a disconnect
	// (close), both of which touch the due set, the replica's set and the
	// hash.
	if err := parallel(n, conc, func(i int) error {
		if err := c.open(ctx, st, ss[i], c.Replica, c.Interval, false); err != nil {
			return err
		}
		return c.closeAll(ctx, st, ss[i], c.Replica, c.Interval)
	}); err != nil {
		return err
	}
	// Goroutine g owns sessions g, g+conc, …: one session's events are
	// stated in order, never two at once, as the engine's ledger does.
	mine := func(g, k, conc int) session {
		per := (n - g + conc - 1) / conc
		return ss[g+(k%per)*conc]
	}
	conns := func(conc int) []op {
		return []op{
			{"open", func(ctx context.Context, g, k int) error {
				return c.open(ctx, st, mine(g, k, conc), c.Replica, c.Interval, false)
			}},
			{"close", func(ctx context.Context, g, k int) error {
				return c.closeAll(ctx, st, mine(g, k, conc), c.Replica, c.Interval)
			}},
		}
	}
	type ph struct {
		name string
		conc int
		dur  time.Duration
		rate int
		ops  []op
	}
	activity := func(conc int) []op {
		return []op{{"activity", func(ctx context.Context, g, k int) error {
			s := mine(g, k, conc)
			_, err := st.Activity(ctx, s.ID, c.event(s, c.Interval, false))
			return err
		}}}
	}
	handoff := func(conc int) []op {
		return []op{{"handoff", func(ctx context.Context, g, k int) error {
			// on, then off, of each session in turn: every call changes it
			_, err := st.Handoff(ctx, mine(g, k/2, conc).ID, c.Bot, k%2 == 0, "")
			return err
		}}}
	}
	for _, p := range []ph{
		{"events", conc, c.Duration, 0, conns(conc)},
		{"paced", conc, c.Duration, c.Rate, conns(conc)},
		{"serial", 1, c.Duration / 2, 0, conns(1)},
		{"activity", conc, c.Duration / 2, 0, activity(conc)},
		{"activity1", 1, c.Duration / 3, 0, activity(1)},
		{"handoff", conc, c.Duration / 2, 0, handoff(conc)},
		{"handoff1", 1, c.Duration / 3, 0, handoff(1)},
	} {
		c.logf("throughput: %s (%d goroutines, %v)", p.name, p.conc, p.dur)
		pf, err := c.phase(ctx, srv, p.name, p.conc, p.dur, p.rate, p.ops...)
		if err != nil {
			return err
		}
		for k, v := range pf {
			f[k] = v
		}
	}
	if pf, err := c.phase(ctx, srv, "renew", 1, c.Duration/4, 0, op{"renew", func(ctx context.Context, g, k int) error {
		_, _, err := st.Renew(ctx, c.Replica, 15*time.Second)
		return err
	}}); err != nil {
		return err
	} else {
		for k, v := range pf {
			f[k] = v
		}
	}
	return c.decisions(ctx, srv, st, ss, f)
}

// decisions measures the sweeper (Fire over the 64 shards, as the engine
// runs it: one shard after another; limit 500, and redisstate.FireBatch as the engine does) on n sessions all due at
// once, then the deliverer's Claim and Ack of the /expire notifications it
// queued, then a dead replica's reap.
func (c *Config) decisions(ctx context.Context, srv *server, st *redisstate.State, ss []session, f Figures) error {
	n, conc := len(ss), c.Conc
	short := 5 * time.Millisecond
	for _, v := range []struct {
		name   string
		limit  int
		handed bool // each decision also queues its /expire
	}{{"fire", 500, false}, {"fireq", 500, true}, {"fireqb", redisstate.FireBatch, true}} {
		if err := srv.do(ctx, "FLUSHALL", "SYNC").Error(); err != nil {
			return err
		}
		if err := parallel(n, conc, func(i int) error {
			if err := c.open(ctx, st, ss[i], c.Replica, short, v.handed); err != nil {
				return err
			}
			return c.closeAll(ctx, st, ss[i], c.Replica, short)
		}); err != nil {
			return err
		}
		time.Sleep(2 * short)
		c.logf("decisions: sweeping %d due sessions (limit %d, handed over %v)", n, v.limit, v.handed)
		cpu0, err := srv.resetStats(ctx)
		if err != nil {
			return err
		}
		d, took, calls, err := sweep(ctx, st, v.limit)
		if err != nil {
			return err
		}
		if d != n {
			return fmt.Errorf("%s: %d decisions of %d sessions", v.name, d, n)
		}
		stt, err := srv.stats(ctx, cpu0)
		if err != nil {
			return err
		}
		f[v.name+".rate"] = float64(d) / took.Seconds()
		f[v.name+".batch"] = float64(d) / float64(len(calls))
		// Redis's own time per decision: what bounds decisions/s once the
		// client is not the bottleneck, and what a batch limit multiplies.
		f[v.name+".srv.perdec"] = stt.UsecPerCall * float64(stt.Calls) / float64(d)
		latencies(f, v.name+".call", calls)
		putServer(f, v.name, stt, took)
	}

	// The idle sweep: what every sweeper pays each tick when nothing is due.
	pf, err := c.phase(ctx, srv, "fire0", 1, c.Duration/4, 0, op{"fire", func(ctx context.Context, g, k int) error {
		_, err := st.Fire(ctx, k%redisstate.Shards, 500)
		return err
	}})
	if err != nil {
		return err
	}
	for k, v := range pf {
		f[k] = v
	}

	// The deliverer's cycle, shard by shard: claim up to its free slots
	// (its Concurrency, handoff.DefaultConcurrency = 16), ack each lease as
	// delivered from as many goroutines, claim again. (Claiming everything
	// first does not work: leased heads stay in the ready set until acked,
	// and Claim looks only 4 × limit deep.) Redis's figures are of Claim and
	// Ack together; the client's are apart.
	const deliverers = 16
	c.logf("delivery: claiming and acking %d notifications", n)
	cpu0, err := srv.resetStats(ctx)
	if err != nil {
		return err
	}
	var claims, acks []time.Duration
	var mu sync.Mutex
	delivered := 0
	t0 := time.Now()
	for sh := 0; sh < redisstate.Shards; {
		t := time.Now()
		l, err := st.Claim(ctx, sh, c.Replica, 30*time.Second, deliverers)
		if err != nil {
			return err
		}
		if len(l) == 0 {
			sh++
			continue
		}
		claims = append(claims, time.Since(t))
		errs := make([]error, len(l))
		var wg sync.WaitGroup
		for i := range l {
			wg.Go(func() {
				t := time.Now()
				ok, err := st.Ack(ctx, l[i], redisstate.Delivered, l[i].Note, time.Time{})
				el := time.Since(t)
				if err == nil && !ok {
					err = fmt.Errorf("ack of a live lease refused")
				}
				errs[i] = err
				mu.Lock()
				acks = append(acks, el)
				mu.Unlock()
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		delivered += len(l)
	}
	el := time.Since(t0)
	if delivered != n {
		return fmt.Errorf("delivered %d of %d notifications", delivered, n)
	}
	stt, err := srv.stats(ctx, cpu0)
	if err != nil {
		return err
	}
	f["deliver.rate"] = float64(delivered) / el.Seconds()
	latencies(f, "deliver.claim", claims)
	latencies(f, "deliver.ack", acks)
	putServer(f, "deliver", stt, el)

	// A dead replica: n sessions live on it, reaped shard by shard.
	c.logf("reap: %d sessions of a dead replica", n)
	if err := srv.do(ctx, "FLUSHALL", "SYNC").Error(); err != nil {
		return err
	}
	dead := "d3adbeef"
	if err := parallel(n, conc, func(i int) error { return c.open(ctx, st, ss[i], dead, c.Interval, false) }); err != nil {
		return err
	}
	if cpu0, err = srv.resetStats(ctx); err != nil {
		return err
	}
	var calls []time.Duration
	var reaped int64
	t0 = time.Now()
	for sh := range redisstate.Shards {
		t := time.Now()
		r, err := st.Reap(ctx, sh, dead, time.Now())
		if err != nil {
			return err
		}
		calls = append(calls, time.Since(t))
		reaped += r
	}
	el = time.Since(t0)
	if reaped != int64(n) {
		return fmt.Errorf("reaped %d of %d sessions", reaped, n)
	}
	if stt, err = srv.stats(ctx, cpu0); err != nil {
		return err
	}
	f["reap.rate"] = float64(reaped) / el.Seconds()
	latencies(f, "reap.call", calls)
	putServer(f, "reap", stt, el)
	return nil
}
