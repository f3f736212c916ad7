package handoff

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
	"github.com/presence-sidecar/presence-sidecar/store"
)

func TestPerSessionOrderWithStuckSession(t *testing.T) {
	var unblock atomic.Bool
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		if strings.HasPrefix(got.ID(), "A") && !unblock.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	st := store.NewMemory()
	obs := &outcomes{}
	d := run(t, baseOptions(st, p.URL, obs))
	commit(t, st, d, offline("A", "A1"), offline("B", "B1"), online("A", "A2"), online("B", "B2"), offline("A", "A3"), offline("B", "B3"))
	testutil.Eventually(t, 10*time.Second, "session B delivered", func() bool { return obs.count(Delivered) == 3 })
	testutil.Eventually(t, 10*time.Second, "A1 retried", func() bool { return obs.count(Retry) >= 3 })

	sent := func(prefix string) []string {
		var ids []string
		for _, r := range p.requests() {
			if strings.HasPrefix(r.ID(), prefix) {
				ids = append(ids, r.ID())
			}
		}
		return ids
	}
	if got := sent("B"); !slices.Equal(got, []string{"B1", "B2", "B3"}) {
		t.Errorf("session B sent %v", got)
	}
	for _, id := range sent("A") {
		if id != "A1" {
			t.Fatalf("%s sent while A1 was still failing: %v", id, sent("A"))
		}
	}

	unblock.Store(true)
	testutil.Eventually(t, 10*time.Second, "session A delivered", func() bool { return obs.count(Delivered) == 6 })
	var okA []string
	for _, x := range obs.list() {
		if x.Result == Delivered && x.SessionID == "A" {
			okA = append(okA, x.ID)
		}
	}
	if !slices.Equal(okA, []string{"A1", "A2", "A3"}) {
		t.Errorf("session A delivered in order %v", okA)
	}
}

func TestRestartDeliversPending(t *testing.T) {
	// First life: the platform is slow and failing; stop while an attempt is in flight.
	inHandler := make(chan struct{}, 10)
	p1 := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		inHandler <- struct{}{}
		time.Sleep(200 * time.Millisecond)
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	st := store.NewMemory()
	commit(t, st, nil, offline("s", "msg_restart"), online("s", "msg_restart2"))

	d1, err := New(baseOptions(st, p1.URL, nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- d1.Run(ctx) }()
	<-inHandler
	cancel()
	start := time.Now()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return")
	}
	// Run waited for the attempt in flight, and its outcome is in the store.
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Errorf("Run returned after %s, before the attempt in flight finished", waited)
	}
	pend := pending(t, st)
	if len(pend) != 2 || pend[0].Attempts != 1 || pend[0].LastStatus != 503 || pend[1].Attempts != 0 {
		t.Fatalf("pending after first life %+v", pend)
	}
	if p1.count() != 1 {
		t.Errorf("first life made %d attempts", p1.count())
	}

	// Second life: a new Deliverer on the same store sends both, same ids, in order.
	p2 := newPlatform(t, nil)
	obs := &outcomes{}
	run(t, baseOptions(st, p2.URL, obs))
	testutil.Eventually(t, 10*time.Second, "delivery after restart", func() bool { return obs.count(Delivered) == 2 })
	reqs := p2.requests()
	if len(reqs) != 2 || reqs[0].ID() != "msg_restart" || reqs[1].ID() != "msg_restart2" {
		t.Errorf("after restart sent %v", reqs)
	}
	if x := obs.list()[0]; x.Attempts != 2 {
		t.Errorf("attempt count not carried over: %+v", x)
	}
}

// gatedStore counts outbox reads (whole or incremental) and can hold them.
type gatedStore struct {
	store.Store
	reads atomic.Int32
	gate  chan struct{}
}

func (g *gatedStore) Pending() ([]store.Notification, error) {
	g.reads.Add(1)
	if g.gate != nil {
		<-g.gate
	}
	return g.Store.Pending()
}

func (g *gatedStore) PendingAfter(seq uint64) ([]store.Notification, error) {
	g.reads.Add(1)
	if g.gate != nil {
		<-g.gate
	}
	return g.Store.PendingAfter(seq)
}

func TestWakeCoalesces(t *testing.T) {
	p := newPlatform(t, nil)
	mem := store.NewMemory()
	gs := &gatedStore{Store: mem, gate: make(chan struct{})}
	d := run(t, baseOptions(gs, p.URL, nil))
	testutil.Eventually(t, 10*time.Second, "first read", func() bool { return gs.reads.Load() == 1 })

	// While Run is busy reading, a thousand wakes from many goroutines neither
	// block nor queue up.
	commit(t, mem, nil, offline("s", "msg_w"))
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for range 100 {
				d.Wake()
			}
		})
	}
	wg.Wait()
	close(gs.gate)
	testutil.Eventually(t, 10*time.Second, "delivery", func() bool { return p.count() == 1 })
	time.Sleep(3 * wakeReadGap)
	if n := gs.reads.Load(); n > 2 {
		t.Errorf("%d outbox reads for 1000 wakes during one read, want at most 2", n)
	}
	// Wake never blocks, even with nobody running.
	d2, _ := New(baseOptions(mem, p.URL, nil))
	for range 100 {
		d2.Wake()
	}
}

