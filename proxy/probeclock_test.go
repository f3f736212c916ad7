package proxy

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// TestProbeClockKeepsDeadlinesInOrder schedules, moves and retires many
// connections' deadlines on one clock and checks after each step that the
// heap is ordered, every slot names its entry, the timer points at the
// earliest deadline, and a retired connection never comes back.
func TestProbeClockKeepsDeadlinesInOrder(t *testing.T) {
	k := newProbeClock()
	defer k.timer.Stop()
	base := monoNow() + int64(time.Hour) // never due during the test
	conns := make([]*wsConn, 500)
	for i := range conns {
		conns[i] = &wsConn{id: event.ConnID(i)}
		conns[i].probe.slot = slotNone
	}
	want := map[*wsConn]int64{}
	check := func(step string) {
		t.Helper()
		k.mu.Lock()
		defer k.mu.Unlock()
		if len(k.heap) != len(want) {
			t.Fatalf("%s: %d deadlines in the heap, want %d", step, len(k.heap), len(want))
		}
		for i, e := range k.heap {
			if e.c.probe.slot != int32(i) {
				t.Fatalf("%s: entry %d says slot %d", step, i, e.c.probe.slot)
			}
			if e.due != want[e.c] {
				t.Fatalf("%s: conn %d due %d, want %d", step, e.c.id, e.due, want[e.c])
			}
			if i > 0 && k.heap[(i-1)/2].due > e.due {
				t.Fatalf("%s: heap order broken at %d", step, i)
			}
		}
		if len(k.heap) > 0 && k.armedAt > k.heap[0].due {
			t.Fatalf("%s: timer armed for %d, after the earliest deadline %d", step, k.armedAt, k.heap[0].due)
		}
	}

	for _, c := range conns {
		due := base + rand.Int64N(int64(time.Minute))
		k.schedule(c, due)
		want[c] = due
	}
	check("scheduled")
	for range 2000 { // re-arms, earlier and later, as Pongs and Pings do
		c := conns[rand.IntN(len(conns))]
		if c.probe.slot == slotRetired {
			continue
		}
		due := base + rand.Int64N(int64(time.Minute))
		k.schedule(c, due)
		want[c] = due
	}
	check("moved")
	for _, c := range conns[:200] {
		k.retire(c)
		delete(want, c)
		k.schedule(c, base) // a fire that raced the close
	}
	check("retired")

	// What fire would take, in order: the remaining deadlines, earliest first.
	var got, order []int64
	for _, d := range want {
		order = append(order, d)
	}
	slices.Sort(order)
	k.mu.Lock()
	for len(k.heap) > 0 {
		got = append(got, k.heap[0].due)
		k.removeAt(0)
	}
	k.mu.Unlock()
	if !slices.Equal(got, order) {
		t.Fatalf("deadlines came out of order")
	}
	if cap(k.heap) > 64 {
		t.Errorf("an empty heap keeps capacity %d", cap(k.heap))
	}
}
