package presence

import (
	"sync/atomic"
	"testing"
	"time"

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
