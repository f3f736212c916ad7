package presence

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
)

// holdStore holds the first notes-less Commit (a flush) after arm() until
// release, to force a decision to race with a flush.
type holdStore struct {
	*store.Memory
	armed atomic.Bool
	held  chan struct{}
	gate  chan struct{}
}

func (h *holdStore) arm() {
	h.held, h.gate = make(chan struct{}), make(chan struct{})
	h.armed.Store(true)
}

func (h *holdStore) Commit(put []store.Session, forget []string, notes []store.Notification) error {
	if len(notes) == 0 && h.armed.CompareAndSwap(true, false) {
		close(h.held)
		<-h.gate
	}
	return h.Memory.Commit(put, forget, notes)
}

// TestFlushNeverOverwritesADecision: a decision waits for a flush that is
// writing an older copy of the same session, so the store keeps the
// decision's copy.
func TestFlushNeverOverwritesADecision(t *testing.T) {
	hs := &holdStore{Memory: store.NewMemory()}
	r := newRig(t, hs, nil, nil)
	r.handover(1, "s1", "bot")
	r.close(1) // dirty: conns 0, deadline
	hs.arm()
	flushed := make(chan error)
	go func() { flushed <- r.e.Flush() }()
	<-hs.held // the flush has its (present) snapshot and is writing it
	ticked := make(chan struct{})
	go func() {
		r.advance(interval) // decides absent and commits /expire
		close(ticked)
	}()
	select {
	case <-ticked:
		t.Fatal("the decision was committed while an older flush of the same session was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(hs.gate)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	<-ticked
	if s := r.stored("s1"); s.State != store.Absent || !s.ExpireSent || s.Episode != 1 {
		t.Fatalf("the flush's older copy won: %+v", s)
	}
	r.restart(time.Minute)
	r.advance(interval)
	r.wantNotes(store.KindOffline)
}

// TestCommitFailureIsRetriedInOrder: a failed commit keeps the decision in
// memory and its notification unsent; later notifications queue behind it,
// SetHandoff and Flush report the failure, and the next Flush writes them
// all, in order, and wakes the deliverer.
func TestCommitFailureIsRetriedInOrder(t *testing.T) {
	fs := &flakyStore{Memory: store.NewMemory()}
	r := newRig(t, fs, nil, nil)
	r.handover(1, "s1", "bot")
	r.close(1)
	fs.fail.Store(true)
	r.advance(interval)
	if v := r.view("s1"); v.State != store.Absent || !v.ExpireSent {
		t.Fatalf("decision not kept in memory: %+v", v)
	}
	if st := r.e.Stats(); st.UnsentNotifications != 1 || st.CommitErrors == 0 {
		t.Fatalf("stats %+v", st)
	}
	if err := r.e.SetHandoff("s2", "", true); err == nil {
		t.Fatal("SetHandoff hid a store failure")
	}
	r.advance(time.Minute)
	r.open(2, "s1", "bot") // the return queues behind the unsent /expire
	if err := r.e.Flush(); err == nil {
		t.Fatal("flush hid a store failure")
	}
	r.wantNotes()
	fs.fail.Store(false)
	wakes := r.wakes.Load()
	if err := r.e.Flush(); err != nil {
		t.Fatal(err)
	}
	p := r.wantNotes(store.KindOffline, store.KindOnline)
	checkOutbox(t, p)
	if r.wakes.Load() == wakes {
		t.Fatal("deliverer not woken after the retry")
	}
	if st := r.e.Stats(); st.UnsentNotifications != 0 {
		t.Fatalf("stats %+v", st)
	}
	if s := r.stored("s2"); !s.HandedOver {
		t.Fatalf("hand-over kept in memory was not written by the flush: %+v", s)
	}
}

// refusingStore refuses, as every store refuses an id it cannot key, any
// Commit that holds the session named poison.
type refusingStore struct {
	*store.Memory
	poison string
}

func (r *refusingStore) Commit(put []store.Session, forget []string, notes []store.Notification) error {
	for _, s := range put {
		if s.ID == r.poison {
			return &store.RejectedError{SessionIDs: []string{s.ID}, Reason: "poisoned"}
		}
	}
	for _, n := range notes {
		if n.SessionID == r.poison {
			return &store.RejectedError{SessionIDs: []string{n.SessionID}, Reason: "poisoned"}
		}
	}
	return r.Memory.Commit(put, forget, notes)
}

// A session the store refuses fails only its own write: the 2,000 sessions
// decided in the same ticks (and so in the same commits) all get their
// /expire, and their state is stored for a restart.
func TestRefusedSessionFailsNoOtherDecision(t *testing.T) {
	st := &refusingStore{Memory: store.NewMemory(), poison: "s-poison"}
	r := newRig(t, st, nil, nil)
	const n = 2000
	ids := []string{"s-poison"}
	for i := range n {
		ids = append(ids, fmt.Sprintf("s-%04d", i))
	}
	for i, id := range ids {
		r.handover(event.ConnID(i+1), id, "b")
	}
	if err := r.e.Flush(); err != nil {
		t.Fatalf("Flush with a refused session: %v", err)
	}
	for i := range ids {
		r.close(event.ConnID(i + 1))
	}
	r.advance(interval + time.Second)
	if got := len(r.notes()); got != n {
		t.Fatalf("outbox has %d /expire, want %d (one per session but the refused one)", got, n)
	}
	if err := r.e.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	for _, id := range ids[1:] {
		if s := r.stored(id); s.State != store.Absent || !s.ExpireSent {
			t.Fatalf("session %s stored as %+v, want absent with its /expire sent", id, s)
		}
	}
	if r.e.Stats().CommitErrors == 0 {
		t.Error("the refusal was not counted as a store error")
	}
}

// An id longer than store.MaxIDBytes (here 40 KB in a query, which bbolt
// cannot key) is not tracked: its traffic is the proxy's business only, and
// the sessions written with it in the real file store lose nothing.
func TestOverlongIDIsNotTracked(t *testing.T) {
	st, err := store.OpenBolt(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := newRig(t, st, nil, nil)
	long := strings.Repeat("x", 40<<10)
	r.open(1, long, "b")
	r.e.HTTPRequest(event.Request{Who: event.Identity{SessionID: long}})
	r.handover(2, "s-ok", strings.Repeat("b", store.MaxIDBytes+1))
	r.e.ConnIdentified(2, event.Identity{BotID: strings.Repeat("b", 40<<10)})
	if _, ok := r.e.Session(long); ok {
		t.Fatal("a 40 KB session id is tracked")
	}
	if v := r.view("s-ok"); v.BotID != "" {
		t.Fatalf("an over-long bot id was kept: %d bytes", len(v.BotID))
	}
	if got := r.e.Stats().IDsRefused; got != 4 {
		t.Fatalf("IDsRefused = %d, want 4", got)
	}
	if err := r.e.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	r.close(1)
	r.close(2)
	r.advance(interval + time.Second)
	r.wantNotes(store.KindOffline)
	if err := r.e.SetHandoff(long, "", true); !errors.Is(err, ErrIDTooLong) {
		t.Fatalf("SetHandoff with a 40 KB id = %v, want ErrIDTooLong", err)
	}
	if _, err := r.e.PutBotSettings(long, store.BotSettings{Mode: "activity"}); !errors.Is(err, ErrIDTooLong) {
		t.Fatalf("PutBotSettings with a 40 KB bot id = %v, want ErrIDTooLong", err)
	}
}

// commitIsolating finds a refused item in a few commits, commits every
// other item, and stops at once when the store fails as a whole.
func TestCommitIsolating(t *testing.T) {
	committed := map[int]bool{}
	calls := 0
	var refused []int
	err := commitIsolating(1000, func(lo, hi int) error {
		calls++
		if lo <= 617 && 617 < hi {
			return &store.RejectedError{SessionIDs: []string{"617"}}
		}
		for i := lo; i < hi; i++ {
			committed[i] = true
		}
		return nil
	}, func(i int, err error) { refused = append(refused, i) })
	if err != nil || len(committed) != 999 || committed[617] || !slices.Equal(refused, []int{617}) {
		t.Fatalf("err %v, %d committed, refused %v", err, len(committed), refused)
	}
	if calls > 1+2*10 {
		t.Errorf("%d commits to isolate one refused item among 1000", calls)
	}
	calls = 0
	err = commitIsolating(1000, func(lo, hi int) error { calls++; return errors.New("disk full") }, func(int, error) { t.Error("refused called") })
	if err == nil || calls != 1 {
		t.Fatalf("a store-wide failure: err %v after %d commits, want the error after 1", err, calls)
	}
}
