//go:build !race

// Memory and allocation figures: the race detector distorts them, so
// these tests are built without it (scripts/test.sh runs them in a second,
// plain pass).

package presence

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
)

// TestMemoryPerSession reports the engine's memory per tracked session.
func TestMemoryPerSession(t *testing.T) {
	const n = 100_000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%08x-4b1d-4c2e-9f3a-%012x", i, i) // UUID-sized ids
	}
	measure := func(name string, fill func(e *Engine)) float64 {
		e, err := New(Options{
			Defaults: Settings{Enabled: true, CheckInterval: interval},
			Store:    nopStore{store.NewMemory()}, Clock: newClock(),
		})
		if err != nil {
			t.Fatal(err)
		}
		before := heapAlloc()
		fill(e)
		if err := e.Flush(); err != nil { // empties the dirty lists
			t.Fatal(err)
		}
		after := heapAlloc()
		if got := e.Stats().Sessions; got != n {
			t.Fatalf("%d sessions", got)
		}
		runtime.KeepAlive(e)
		per := float64(after-before) / n
		t.Logf("%s: %.0f bytes per tracked session (ids of %d bytes included)", name, per, len(ids[0]))
		return per
	}
	idle := measure("absent-pending session, no connection", func(e *Engine) {
		for _, id := range ids {
			e.HTTPRequest(event.Request{Who: event.Identity{SessionID: id, BotID: "bot"}})
		}
	})
	conn := measure("session with one live connection", func(e *Engine) {
		for i, id := range ids {
			e.ConnOpened(event.ConnID(i+1), event.Open{Who: event.Identity{SessionID: id, BotID: "bot"}})
		}
	})
	if idle > 400 || conn > 500 {
		t.Fatalf("too much memory per session: %.0f / %.0f bytes", idle, conn)
	}
}

// TestEngineNoAllocs pins the per-message path: a message on an open
// connection, in either mode and either direction, allocates nothing
// (bench_test.go has the figures).
func TestEngineNoAllocs(t *testing.T) {
	for _, bm := range benchMessages {
		r := benchRig(t, bm.mode)
		m := event.Message{Text: true, Size: int64(len(bm.msg)), Prefix: bm.msg}
		if allocs := testing.AllocsPerRun(1000, func() { r.e.Message(1, bm.dir, m) }); allocs != 0 {
			t.Errorf("%s: %v allocations per message, want 0", bm.name, allocs)
		}
	}
}
