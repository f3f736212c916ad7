package main

import (
	"context"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
)

// TestRunSmall runs the whole measurement at a tiny size: it keeps the
// command working, and checks the listpack model against MEMORY USAGE, on
// which the field-by-field table relies.
func TestRunSmall(t *testing.T) {
	rep, err := Run(context.Background(), Config{Sessions: 640, Duration: 300 * time.Millisecond, Reps: 1, Conc: 16, Rate: 2000})
	if err != nil {
		t.Fatal(err)
	}
	f := rep.Runs[0]
	for _, k := range []string{"mem.live", "mem.conn2", "mem.disc", "mem.absentq", "mu.hash.live", "mu.rset", "mu.due",
		"events.rate", "fire.rate", "fireq.rate", "deliver.rate", "reap.rate", "events.open.p99", "events.srv.usec"} {
		if f[k] <= 0 {
			t.Errorf("figure %s = %v, want > 0", k, f[k])
		}
	}
	if d := rep.Detail; d.Model != d.MU {
		t.Errorf("listpack model of %s: %d B, MEMORY USAGE %d B (fields %s)", d.SampleKey, d.Model, d.MU, d.fieldsLine())
	}
	md := rep.Markdown()
	for _, h := range []string{"## Memory per session", "## Throughput", "## Latency per script"} {
		if !strings.Contains(md, h) {
			t.Errorf("report lacks %q", h)
		}
	}
}

func TestListpackModel(t *testing.T) {
	for s, want := range map[string]int{
		"0": 2, "127": 2, "128": 3, "4095": 3, "300000": 5, "1796195890821": 10,
		"p": 3, "bot-1": 7, "connection": 12, "007": 5, "+1": 4,
		strings.Repeat("x", 55): 57, strings.Repeat("x", 64): 67,
	} {
		if got := lpEntry(s); got != want {
			t.Errorf("lpEntry(%q) = %d, want %d", s, got, want)
		}
	}
	for n, want := range map[int]int{1: 8, 9: 16, 100: 112, 129: 160, 212: 224, 257: 320, 600: 640} {
		if got := jemallocSize(n); got != want {
			t.Errorf("jemallocSize(%d) = %d, want %d", n, got, want)
		}
	}
}

// bench is a redis-server and a State for one benchmark.
type bench struct {
	cfg Config
	srv *server
	st  *redisstate.State
}

func newBench(b *testing.B) *bench {
	b.Helper()
	cfg := Config{}
	cfg.defaults()
	srv, err := startServer("")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Close)
	rc, err := newClient(srv.Addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(rc.Close)
	st := redisstate.New(rc, redisstate.Options{Prefix: cfg.Prefix, ForgetAfter: cfg.ForgetAfter})
	if err := cfg.warm(context.Background(), st); err != nil {
		b.Fatal(err)
	}
	return &bench{cfg: cfg, srv: srv, st: st}
}

// report adds Redis's own time per script call (commandstats), beside the
// client's ns/op and allocs/op.
func (x *bench) report(b *testing.B, cpu0 float64, ops int) {
	b.StopTimer()
	st, err := x.srv.stats(context.Background(), cpu0)
	if err != nil {
		b.Fatal(err)
	}
	if ops > 0 && st.Calls > 0 {
		b.ReportMetric(st.UsecPerCall*float64(st.Calls)/float64(ops), "redis-µs/op")
	}
}

func (x *bench) reset(b *testing.B) float64 {
	cpu0, err := x.srv.resetStats(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return cpu0
}

// benchConns: one op is one connection event, open and close in turn, of
// sessions each goroutine owns (64 goroutines: SetParallelism ×
// GOMAXPROCS; or one, without RunParallel, whose ns/op is the latency).
func benchConns(b *testing.B, goroutines int) {
	x := newBench(b)
	ctx := context.Background()
	ss := sessions(1, 4096)
	event := func(g, i int) error {
		s := ss[(g+(i/2)*64)%len(ss)]
		if i%2 == 0 {
			return x.cfg.open(ctx, x.st, s, x.cfg.Replica, x.cfg.Interval, false)
		}
		return x.cfg.closeAll(ctx, x.st, s, x.cfg.Replica, x.cfg.Interval)
	}
	cpu0 := x.reset(b)
	b.ReportAllocs()
	b.ResetTimer()
	if goroutines == 1 {
		for i := range b.N {
			if err := event(0, i); err != nil {
				b.Fatal(err)
			}
		}
		x.report(b, cpu0, b.N)
		return
	}
	var id atomic.Int64
	b.SetParallelism(max(1, goroutines/runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		g := int(id.Add(1) - 1)
		for i := 0; pb.Next(); i++ {
			if err := event(g, i); err != nil {
				b.Error(err)
				return
			}
		}
	})
	x.report(b, cpu0, b.N)
}

func BenchmarkConns(b *testing.B)       { benchConns(b, 64) }
func BenchmarkConnsSerial(b *testing.B) { benchConns(b, 1) }

func BenchmarkActivity(b *testing.B) {
	x := newBench(b)
	ctx := context.Background()
	ss := sessions(2, 4096)
	var id atomic.Int64
	cpu0 := x.reset(b)
	b.ReportAllocs()
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		g := int(id.Add(1) - 1)
		for i := 0; pb.Next(); i++ {
			s := ss[(g+i*64)%len(ss)]
			if _, err := x.st.Activity(ctx, s.ID, x.cfg.event(s, x.cfg.Interval, false)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	x.report(b, cpu0, b.N)
}

// benchFire: one op is one decision. The b.N sessions are made due outside
// the timer; the sweep over the 64 shards is what is timed.
func benchFire(b *testing.B, handed bool) {
	x := newBench(b)
	ctx := context.Background()
	ss := sessions(3, b.N)
	short := time.Millisecond
	if err := parallel(b.N, 64, func(i int) error {
		if err := x.cfg.open(ctx, x.st, ss[i], x.cfg.Replica, short, handed); err != nil {
			return err
		}
		return x.cfg.closeAll(ctx, x.st, ss[i], x.cfg.Replica, short)
	}); err != nil {
		b.Fatal(err)
	}
	time.Sleep(5 * short)
	cpu0 := x.reset(b)
	b.ReportAllocs()
	b.ResetTimer()
	d, _, _, err := sweep(ctx, x.st, 500)
	if err != nil {
		b.Fatal(err)
	}
	if d != b.N {
		b.Fatalf("%d decisions of %d sessions", d, b.N)
	}
	x.report(b, cpu0, b.N)
}

func BenchmarkFire(b *testing.B)           { benchFire(b, false) }
func BenchmarkFireHandedOver(b *testing.B) { benchFire(b, true) }

// BenchmarkFireEmpty is the idle sweep's cost per shard.
func BenchmarkFireEmpty(b *testing.B) {
	x := newBench(b)
	ctx := context.Background()
	cpu0 := x.reset(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := x.st.Fire(ctx, i%redisstate.Shards, 500); err != nil {
			b.Fatal(err)
		}
	}
	x.report(b, cpu0, b.N)
}
