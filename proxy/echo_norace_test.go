//go:build !race

// Allocation counts: the race detector adds its own, so this is built
// without it (scripts/test.sh runs it in a second, plain pass).

package proxy

import "testing"

// TestRelayNoAllocs pins the hot path: a message relayed each way through
// a real proxy allocates nothing. AllocsPerRun counts the whole process, so
// a rare allocation elsewhere (a runtime timer, the test's own goroutines
// being scheduled) is allowed for, but not one per message.
func TestRelayNoAllocs(t *testing.T) {
	for _, size := range []int{128, 4096} {
		r := newEchoRig(t, size)
		if allocs := testing.AllocsPerRun(2000, func() { r.roundTrip(t) }); allocs > 0.01 {
			t.Errorf("%d-byte echo: %.3f allocations per round trip, want 0", size, allocs)
		}
	}
}