func TestConcurrencyOrderAndLimit(t *testing.T) {
	const (
		sessions = 40
		perSess  = 5
		conc     = 4
	)
	var (
		cur, peak atomic.Int32
		mu        sync.Mutex
		busy      = map[string]bool{}
		ok        = map[string][]string{} // session -> delivered ids in arrival order
		violation atomic.Value
	)
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		c := cur.Add(1)
		defer cur.Add(-1)
		for {
			pk := peak.Load()
			if c <= pk || peak.CompareAndSwap(pk, c) {
				break
			}
		}
		var m map[string]any
		_ = json.Unmarshal(got.Body, &m)
		sess, _ := m["sessionId"].(string)
		mu.Lock()
		if busy[sess] {
			violation.Store("two requests of " + sess + " at once")
		}
		busy[sess] = true
		mu.Unlock()
		time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
		fail := rand.IntN(10) == 0
		mu.Lock()
		busy[sess] = false
		if !fail {
			ok[sess] = append(ok[sess], got.ID())
		}
		mu.Unlock()
		if fail {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	st := store.NewMemory()
	obs := &outcomes{}
	o := baseOptions(st, p.URL, obs)
	o.Concurrency, o.FirstRetry, o.RetryMaxDelay = conc, 5*time.Millisecond, 20*time.Millisecond
	d := run(t, o)

	// Several producers commit and wake at once; each session's notes are
	// committed in order by one producer.
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for k := range perSess {
				for s := g; s < sessions; s += 4 {
					sess := fmt.Sprintf("s%02d", s)
					commit(t, st, d, offline(sess, fmt.Sprintf("%s-%d", sess, k)))
					_ = d.Depth()
				}
			}
		})
	}
	wg.Wait()
	testutil.Eventually(t, 10*time.Second, "all delivered", func() bool { return obs.count(Delivered) == sessions*perSess })
	if v := violation.Load(); v != nil {
		t.Error(v)
	}
	if pk := peak.Load(); pk > conc {
		t.Errorf("%d requests at once, Concurrency %d", pk, conc)
	}
	lost := map[string]bool{} // ids whose 2xx the deliverer did not see (timeout): a repeat is allowed
	for _, x := range obs.list() {
		if x.Result == Retry && x.Status == 0 {
			lost[x.ID] = true
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for s := range sessions {
		sess := fmt.Sprintf("s%02d", s)
		var want []string
		for k := range perSess {
			want = append(want, fmt.Sprintf("%s-%d", sess, k))
		}
		got := slices.CompactFunc(ok[sess], func(a, b string) bool { return a == b && lost[a] })
		if !slices.Equal(got, want) {
			t.Errorf("session %s delivered %v, want %v", sess, ok[sess], want)
			for _, x := range obs.list() {
				if x.SessionID == sess {
					t.Logf("%+v", x)
				}
			}
		}
	}
	if len(pending(t, st)) != 0 {
		t.Errorf("outbox not empty after delivering everything")
	}
	testutil.Eventually(t, 10*time.Second, "depth 0", func() bool { return d.Depth() == 0 })
}

func TestDeadPlatformNoSpin(t *testing.T) {
	const sessions, conc = 300, 8
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	gs := &gatedStore{Store: store.NewMemory()}
	var notes []store.Notification
	for i := range sessions {
		notes = append(notes, offline(fmt.Sprint("s", i), fmt.Sprint("msg_", i)))
	}
	commit(t, gs, nil, notes...)
	baseGoroutines := runtime.NumGoroutine()
	o := baseOptions(gs, p.URL, nil)
	o.Concurrency, o.FirstRetry, o.RetryMaxDelay = conc, 50*time.Millisecond, 100*time.Millisecond
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx) }()
	start := time.Now()
	peakG := 0
	for time.Since(start) < 700*time.Millisecond {
		peakG = max(peakG, runtime.NumGoroutine())
		d.Wake() // a steady stream of commits elsewhere
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-errc; err != nil { // every attempt started has now reached the platform
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	reads := int(gs.reads.Load())
	reqs := p.requests()
	perSession := map[string]int{}
	for _, r := range reqs {
		perSession[r.ID()]++
	}
	most := 0
	for _, n := range perSession {
		most = max(most, n)
	}
	t.Logf("%s: %d requests, at most %d for one note, %d outbox reads, peak %d goroutines (base %d)",
		elapsed, len(reqs), most, reads, peakG, baseGoroutines)
	// Oldest waiting first: no note is retried while another was never tried.
	if want := min(sessions, len(reqs)); len(perSession) != want {
		t.Errorf("%d distinct notes in %d requests, want %d", len(perSession), len(reqs), want)
	}
	// Backoff floor: 40ms, then 80ms steps (FirstRetry 50ms, cap 100ms, -20% jitter).
	if limit := 2 + int(elapsed/(80*time.Millisecond)); most > limit {
		t.Errorf("a note was attempted %d times in %s, backoff allows %d", most, elapsed, limit)
	}
	if limit := 2 + int(elapsed/wakeReadGap); reads > limit {
		t.Errorf("%d outbox reads in %s, want at most %d", reads, elapsed, limit)
	}
	// Attempts run on at most Concurrency goroutines, plus the HTTP machinery
	// (client and server connection goroutines) for those attempts.
	if peakG > baseGoroutines+6*conc+10 {
		t.Errorf("peak %d goroutines, base %d, Concurrency %d", peakG, baseGoroutines, conc)
	}
}
