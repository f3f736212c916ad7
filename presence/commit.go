package presence

import (
	"errors"
	"fmt"
	"math"

	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/timeline"
)

// Writing to the store (docs/ARCHITECTURE.md, "Durability"): a decision
// that queues a notification or changes the hand-over is committed with its
// notification, under the session's shard lock, before the call that made
// it returns (commitLocked); the rest (connection counts, last seen,
// deadlines moved by activity, sessions created or forgotten) is batched by
// Flush.

// change gathers what one call decided about one session, for commitLocked.
type change struct {
	s      *sess
	notes  []store.Notification
	urgent bool // must be committed before the call returns (a notification or a hand-over change)
}

// commitIfUrgent commits c at once when it is urgent (otherwise Flush
// writes it later), under sh.mu. It reports whether to wake the deliverer.
func (e *Engine) commitIfUrgent(sh *shard, c *change, now int64) bool {
	if c.s == nil || !c.urgent {
		return false
	}
	return e.commitLocked(sh, []change{*c}, now)
}

// commitLocked writes the sessions and notes of chs in one Commit, under
// sh.mu. It reports whether notifications were committed (call
// wakeDeliverer after unlocking). On failure the state stays applied in
// memory and the notes wait in sh.unsent for Flush to retry them. A session
// the store refuses outright fails only its own write (commitIsolating).
func (e *Engine) commitLocked(sh *shard, chs []change, now int64) bool {
	if f := sh.fence; f != nil {
		<-f
	}
	for i := range chs {
		c := &chs[i]
		if q := sh.unsent[c.s]; len(q) > 0 {
			c.notes = append(q[:len(q):len(q)], c.notes...)
		}
	}
	written := make([]bool, len(chs))
	wrote := false
	err := commitIsolating(len(chs), func(lo, hi int) error {
		put := make([]store.Session, 0, hi-lo)
		var notes []store.Notification
		for _, c := range chs[lo:hi] {
			put = append(put, e.snapshot(c.s, now))
			notes = append(notes, c.notes...)
		}
		if err := e.store.Commit(put, nil, notes); err != nil {
			return err
		}
		for i := lo; i < hi; i++ {
			written[i] = true
			delete(sh.unsent, chs[i].s)
			chs[i].s.dirty = false // a stale entry in sh.dirty is skipped by Flush
		}
		for _, n := range notes {
			e.timeline.Add(n.SessionID, timeline.Event{Kind: timeline.Queued, Notification: string(n.Kind),
				WebhookID: n.ID, Episode: n.Episode})
			if n.Kind == store.KindOffline {
				e.counts.offlineCommitted.Add(1)
			} else {
				e.counts.onlineCommitted.Add(1)
			}
		}
		wrote = wrote || len(notes) > 0
		return nil
	}, func(i int, err error) {
		c := chs[i]
		written[i] = true // never storable: retrying would fail again
		delete(sh.unsent, c.s)
		c.s.dirty = false
		e.counts.commitErrors.Add(1)
		e.log.Error("presence: the store refuses a session; its decisions live in memory only",
			zap.Int("session_id_bytes", len(c.s.id)), zap.Int("notifications", len(c.notes)), zap.Error(err))
	})
	if err != nil {
		e.counts.commitErrors.Add(1)
		e.logStoreError("presence: committing a decision failed; kept in memory, will retry", err,
			zap.Int("sessions", len(chs)))
		for i, c := range chs {
			if written[i] {
				continue
			}
			if len(c.notes) > 0 {
				if sh.unsent == nil {
					sh.unsent = map[*sess][]store.Notification{}
				}
				sh.unsent[c.s] = c.notes
			}
			sh.markDirty(c.s)
		}
	}
	return wrote
}

// commitIsolating commits items [0, n) by commit(lo, hi). When the store
// refuses records among them (store.RejectedError: nothing was written, and
// the same batch would fail again), it halves the range and tries each
// half, so that one unstorable session costs O(log n) extra commits and
// fails no unrelated session written with it; refused is called for each
// single item refused. Any other error is the store failing as a whole: it
// is returned at once, and the items not yet committed stay for a retry.
func commitIsolating(n int, commit func(lo, hi int) error, refused func(i int, err error)) error {
	var try func(lo, hi int) error
	try = func(lo, hi int) error {
		err := commit(lo, hi)
		var rej *store.RejectedError
		switch {
		case err == nil:
			return nil
		case !errors.As(err, &rej):
			return err
		case hi-lo == 1:
			refused(lo, err)
			return nil
		}
		mid := lo + (hi-lo)/2
		if err := try(lo, mid); err != nil {
			return err
		}
		return try(mid, hi)
	}
	if n == 0 {
		return nil
	}
	return try(0, n)
}

