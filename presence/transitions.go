package presence

import (
	"crypto/rand"
	"encoding/base32"
	"strings"

	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/timeline"
)

// The transitions of a session's state machine, and the notifications they
// cause. All run under the session's shard lock and record what must be
// committed in a change (commit.go); when they fire is deadlines.go.
// The rules they keep: docs/ARCHITECTURE.md, "Presence invariants".

// absentLocked: the deadline passed without presence. This is the one place
// that decides a client is absent.
func (e *Engine) absentLocked(sh *shard, s *sess, set *Settings, now int64, c *change) {
	s.state = store.Absent
	s.episode++
	s.absentAt = now
	s.deadline = 0
	s.expireSent = false
	s.reason = reasonDisconnected
	if set.Mode == ModeActivity {
		s.reason = reasonInactive
	}
	tp := e.span(spanAbsent, s, now, set)
	// Invariant 4: only a session handed over to a human is reported.
	if e.isHandedOver(s) && set.Enabled {
		c.notes = append(c.notes, e.offlineNote(s, now, tp))
		s.expireSent = true
		c.urgent = true
	}
	e.counts.absent.Add(1)
	e.timeline.Add(s.id, timeline.Event{Kind: timeline.Absent, Episode: uint64(s.episode), Reason: reasonText[s.reason]})
	sh.markDirty(s)
	e.logTransition("presence: client absent", s, reasonText[s.reason], tp)
}

// seenLocked: the client showed presence (activity mode: activity; either
// mode: an HTTP request). The caller has set nothing yet.
func (e *Engine) seenLocked(sh *shard, s *sess, set *Settings, now int64, c *change) {
	s.lastSeen = now
	if s.state == store.Absent {
		e.returnLocked(sh, s, set, now, c)
		return
	}
	if set.Mode == ModeActivity || s.conns == 0 {
		s.deadline = now + int64(set.CheckInterval) // lazily: the heap entry re-arms itself
	}
	sh.markDirty(s)
	e.rearm(sh, s)
}

// returnLocked: an absent session is seen again.
func (e *Engine) returnLocked(sh *shard, s *sess, set *Settings, now int64, c *change) {
	tp := e.span(spanReturned, s, now, set)
	// Invariant 3: a return message only after this episode's /expire.
	if s.expireSent {
		c.notes = append(c.notes, store.Notification{
			ID: newNotificationID(), Kind: store.KindOnline, SessionID: s.id, BotID: s.bot,
			Episode: uint64(s.episode), Text: set.ReturnText(),
			OfflineSince: fromUnixNano(s.absentAt), DetectedAt: fromUnixNano(now), CreatedAt: fromUnixNano(now),
			TraceParent: tp,
		})
		c.urgent = true
	}
	reason := reasonText[s.reason]
	e.timeline.Add(s.id, timeline.Event{Kind: timeline.Returned, Episode: uint64(s.episode)})
	s.state = store.Present
	s.expireSent = false
	s.absentAt = 0
	s.returnedAt = now
	s.reason = reasonNone
	s.deadline = 0
	if set.Mode == ModeActivity || s.conns == 0 {
		s.deadline = now + int64(set.CheckInterval)
	}
	e.counts.returned.Add(1)
	sh.markDirty(s)
	e.rearm(sh, s)
	e.logTransition("presence: client back", s, reason, tp)
}

// handoffLocked applies a hand-over start (on) or end.
func (e *Engine) handoffLocked(sh *shard, s *sess, on bool, now int64, c *change) {
	if on {
		if s.handedOver {
			return
		}
		s.handedOver = true
		c.urgent = true
		e.counts.handoffOn.Add(1)
		set := e.bots.settings(s.bot)
		tp := e.span(spanHandoffOn, s, now, set)
		// The agent must learn that the client is already gone.
		if s.state == store.Absent && !s.expireSent && set.Enabled {
			c.notes = append(c.notes, e.offlineNote(s, now, tp))
			s.expireSent = true
		}
		sh.markDirty(s)
		e.timeline.Add(s.id, timeline.Event{Kind: timeline.HandoffOn, Episode: uint64(s.episode)})
		e.logTransition("presence: hand-over started", s, reasonText[s.reason], tp)
		return
	}
	if e.detect.Always || !s.handedOver {
		return
	}
	s.handedOver = false
	c.urgent = true
	if s.state == store.Absent && s.expireSent {
		// That episode is closed without a return message; a new hand-over
		// during this absence is reported as a new episode, so there is
		// never a second /expire for one episode (invariant 2).
		s.episode++
		s.expireSent = false
	}
	e.counts.handoffOff.Add(1)
	e.timeline.Add(s.id, timeline.Event{Kind: timeline.HandoffOff, Episode: uint64(s.episode)})
	sh.markDirty(s)
	tp := e.span(spanHandoffOff, s, now, e.bots.settings(s.bot))
	e.logTransition("presence: hand-over ended", s, reasonText[s.reason], tp)
}

// offlineNote is the client.offline notification of s's current absence.
func (e *Engine) offlineNote(s *sess, now int64, traceparent string) store.Notification {
	return store.Notification{
		ID: newNotificationID(), Kind: store.KindOffline, SessionID: s.id, BotID: s.bot,
		Episode: uint64(s.episode), Reason: reasonText[s.reason],
		LastSeenAt: fromUnixNano(s.lastSeen), DetectedAt: fromUnixNano(s.absentAt), CreatedAt: fromUnixNano(now),
		TraceParent: traceparent,
	}
}

func newNotificationID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return "msg_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// logTransition writes the one log line of a transition: ids, never content.
func (e *Engine) logTransition(msg string, s *sess, reason, traceparent string) {
	e.log.Info(msg, zap.String("session", s.id), zap.String("bot", s.bot),
		zap.Uint32("episode", s.episode), zap.String("reason", reason), zap.String("trace_id", traceID(traceparent)))
}
