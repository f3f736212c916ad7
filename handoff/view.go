package handoff

import (
	"container/heap"
	"slices"
	"time"

	"github.com/presence-sidecar/presence-sidecar/store"
)

// outboxView is Run's copy of the outbox, arranged so that one delivery costs
// the same however many notifications wait behind it (docs/ARCHITECTURE.md,
// "Delivery"): notifications are grouped by session in Seq order, and only a
// session's head is ever scheduled, from one of two heaps. A report, a
// dispatch or a newly read notification touches one session and a heap path
// (O(log n)), never the whole outbox.
//
// Each session with notifications and no attempt in flight is in exactly one
// heap; a session in flight is in none until its report is applied, so its
// head does not change while a heap holds it.
type outboxView struct {
	sessions map[string]*sessionQueue
	later    queueHeap // heads not yet due, earliest due first
	due      queueHeap // heads due, waiting longest first
	count    int       // notifications in the view
	lastSeq  uint64    // the highest Seq read: incremental reads continue after it
}

// sessionQueue is one session's notifications in the view.
type sessionQueue struct {
	id    string
	notes []store.Notification // Seq order; notes[0] is the head
	in    *queueHeap           // the heap that holds it; nil: none
	idx   int                  // its position in that heap
	due   time.Time            // when the head may be attempted: NextAttemptAt, or a later hold
	since time.Time            // waitingSince(head): the order among due heads
}

func newOutboxView() outboxView {
	return outboxView{sessions: map[string]*sessionQueue{}, later: queueHeap{byDue: true}}
}

// reset replaces the view by p, a read of the whole outbox in Seq order;
// heads due by limit go straight to the due heap. Sessions in flight are
// left out of the heaps until their report.
func (v *outboxView) reset(p []store.Notification, inflight map[string]struct{}, hold map[string]time.Time, limit time.Time) {
	*v = outboxView{sessions: make(map[string]*sessionQueue, len(p)), later: queueHeap{byDue: true}, lastSeq: v.lastSeq}
	for _, n := range p {
		v.append(n)
	}
	for id, q := range v.sessions {
		if _, busy := inflight[id]; !busy {
			q.setKeys(hold)
			h := &v.later
			if !q.due.After(limit) {
				h = &v.due
			}
			q.in, q.idx = h, len(h.qs)
			h.qs = append(h.qs, q)
		}
	}
	heap.Init(&v.later)
	heap.Init(&v.due)
}

// add folds in p, what an incremental read returned (Seqs above lastSeq, in
// order): it only ever lengthens queues, so a session's head changes only
// when it had none.
func (v *outboxView) add(p []store.Notification, inflight map[string]struct{}, hold map[string]time.Time) {
	for _, n := range p {
		if n.Seq <= v.lastSeq {
			continue // already in the view
		}
		q := v.append(n)
		if _, busy := inflight[q.id]; len(q.notes) == 1 && !busy {
			v.place(q, hold)
		}
	}
}

// append puts n at the end of its session's queue.
func (v *outboxView) append(n store.Notification) *sessionQueue {
	q := v.sessions[n.SessionID]
	if q == nil {
		q = &sessionQueue{id: n.SessionID}
		v.sessions[n.SessionID] = q
	}
	q.notes = append(q.notes, n)
	v.count++
	v.lastSeq = max(v.lastSeq, n.Seq)
	return q
}

// record folds in what an attempt wrote for n: removed from the outbox, or
// its new delivery state. It reports whether the session still has
// notifications in the view.
func (v *outboxView) record(q *sessionQueue, n store.Notification, removed bool) bool {
	i := slices.IndexFunc(q.notes, func(m store.Notification) bool { return m.Seq == n.Seq && m.ID == n.ID })
	if i < 0 {
		i = slices.IndexFunc(q.notes, func(m store.Notification) bool { return m.ID == n.ID })
	}
	switch {
	case i < 0: // the view was re-read after the store write: nothing to fold in
	case !removed:
		q.notes[i] = n
	case i == 0: // the usual case: O(1) however long the session's queue
		q.notes[0] = store.Notification{}
		q.notes = q.notes[1:]
		v.count--
	default:
		q.notes = slices.Delete(q.notes, i, i+1)
		v.count--
	}
	if len(q.notes) == 0 {
		delete(v.sessions, q.id)
		return false
	}
	return true
}

// place (re)schedules q's head, with the hold it may be under.
func (v *outboxView) place(q *sessionQueue, hold map[string]time.Time) {
	if q.in != nil {
		heap.Remove(q.in, q.idx)
	}
	q.setKeys(hold)
	heap.Push(&v.later, q)
}

// promote moves the heads due by limit from later to due.
func (v *outboxView) promote(limit time.Time) {
	for len(v.later.qs) > 0 && !v.later.qs[0].due.After(limit) {
		heap.Push(&v.due, heap.Pop(&v.later))
	}
}

// popDue takes the due head that has waited longest (ties: lowest Seq, the
// outbox order); nil when none is due.
func (v *outboxView) popDue() *sessionQueue {
	if len(v.due.qs) == 0 {
		return nil
	}
	return heap.Pop(&v.due).(*sessionQueue)
}

// nextDue is when the earliest head not yet due will be (zero: none).
func (v *outboxView) nextDue() time.Time {
	if len(v.later.qs) == 0 {
		return time.Time{}
	}
	return v.later.qs[0].due
}

func (q *sessionQueue) setKeys(hold map[string]time.Time) {
	head := q.notes[0]
	q.due, q.since = head.NextAttemptAt, waitingSince(head)
	if h, ok := hold[head.ID]; ok && h.After(q.due) {
		q.due = h
	}
}

// queueHeap is a container/heap of session queues that keeps each queue's
// position, so that a queue can be removed or re-placed in O(log n).
type queueHeap struct {
	qs    []*sessionQueue
	byDue bool // order by due; else by since
}

func (h *queueHeap) Len() int { return len(h.qs) }

func (h *queueHeap) Less(i, j int) bool {
	a, b := h.qs[i], h.qs[j]
	c := a.since.Compare(b.since)
	if h.byDue {
		c = a.due.Compare(b.due)
	}
	if c != 0 {
		return c < 0
	}
	return a.notes[0].Seq < b.notes[0].Seq
}

func (h *queueHeap) Swap(i, j int) {
	h.qs[i], h.qs[j] = h.qs[j], h.qs[i]
	h.qs[i].idx, h.qs[j].idx = i, j
}

func (h *queueHeap) Push(x any) {
	q := x.(*sessionQueue)
	q.in, q.idx = h, len(h.qs)
	h.qs = append(h.qs, q)
}

func (h *queueHeap) Pop() any {
	last := len(h.qs) - 1
	q := h.qs[last]
	h.qs[last] = nil
	h.qs = h.qs[:last]
	q.in, q.idx = nil, -1
	return q
}
