package handoff

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/store"
)

// backlogRig delivers an outbox of one notification per session from st to a
// receiver that answers 200 at once, with the default Concurrency and a
// signing secret. It is shared by TestDeliveryCostDoesNotGrowWithBacklog and
// BenchmarkDeliveryBacklog.
type backlogRig struct {
	st        store.Store
	d         *Deliverer
	delivered chan struct{} // one per delivery, while there is room
	owed      atomic.Int64  // deliveries not yet replaced (refill)
	refilled  chan struct{} // signalled on a delivery
	sessions  atomic.Int64
}

func newBacklogRig(st store.Store) *backlogRig {
	return &backlogRig{st: st, delivered: make(chan struct{}, 1<<16), refilled: make(chan struct{}, 1)}
}

// queue commits k new notifications, in commits of up to 1,000.
func (r *backlogRig) queue(tb testing.TB, k int) {
	tb.Helper()
	for k > 0 {
		batch := min(k, 1000)
		if err := r.st.Commit(nil, nil, r.notes(batch)); err != nil {
			tb.Fatal(err)
		}
		k -= batch
	}
}

// start starts delivering, and produce beside it (nil: nothing). Both stop
// at cleanup, before st is closed by the caller's earlier cleanup.
func (r *backlogRig) start(tb testing.TB, produce func(ctx context.Context, tb testing.TB)) {
	tb.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		w.WriteHeader(http.StatusOK)
	}))
	tb.Cleanup(srv.Close)
	d, err := New(Options{URL: srv.URL, Store: r.st, SigningSecret: testSecret, Observe: r.observe})
	if err != nil {
		tb.Fatal(err)
	}
	r.d = d
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := d.Run(ctx); err != nil {
			tb.Error(err)
		}
	})
	if produce != nil {
		wg.Go(func() { produce(ctx, tb) })
	}
	tb.Cleanup(func() { cancel(); wg.Wait() })
}

// notes returns k new notifications, each of its own session.
func (r *backlogRig) notes(k int) []store.Notification {
	notes := make([]store.Notification, k)
	for i := range notes {
		s := fmt.Sprintf("backlog-%d", r.sessions.Add(1))
		notes[i] = offline(s, "msg_"+s)
	}
	return notes
}

func (r *backlogRig) observe(o Outcome) {
	if o.Result != Delivered {
		return
	}
	r.owed.Add(1)
	select {
	case r.refilled <- struct{}{}:
	default:
	}
	select {
	case r.delivered <- struct{}{}:
	default:
	}
}

// refill keeps the outbox at its depth: it replaces what was delivered, one
// commit and one Wake per batch, as the presence engine commits and wakes.
func (r *backlogRig) refill(ctx context.Context, tb testing.TB) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.refilled:
		}
		if k := int(r.owed.Swap(0)); k > 0 {
			if err := r.st.Commit(nil, nil, r.notes(k)); err != nil {
				tb.Error(err)
				return
			}
			r.d.Wake()
		}
	}
}

// wait waits for k more deliveries.
func (r *backlogRig) wait(tb testing.TB, k int) {
	tb.Helper()
	timeout := time.After(2 * time.Minute)
	for range k {
		select {
		case <-r.delivered:
		case <-timeout:
			tb.Fatalf("fewer than %d deliveries in 2 minutes", k)
		}
	}
}

// readCountingStore counts the notifications the outbox reads hand out: each
// one is a record the store decoded (bbolt) or copied (memory).
type readCountingStore struct {
	store.Store
	notes atomic.Int64
}

func (c *readCountingStore) Pending() ([]store.Notification, error) {
	p, err := c.Store.Pending()
	c.notes.Add(int64(len(p)))
	return p, err
}

func (c *readCountingStore) PendingAfter(seq uint64) ([]store.Notification, error) {
	p, err := c.Store.PendingAfter(seq)
	c.notes.Add(int64(len(p)))
	return p, err
}

// The work of one delivery does not depend on how many notifications wait
// behind it (docs/ARCHITECTURE.md, "Delivery"): with the outbox kept at 100
// and then at 10,000 (each delivery replaced by a new commit and a Wake),
// neither the outbox records read per delivery nor the bytes allocated per
// delivery (the scheduler's work on its view: a pass over the whole view
// allocates as it goes) grow with the depth. Counted, not timed; the rates
// are BenchmarkDeliveryBacklog's.
func TestDeliveryCostDoesNotGrowWithBacklog(t *testing.T) {
	const warmup, measured = 100, 400
	type cost struct{ notesRead, allocBytes float64 }
	measure := func(waiting int) (c cost) {
		// A subtest, so that this rig has stopped before the next one is measured.
		t.Run(fmt.Sprintf("waiting=%d", waiting), func(t *testing.T) {
			st := &readCountingStore{Store: store.NewMemory()}
			r := newBacklogRig(st)
			r.queue(t, waiting)
			r.start(t, r.refill)
			r.wait(t, warmup) // the first read of the whole outbox, connections opened
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			read0 := st.notes.Load()
			r.wait(t, measured)
			runtime.ReadMemStats(&after)
			c = cost{
				notesRead:  float64(st.notes.Load()-read0) / measured,
				allocBytes: float64(after.TotalAlloc-before.TotalAlloc) / measured,
			}
		})
		return c
	}
	small, large := measure(100), measure(10_000)
	t.Logf("per delivery: %.1f notes read, %.0f bytes allocated with 100 waiting; %.1f, %.0f with 10,000",
		small.notesRead, small.allocBytes, large.notesRead, large.allocBytes)
	// A read hands out what was committed since the last one: about one
	// note per delivery here, whatever the depth.
	if large.notesRead > 4 {
		t.Errorf("%.1f outbox records read per delivery with 10,000 waiting, want at most 4 (%.1f with 100)",
			large.notesRead, small.notesRead)
	}
	if large.allocBytes > 2*small.allocBytes {
		t.Errorf("%.0f bytes allocated per delivery with 10,000 waiting, more than twice the %.0f with 100",
			large.allocBytes, small.allocBytes)
	}
}
