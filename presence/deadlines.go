package presence

import (
	"math"
	"time"

	"github.com/presence-sidecar/presence-sidecar/store"
)

// Deadlines are data: each shard keeps a min-heap (heap.go) of when to look
// at which session again, and Run waits for the earliest of all with one
// timer (docs/ARCHITECTURE.md, "Concurrency"). A heap entry is re-checked
// against the session when it fires, so a deadline moved by activity
// leaves only a stale entry behind.

// nextDue is when s must be looked at again: its deadline while present,
// the time to forget it while absent with no connection, else never (0).
func (e *Engine) nextDue(s *sess) int64 {
	switch {
	case s.forgotten:
		return 0
	case s.state == store.Present:
		return s.deadline
	case s.conns == 0:
		return max(s.lastSeen, s.absentAt) + int64(e.timing.forgetAfter)
	}
	return 0
}

// rearm makes sure a heap entry exists no later than nextDue(s). A later
// time needs nothing: the earlier entry re-arms itself when popped.
func (e *Engine) rearm(sh *shard, s *sess) {
	if n := e.nextDue(s); n != 0 && (s.armedAt == 0 || n < s.armedAt) {
		e.arm(sh, s, n)
	}
}

// arm pushes a heap entry for s at at, and kicks Run when that is earlier
// than its timer.
func (e *Engine) arm(sh *shard, s *sess, at int64) {
	s.armedAt = at
	sh.due.push(due{at: at, s: s})
	if at < sh.head.Load() {
		sh.head.Store(at)
		if at < e.loop.timerAt.Load() {
			select {
			case e.loop.kick <- struct{}{}:
			default:
			}
		}
	}
}

func (sh *shard) updateHead() {
	if len(sh.due) == 0 {
		sh.head.Store(math.MaxInt64)
	} else {
		sh.head.Store(sh.due[0].at)
	}
}

// earliestDue is the earliest heap entry of all shards (MaxInt64: none).
func (e *Engine) earliestDue() int64 {
	m := int64(math.MaxInt64)
	for i := range e.shards {
		m = min(m, e.shards[i].head.Load())
	}
	return m
}

// Tick fires everything due at now: absences, and forgetting of sessions
// idle past ForgetAfter. Run calls it; tests drive it with a fake clock.
func (e *Engine) Tick(now time.Time) {
	n := now.UnixNano()
	woke := false
	var chs []change
	for i := range e.shards {
		sh := &e.shards[i]
		if sh.head.Load() > n {
			continue
		}
		sh.mu.Lock()
		chs = chs[:0]
		for len(sh.due) > 0 && sh.due[0].at <= n {
			d := sh.due.pop()
			s := d.s
			if s.forgotten || d.at != s.armedAt {
				continue // stale: superseded by an earlier entry, or forgotten
			}
			s.armedAt = 0
			if r := e.fire(sh, s, n, &chs); r != 0 {
				e.arm(sh, s, r)
			} else {
				e.rearm(sh, s) // nextDue(s) > n here, so the loop ends
			}
		}
		sh.updateHead()
		if len(chs) > 0 && e.commitLocked(sh, chs, n) {
			woke = true
		}
		sh.mu.Unlock()
	}
	if woke {
		e.wakeDeliverer()
	}
}

// fire handles s's popped heap entry at now: a present session whose
// deadline passed becomes absent (transitions.go); an absent one idle past
// ForgetAfter is forgotten. Urgent changes are added to chs. It returns a
// retry time when s must be looked at again though nextDue(s) says
// otherwise.
func (e *Engine) fire(sh *shard, s *sess, now int64, chs *[]change) int64 {
	if s.state == store.Present {
		if s.deadline == 0 || s.deadline > now {
			return 0 // moved by activity or cleared by a connection
		}
		set := e.bots.settings(s.bot)
		if set.Mode == ModeConnection && s.conns > 0 {
			s.deadline = 0 // the mode changed under a connected session
			sh.markDirty(s)
			return 0
		}
		c := change{s: s}
		e.absentLocked(sh, s, set, now, &c)
		if c.urgent {
			*chs = append(*chs, c)
		}
		return 0
	}
	if s.conns > 0 || max(s.lastSeen, s.absentAt)+int64(e.timing.forgetAfter) > now {
		return 0
	}
	if _, busy := sh.unsent[s]; busy {
		return now + int64(retryDelay) // forgetting it would lose its notifications
	}
	e.forgetLocked(sh, s)
	return 0
}
