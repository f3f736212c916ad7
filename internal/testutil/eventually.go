package testutil

import (
	"testing"
	"time"
)

// Eventually polls cond (a state with no channel to wait on: a counter, a
// file, another process) until it holds, and fails the test naming what it
// waited for once within has passed.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
