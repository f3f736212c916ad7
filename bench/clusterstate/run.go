package main

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
)

// Report is every run's figures and the detail of the last one.
type Report struct {
	Config  Config
	Runs    []Figures
	Detail  Detail
	Redis   string // redis-server version
	Started time.Time
}

// Run measures cfg.Reps times, each on a redis-server of its own, so that
// no run inherits another's fragmentation or dictionary sizes.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.defaults()
	rep := &Report{Config: cfg, Started: time.Now()}
	for r := range cfg.Reps {
		cfg.logf("run %d of %d", r+1, cfg.Reps)
		f, det, ver, err := cfg.once(ctx, uint64(r+1))
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", r+1, err)
		}
		rep.Runs = append(rep.Runs, f)
		rep.Detail, rep.Redis = det, ver
	}
	return rep, nil
}

func (c *Config) once(ctx context.Context, seed uint64) (Figures, Detail, string, error) {
	var det Detail
	srv, err := startServer(c.RedisBin)
	if err != nil {
		return nil, det, "", err
	}
	defer srv.Close()
	m, err := srv.info(ctx, "server")
	if err != nil {
		return nil, det, "", err
	}
	ver := m["redis_version"]
	rc, err := newClient(srv.Addr)
	if err != nil {
		return nil, det, "", err
	}
	defer rc.Close()
	st := redisstate.New(rc, redisstate.Options{Prefix: c.Prefix, ForgetAfter: c.ForgetAfter})
	if err := c.warm(ctx, st); err != nil {
		return nil, det, "", fmt.Errorf("warm-up: %w", err)
	}
	ss := sessions(seed, c.Sessions)
	f := Figures{}
	if err := c.memory(ctx, srv, st, ss, f, &det); err != nil {
		return nil, det, "", fmt.Errorf("memory: %w", err)
	}
	if err := c.throughput(ctx, srv, st, ss, f); err != nil {
		return nil, det, "", fmt.Errorf("throughput: %w", err)
	}
	f["gomaxprocs"] = float64(runtime.GOMAXPROCS(0))
	return f, det, ver, nil
}

// warm calls every script once, so that Redis has them all cached (the
// first EVALSHA of each is a NOSCRIPT, then an EVAL) before any baseline of
// memory or any latency is taken.
func (c *Config) warm(ctx context.Context, st *redisstate.State) error {
	s := session{ID: "warm-up", Trace: sessions(0, 1)[0].Trace}
	short := time.Millisecond
	if err := c.open(ctx, st, s, c.Replica, short, true); err != nil {
		return err
	}
	if _, err := st.Activity(ctx, s.ID, c.event(s, short, true)); err != nil {
		return err
	}
	if _, err := st.Handoff(ctx, s.ID, c.Bot, true, s.Trace); err != nil {
		return err
	}
	if err := c.closeAll(ctx, st, s, c.Replica, short); err != nil {
		return err
	}
	time.Sleep(10 * short)
	if _, _, _, err := sweep(ctx, st, 500); err != nil {
		return err
	}
	sh := redisstate.ShardOf(s.ID)
	l, err := st.Claim(ctx, sh, "warm", time.Second, 10)
	if err != nil {
		return err
	}
	if len(l) == 0 {
		return fmt.Errorf("no notification queued for the warm-up session")
	}
	if _, err := st.Ack(ctx, l[0], redisstate.Delivered, l[0].Note, time.Time{}); err != nil {
		return err
	}
	if _, err := st.Reap(ctx, sh, "nobody", time.Now()); err != nil {
		return err
	}
	_, _, err = st.Renew(ctx, c.Replica, time.Second)
	return err
}
