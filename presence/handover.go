package presence

import (
	"errors"
	"strings"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
)

// How a hand-over to a human is detected. The transition itself is
// handoffLocked (transitions.go).

// Detect says how hand-over to a human is detected (HANDOFF_DETECT).
type Detect struct {
	Always bool // every session counts as handed over
	Rules  bool // HANDOFF_START_MATCH / HANDOFF_END_MATCH on messages and HTTP bodies
	API    bool // SetHandoff (the admin API)
}

// ParseDetect parses HANDOFF_DETECT: a comma list of always, rules, api
// (blank items are skipped, so "" detects nothing). The error says what is
// wanted; the caller names the variable and its value.
func ParseDetect(s string) (Detect, error) {
	var d Detect
	for _, w := range strings.Split(s, ",") {
		switch strings.TrimSpace(w) {
		case "always":
			d.Always = true
		case "rules":
			d.Rules = true
		case "api":
			d.API = true
		case "":
		default:
			return Detect{}, errors.New("want a comma list of always, rules, api")
		}
	}
	return d, nil
}

// ErrAPIDisabled is returned by SetHandoff when HANDOFF_DETECT lacks api.
var ErrAPIDisabled = errors.New("presence: the hand-over API is off (HANDOFF_DETECT does not list api)")

// handoffMatch evaluates the hand-over rules outside any lock.
func (e *Engine) handoffMatch(dir event.Direction, doc []byte) (start, end bool) {
	if !e.detect.Rules || len(doc) == 0 {
		return false, false
	}
	if e.rules.handoffStart.Has(dir) && e.rules.handoffStart.Match(dir, doc) {
		return true, false // a message that matches both starts: the agent had better hear
	}
	return false, e.rules.handoffEnd.Has(dir) && e.rules.handoffEnd.Match(dir, doc)
}

// SetHandoff is the API hand-over detector. on for an unknown session
// creates it (seen now: the platform knows the client exists); off for an
// unknown session does nothing. botID, when set, fills in a missing bot id.
// The change is committed before SetHandoff returns.
func (e *Engine) SetHandoff(sessionID, botID string, on bool) error {
	if !e.detect.API {
		return ErrAPIDisabled
	}
	if sessionID == "" {
		return errors.New("presence: empty session id")
	}
	if len(sessionID) > store.MaxIDBytes || len(botID) > store.MaxIDBytes {
		return ErrIDTooLong
	}
	now := e.now()
	sh := &e.shards[shardOf(sessionID)]
	if on {
		e.lockForNew(sh, sessionID, now)
	} else {
		sh.mu.Lock()
	}
	s := sh.sessions[sessionID]
	if s == nil && !on {
		sh.mu.Unlock()
		return nil
	}
	if s == nil {
		if s = e.getOrCreateLocked(sh, sessionID, botID, now); s == nil {
			sh.mu.Unlock()
			return ErrSessionCap
		}
		e.rearm(sh, s)
	} else if s.bot == "" && botID != "" {
		s.bot = e.bots.intern(botID)
		sh.markDirty(s)
	}
	c := change{s: s}
	e.handoffLocked(sh, s, on, now, &c)
	if !c.urgent && s.dirty {
		c.urgent = true // the caller expects the session to exist in the store
	}
	woke := e.commitIfUrgent(sh, &c, now)
	_, unsent := sh.unsent[s]
	failed := unsent || (c.urgent && s.dirty)
	sh.mu.Unlock()
	if woke {
		e.wakeDeliverer()
	}
	if failed {
		return errors.New("presence: the store did not accept the change; it is kept in memory and retried")
	}
	return nil
}