// Flush writes pending non-decision changes (connections, last seen,
// deadlines moved by activity, sessions created or forgotten) in one Commit,
// and retries decisions whose commit failed.
func (e *Engine) Flush() error {
	e.loop.flushMu.Lock()
	defer e.loop.flushMu.Unlock()
	now := e.now()
	done := make(chan struct{})
	var put []store.Session
	var forget []string
	var taken [numShards][]*sess
	var forgot [numShards][]string
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		if len(sh.dirty) == 0 && len(sh.toForget) == 0 {
			sh.mu.Unlock()
			continue
		}
		keep := sh.dirty[:0]
		for _, s := range sh.dirty {
			switch {
			case !s.dirty || s.forgotten:
			case sh.unsent[s] != nil:
				keep = append(keep, s) // written with its notes, by the retry below
			default:
				s.dirty = false
				put = append(put, e.snapshot(s, now))
				taken[i] = append(taken[i], s)
			}
		}
		clear(sh.dirty[len(keep):])
		sh.dirty = keep
		if cap(sh.dirty) > 1024 && len(sh.dirty) < cap(sh.dirty)/4 {
			sh.dirty = append([]*sess(nil), sh.dirty...)
		}
		forget = append(forget, sh.toForget...)
		forgot[i], sh.toForget = sh.toForget, nil
		sh.fence = done
		sh.mu.Unlock()
	}
	var err error
	if len(put) > 0 || len(forget) > 0 {
		// The forgotten ids go with the first part written; a refused
		// session is dropped from the batch (it is never storable).
		err = commitIsolating(max(len(put), 1), func(lo, hi int) error {
			var f []string
			if lo == 0 {
				f = forget
			}
			if err := e.store.Commit(put[lo:min(hi, len(put))], f, nil); err != nil {
				return err
			}
			if lo == 0 {
				forget = nil
			}
			return nil
		}, func(i int, err error) {
			e.counts.commitErrors.Add(1)
			e.log.Error("presence: the store refuses a session; its state lives in memory only",
				zap.Int("session_id_bytes", len(put[i].ID)), zap.Error(err))
		})
	}
	close(done)
	if err != nil {
		e.counts.commitErrors.Add(1)
		err = fmt.Errorf("presence: flushing %d sessions: %w", len(put), err)
		for i := range e.shards {
			if len(taken[i]) == 0 && len(forgot[i]) == 0 {
				continue
			}
			sh := &e.shards[i]
			sh.mu.Lock()
			for _, s := range taken[i] {
				if !s.forgotten {
					sh.markDirty(s)
				}
			}
			for _, id := range forgot[i] {
				if sh.sessions[id] == nil { // not re-created meanwhile
					sh.toForget = append(sh.toForget, id)
				}
			}
			sh.mu.Unlock()
		}
	}
	woke := false
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		if len(sh.unsent) > 0 {
			chs := make([]change, 0, len(sh.unsent))
			for s := range sh.unsent {
				chs = append(chs, change{s: s})
			}
			if e.commitLocked(sh, chs, now) {
				woke = true
			}
		}
		sh.mu.Unlock()
	}
	if woke {
		e.wakeDeliverer()
	}
	return err
}

// recoverSessions loads the stored sessions at start (see New) and writes
// back those it had to change.
func (e *Engine) recoverSessions() error {
	list, err := e.store.Sessions()
	if err != nil {
		return fmt.Errorf("presence: loading sessions: %w", err)
	}
	now := e.now()
	var put []store.Session
	for _, st := range list {
		if st.ID == "" {
			continue
		}
		s := &sess{
			id: st.ID, bot: e.bots.intern(st.BotID),
			lastSeen: unixNano(st.LastSeenAt), absentAt: unixNano(st.AbsentAt), deadline: unixNano(st.Deadline),
			returnedAt: unixNano(st.ReturnedAt),
			episode:    uint32(min(st.Episode, math.MaxUint32)),
			state:      st.State, handedOver: st.HandedOver || e.detect.Always, expireSent: st.ExpireSent,
			reason: reasonCode(st.Reason), shard: shardOf(st.ID),
		}
		set := e.bots.settings(s.bot)
		changed := s.handedOver != st.HandedOver
		if st.Conns > 0 {
			changed = true
			if s.state == store.Present {
				s.deadline = now + int64(set.CheckInterval)
			}
		}
		if s.state == store.Present && s.deadline == 0 {
			// Cannot be written by this engine; never leave a session without a way out.
			changed = true
			s.deadline = max(s.lastSeen, now) + int64(set.CheckInterval)
		}
		if s.state == store.Absent {
			s.deadline = 0
		}
		sh := &e.shards[s.shard]
		sh.sessions[s.id] = s
		e.cap.tracked.Add(1) // all are kept, over the cap too: new sessions make room (cap.go)
		e.rearm(sh, s)
		if changed {
			put = append(put, e.snapshot(s, now))
		}
	}
	if len(put) > 0 {
		if err := e.store.Commit(put, nil, nil); err != nil {
			return fmt.Errorf("presence: writing recovered sessions: %w", err)
		}
	}
	e.log.Info("presence: sessions recovered", zap.Int("sessions", len(list)), zap.Int("reset", len(put)))
	if n := e.cap.tracked.Load(); e.cap.max > 0 && n > e.cap.max {
		e.log.Warn("presence: more sessions stored than the session cap; new sessions shed the oldest idle ones",
			zap.Int64("sessions", n), zap.Int64("cap", e.cap.max))
	}
	return nil
}
