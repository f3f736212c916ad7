package handoff

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil/redistest"
	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
)

// BenchmarkClusterBurst is the rate at which cluster mode's deliverers drain
// a burst: burstSize /expire notifications, one per session, queued at once
// across the shards (as when a crowd of sessions goes away together), with a
// real redis-server and a local receiver that answers 204 at once, the
// default Concurrency and a signing secret. "two" runs two deliverers that
// share the shards as replicas do (ShareShards: each owns half). Run it with
//
//	go test -run '^$' -bench ClusterBurst -benchtime 3x ./handoff
//
// Each iteration queues a fresh burst with the timer stopped, then times
// from the deliverers' start until the receiver has every notification.
func BenchmarkClusterBurst(b *testing.B) {
	const burstSize = 2000
	for _, replicas := range []int{1, 2} {
		b.Run(fmt.Sprintf("deliverers=%d", replicas), func(b *testing.B) {
			srv := redistest.Start(b)
			st := newClusterState(b, []string{srv.Addr})
			var got atomic.Int64
			all := make(chan struct{}, 1)
			var want atomic.Int64
			rx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if got.Add(1) == want.Load() {
					all <- struct{}{}
				}
				w.WriteHeader(http.StatusNoContent)
			}))
			b.Cleanup(rx.Close)
			var elapsed time.Duration
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				got.Store(0)
				want.Store(burstSize)
				queueBurst(b, st, sessionIDs(fmt.Sprintf("burst%d", i), burstSize))
				ctx, cancel := context.WithCancel(context.Background())
				var wg sync.WaitGroup
				cs := make([]*ClusterDeliverer, replicas)
				for r := range cs {
					o := Options{URL: rx.URL, SigningSecret: testSecret}
					c, err := NewCluster(o, st, fmt.Sprintf("replica-%d", r), 0)
					if err != nil {
						b.Fatal(err)
					}
					if replicas > 1 {
						c.ShareShards(func(shard int) bool { return shard%replicas == r })
					}
					cs[r] = c
				}
				b.StartTimer()
				start := time.Now()
				for _, c := range cs {
					wg.Go(func() { _ = c.Run(ctx) })
				}
				select {
				case <-all:
				case <-time.After(60 * time.Second):
					b.Fatalf("after 60 s the receiver had %d of %d", got.Load(), burstSize)
				}
				elapsed += time.Since(start)
				b.StopTimer()
				cancel()
				wg.Wait()
				b.StartTimer()
			}
			b.ReportMetric(float64(b.N*burstSize)/elapsed.Seconds(), "webhooks/s")
			b.ReportMetric(elapsed.Seconds()*1000/float64(b.N), "ms/burst")
		})
	}
}

// queueBurst queues one /expire for each of sids: each session connects,
// goes away, and its absence is decided (Fire) once the interval elapsed.
// The calls run 32 at once, as presence/cluster's writer makes them.
func queueBurst(tb testing.TB, st *redisstate.State, sids []string) {
	tb.Helper()
	ctx := context.Background()
	ev := redisstate.Event{Bot: "bot-1", Mode: redisstate.Mode{Interval: clusterInterval}, HandedOver: true}
	work := make(chan string)
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 32 {
		wg.Go(func() {
			for sid := range work {
				for _, n := range []int{1, 0} {
					if _, _, err := st.Conns(ctx, sid, "A", n, ev); err != nil {
						failed.Store(err)
					}
				}
			}
		})
	}
	for _, sid := range sids {
		work <- sid
	}
	close(work)
	wg.Wait()
	if err := failed.Load(); err != nil {
		tb.Fatal(err)
	}
	time.Sleep(clusterInterval)
	decided := 0
	deadline := time.Now().Add(10 * time.Second)
	for decided < len(sids) {
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d absences decided", decided, len(sids))
		}
		for n := range redisstate.Shards {
			d, err := st.Fire(ctx, n, 100)
			if err != nil {
				tb.Fatal(err)
			}
			decided += len(d)
		}
	}
}
