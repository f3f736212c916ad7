//go:build unix

package handoff

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/store"
)

// BenchmarkDeliveryBacklog is the delivery rate of b.N notifications while
// `waiting` more, queued after them, wait behind: a bbolt store with real
// fsync, one session per notification, a receiver that answers 200 at once,
// the default Concurrency and a signing secret, and a new notification
// committed (with a Wake) every 10 ms meanwhile, as the presence engine does.
// The rate must not fall as the backlog grows (docs/ARCHITECTURE.md,
// "Delivery"). Run it with
//
//	go test -run '^$' -bench Backlog ./handoff
//
// The measured notifications are queued first, and so are delivered first
// (oldest first): the rate is one of draining a backlog, never limited by
// how soon new notifications are read. cpu-µs/webhook is the process's CPU
// (deliverer, store, the in-process receiver, the producer) per webhook.
func BenchmarkDeliveryBacklog(b *testing.B) {
	const warmup = 500 // the first read of the whole outbox, connections opened
	for _, waiting := range []int{100, 50_000} {
		b.Run(fmt.Sprintf("waiting=%d", waiting), func(b *testing.B) {
			st, err := store.OpenBolt(b.TempDir(), zap.NewNop())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = st.Close() })
			r := newBacklogRig(st)
			r.queue(b, warmup+b.N)
			r.queue(b, waiting)
			r.start(b, r.trickle)
			r.wait(b, warmup)
			for len(r.delivered) > 0 { // a few of the measured ones may be in already
				<-r.delivered
			}
			b.ResetTimer()
			cpu0, start := processCPU(b), time.Now()
			r.wait(b, b.N)
			elapsed, cpu := time.Since(start), processCPU(b)-cpu0
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "webhooks/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/webhook")
		})
	}
}

// trickle commits a new notification every 10 ms and wakes the deliverer.
func (r *backlogRig) trickle(ctx context.Context, tb testing.TB) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := r.st.Commit(nil, nil, r.notes(1)); err != nil {
			tb.Error(err)
			return
		}
		r.d.Wake()
	}
}

// processCPU is the user and system CPU this process has used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
