package presence

import (
	"cmp"
	"container/heap"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// The session cap (Options.MaxSessions, PRESENCE_MAX_SESSIONS). Every new
// session id costs memory and a record in the store until ForgetAfter, so a
// flood of new ids would grow both without bound. At the cap a new session
// first makes room by shedding old state that carries no promise
// (docs/ARCHITECTURE.md, "Presence invariants"): a session not handed over
// (invariant 4: it can never cause a notification), with no live connection,
// and no notification waiting for the store, the one seen longest ago first.
// A handed-over session may still owe an /expire or a return message, and a
// connected one is a client that is there: neither is shed. When nothing can
// be shed, the new session is not tracked (counted, warned about); its
// traffic is proxied untouched, as a connection without a session id is.

// DefaultMaxSessions is PRESENCE_MAX_SESSIONS when it is not set. At the
// measured 224-270 bytes per tracked session (TestMemoryPerSession) it is
// about 27 MB of the engine's heap, and about 1 KB per session in the store.
const DefaultMaxSessions = 100_000

// rescanAfter: after a walk of the table found less to shed than a batch,
// new sessions that find no room are refused without walking it again for
// this long, so that a flood of new ids at a table full of promises costs an
// atomic load each, not a walk of every session each.
const rescanAfter = time.Second

// ErrSessionCap is SetHandoff's error for a new session when the table is
// full and nothing can be shed.
var ErrSessionCap = errors.New("presence: the session cap (PRESENCE_MAX_SESSIONS) is reached and every tracked session is connected, handed over or awaiting a notification; the session is not tracked")

// sessionCap is the bound on the session table.
type sessionCap struct {
	max         int64        // Options.MaxSessions; 0: no cap. Read-only.
	tracked     atomic.Int64 // sessions in the shards, all together
	shedMu      sync.Mutex   // one shed at a time; taken with no shard lock held
	noRoomUntil atomic.Int64 // engine clock, Unix ns: a walk that found less than a batch is not repeated before
	loggedAt    atomic.Int64 // Unix nanoseconds; see logDue
}

// batch is how many sessions a walk of the table sheds beyond what the new
// session needs: 1 % of the cap, so that a steady stream of new ids walks
// the table once per max/100 sessions.
func (c *sessionCap) batch() int64 { return max(1, c.max/100) }

// admit counts a new session in, or reports that the table is full. The
// count never exceeds max, not even for a moment.
func (c *sessionCap) admit() bool {
	for {
		n := c.tracked.Load()
		if c.max > 0 && n >= c.max {
			return false
		}
		if c.tracked.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// lockForNew locks sh, the shard of session id, for a call that creates id
// when it is not tracked. When the table is full it first makes room: that
// takes every shard's lock in turn, so it runs before sh.mu is held.
func (e *Engine) lockForNew(sh *shard, id string, now int64) {
	sh.mu.Lock()
	if e.cap.max == 0 || e.cap.tracked.Load() < e.cap.max || sh.sessions[id] != nil {
		return
	}
	sh.mu.Unlock()
	e.makeRoom(now)
	sh.mu.Lock()
}

// sheddableLocked reports whether s carries no promise (see the top of this
// file), under sh.mu.
func (e *Engine) sheddableLocked(sh *shard, s *sess) bool {
	if s.forgotten || s.conns > 0 || e.isHandedOver(s) {
		return false
	}
	_, unsent := sh.unsent[s]
	return !unsent
}

// idleSince is when s was last seen or went absent: the age shedding
// orders by, as forgetting does (deadlines.go).
func idleSince(s *sess) int64 { return max(s.lastSeen, s.absentAt) }

// forgetLocked drops s from its shard, and from the store at the next Flush.
func (e *Engine) forgetLocked(sh *shard, s *sess) {
	s.forgotten = true
	delete(sh.sessions, s.id)
	sh.toForget = append(sh.toForget, s.id)
	e.cap.tracked.Add(-1)
}

// makeRoom sheds enough of the oldest sheddable sessions for one more
// session and a batch beyond, with no shard lock held.
func (e *Engine) makeRoom(now int64) {
	c := &e.cap
	if now < c.noRoomUntil.Load() {
		return
	}
	c.shedMu.Lock()
	defer c.shedMu.Unlock()
	need := c.tracked.Load() - c.max + 1
	if need <= 0 || now < c.noRoomUntil.Load() {
		return // another shed made room, or just found none
	}
	want := need - 1 + c.batch()
	victims := e.oldestSheddable(int(want))
	slices.SortFunc(victims, func(a, b candidate) int { return cmp.Compare(a.s.shard, b.s.shard) })
	var shed int64
	for i := 0; i < len(victims); {
		sh := &e.shards[victims[i].s.shard]
		sh.mu.Lock()
		for ; i < len(victims) && &e.shards[victims[i].s.shard] == sh; i++ {
			v := victims[i]
			// Re-checked: it may have been seen, connected or handed over since the walk.
			if e.sheddableLocked(sh, v.s) && idleSince(v.s) == v.at {
				e.forgetLocked(sh, v.s)
				shed++
			}
		}
		sh.due.dropStale()
		sh.updateHead()
		sh.mu.Unlock()
	}
	e.counts.sessionsShed.Add(uint64(shed))
	if shed < want {
		c.noRoomUntil.Store(now + int64(rescanAfter))
	}
	if shed > 0 && logDue(&c.loggedAt) {
		e.log.Warn("presence: session cap reached; shedding the oldest idle sessions",
			zap.Int64("cap", c.max), zap.Int64("shed", shed), zap.Uint64("shed_so_far", e.counts.sessionsShed.Load()),
			zap.Uint64("refused_so_far", e.counts.sessionsRefused.Load()))
	}
}

// refuse counts a new session the full table cannot take.
func (e *Engine) refuse() {
	e.counts.sessionsRefused.Add(1)
	if logDue(&e.cap.loggedAt) {
		e.log.Warn("presence: session cap reached and nothing can be shed; new sessions are not tracked",
			zap.Int64("cap", e.cap.max), zap.Uint64("refused_so_far", e.counts.sessionsRefused.Load()),
			zap.Uint64("shed_so_far", e.counts.sessionsShed.Load()))
	}
}

// candidate is a sheddable session and its idleSince at the walk.
type candidate struct {
	s  *sess
	at int64
}

// oldestSheddable walks every shard (one lock at a time) and returns the k
// sheddable sessions seen longest ago, in no order.
func (e *Engine) oldestSheddable(k int) []candidate {
	if k <= 0 {
		return nil
	}
	h := &newestFirst{}
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		for _, s := range sh.sessions {
			if !e.sheddableLocked(sh, s) {
				continue
			}
			at := idleSince(s)
			switch {
			case h.Len() < k:
				heap.Push(h, candidate{s, at})
			case at < (*h)[0].at:
				(*h)[0] = candidate{s, at}
				heap.Fix(h, 0)
			}
		}
		sh.mu.Unlock()
	}
	return *h
}

// newestFirst is a max-heap on at: its top is the newest of the k oldest
// kept so far, the one a still older session replaces.
type newestFirst []candidate

func (h newestFirst) Len() int           { return len(h) }
func (h newestFirst) Less(i, j int) bool { return h[i].at > h[j].at }
func (h newestFirst) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *newestFirst) Push(x any)        { *h = append(*h, x.(candidate)) }
func (h *newestFirst) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
