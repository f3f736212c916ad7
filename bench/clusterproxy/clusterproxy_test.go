package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/bench/harness"
)

func TestMain(m *testing.M) {
	harness.MaybeRunChild() // the echo upstream is the test binary re-executed
	os.Exit(m.Run())
}

// TestTinyRun runs the whole measurement at a tiny size (a 3 s outage, 40
// held sessions, 20 connects/s, a 3 s lease and a 1 s interval), so that the command
// cannot rot: it builds the sidecar, takes Redis down and back, and must
// see no proxy error and no false /expire.
func TestTinyRun(t *testing.T) {
	if _, err := redisBinary(""); err != nil {
		t.Fatalf("%v (./scripts/test.sh installs redis-server)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var log strings.Builder
	rep, err := Run(ctx, Config{
		Outage: 3 * time.Second, Baseline: 2 * time.Second, Warmup: 500 * time.Millisecond, Margin: time.Second,
		Drain: 20 * time.Second, Held: 40, Rate: 20, Reps: 1, Lease: 3 * time.Second, Interval: time.Second, Log: &log,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	md := rep.Markdown()
	t.Log("\n" + md)
	for _, f := range rep.Failures() {
		t.Error(f)
	}
	f := rep.Runs[0]
	for _, ph := range phases {
		if f["n."+ph] == 0 || f["p99."+ph] <= 0 {
			t.Errorf("phase %s: %v connects, p99 %v ms", ph, f["n."+ph], f["p99."+ph])
		}
	}
	if f["expire.short"] == 0 {
		t.Errorf("no /expire for the short-lived sessions: the receiver or the sidecars' delivery is not wired")
	}
	for _, h := range []string{"## Connect latency by phase", "## Against the goal", "| Redis down |"} {
		if !strings.Contains(md, h) {
			t.Errorf("report lacks %q", h)
		}
	}
}
