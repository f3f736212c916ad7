package presence

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/store"
)

// ErrAPIDisabled is returned by SetHandoff when HANDOFF_DETECT lacks api.
var ErrAPIDisabled = errors.New("presence: the hand-over API is off (HANDOFF_DETECT does not list api)")

// View is one session as the admin API shows it. Session.Conns is the live
// connection count (the same as Connections), not the persisted hint.
type View struct {
	store.Session
	Connections int      `json:"connections"`
	Settings    Settings `json:"settings"`
}

func (e *Engine) viewLocked(s *sess) View {
	// UpdatedAt: the last change we know of; the write time is not kept in memory.
	return View{Session: e.snapshot(s, max(s.seen, s.absentAt)), Connections: int(s.conns), Settings: *e.settings(s.bot)}
}

// Sessions lists every tracked session, ordered by id.
func (e *Engine) Sessions() []View {
	out := []View{} // JSON: [] rather than null when empty
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		for _, s := range sh.m {
			out = append(out, e.viewLocked(s))
		}
		sh.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b View) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Session returns one tracked session.
func (e *Engine) Session(id string) (View, bool) {
	sh := &e.shards[shardOf(id)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.m[id]
	if s == nil {
		return View{}, false
	}
	return e.viewLocked(s), true
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
	now := e.now()
	sh := &e.shards[shardOf(sessionID)]
	sh.mu.Lock()
	s := sh.m[sessionID]
	if s == nil && !on {
		sh.mu.Unlock()
		return nil
	}
	if s == nil {
		s = e.getLocked(sh, sessionID, botID, now)
		e.rearm(sh, s)
	} else if s.bot == "" && botID != "" {
		s.bot = e.intern(botID)
		sh.markDirty(s)
	}
	c := change{s: s}
	e.handoffLocked(sh, s, on, now, &c)
	if !c.sync && s.dirty {
		c.sync = true // the caller expects the session to exist in the store
	}
	woke := e.finish(sh, &c, now)
	_, unsent := sh.unsent[s]
	failed := unsent || (c.sync && s.dirty)
	sh.mu.Unlock()
	if woke {
		e.wake()
	}
	if failed {
		return errors.New("presence: the store did not accept the change; it is kept in memory and retried")
	}
	return nil
}

// BotSettings returns the effective settings of botID (the defaults for an
// unknown or empty id).
func (e *Engine) BotSettings(botID string) Settings { return *e.settings(botID) }

// PutBotSettings changes a bot's settings at run time. The set fields of o
// are laid over the bot's earlier run-time changes; the fields named in
// clear are dropped from them, so the bot falls back to PRESENCE_BOTS_FILE
// and then the environment for those. The result is validated, persisted
// with store.PutBot (the run-time changes only) and used for later
// decisions. Deadlines already armed keep their time.
func (e *Engine) PutBotSettings(botID string, o store.BotSettings, clear ...string) (Settings, error) {
	if botID == "" {
		return Settings{}, errors.New("presence: empty bot id")
	}
	e.botsMu.Lock()
	defer e.botsMu.Unlock()
	cur := *e.bots.Load()
	var file, api store.BotSettings
	id := strings.Clone(botID)
	if b, ok := cur[botID]; ok {
		file, api, id = b.file, b.api, b.id
	}
	api = mergeOverrides(api, o)
	for _, field := range clear {
		switch field {
		case "enabled":
			api.Enabled = nil
		case "checkInterval":
			api.CheckInterval = ""
		case "returnMessage":
			api.ReturnMessage = ""
		case "mode":
			api.Mode = ""
		default:
			return Settings{}, fmt.Errorf("bot %q: unknown setting %q", botID, field)
		}
	}
	set, err := Resolve(e.def, mergeOverrides(file, api), e.allowAny)
	if err != nil {
		return Settings{}, fmt.Errorf("bot %q: %w", botID, err)
	}
	if err := e.store.PutBot(botID, api); err != nil {
		return Settings{}, fmt.Errorf("presence: saving settings of bot %q: %w", botID, err)
	}
	next := maps.Clone(cur)
	next[botID] = &botEntry{id: id, file: file, api: api, set: set}
	e.bots.Store(&next)
	e.log.Info("presence: bot settings changed", zap.String("bot", botID),
		zap.String("mode", string(set.Mode)), zap.Duration("check_interval", set.CheckInterval), zap.Bool("enabled", set.Enabled))
	return set, nil
}

// Transitions counts presence transitions since start.
type Transitions struct {
	Absent     uint64 `json:"absent"`  // present -> absent
	Present    uint64 `json:"present"` // absent -> present
	HandoffOn  uint64 `json:"handoffOn"`
	HandoffOff uint64 `json:"handoffOff"`
}

// Stats is a snapshot for metrics.
type Stats struct {
	Sessions             int         `json:"sessions"` // tracked sessions
	Present              int         `json:"present"`
	Absent               int         `json:"absent"`
	HandedOver           int         `json:"handedOver"`
	Connections          int         `json:"connections"`          // live connections of tracked sessions
	UntrackedConnections int64       `json:"untrackedConnections"` // live connections without a session id
	UntrackedRequests    uint64      `json:"untrackedRequests"`    // HTTP requests without a session id, since start
	Transitions          Transitions `json:"transitions"`
	OfflineCommitted     uint64      `json:"offlineCommitted"` // client.offline notifications written to the outbox
	OnlineCommitted      uint64      `json:"onlineCommitted"`  // client.online notifications written to the outbox
	UnsentNotifications  int         `json:"unsentNotifications"`
	CommitErrors         uint64      `json:"commitErrors"`
	Deadlines            int         `json:"deadlines"` // heap entries, stale ones included
}

// Stats counts sessions by state, connections and transitions.
func (e *Engine) Stats() Stats {
	st := Stats{
		UntrackedConnections: e.untrackedConns.Load(),
		UntrackedRequests:    e.untrackedReqs.Load(),
		Transitions: Transitions{
			Absent: e.nAbsent.Load(), Present: e.nPresent.Load(),
			HandoffOn: e.nHandoffOn.Load(), HandoffOff: e.nHandoffOff.Load(),
		},
		OfflineCommitted: e.nOffline.Load(),
		OnlineCommitted:  e.nOnline.Load(),
		CommitErrors:     e.commitErrors.Load(),
	}
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		st.Sessions += len(sh.m)
		st.Deadlines += len(sh.h)
		for _, s := range sh.m {
			if s.state == store.Absent {
				st.Absent++
			} else {
				st.Present++
			}
			if e.handed(s) {
				st.HandedOver++
			}
			st.Connections += int(s.conns)
		}
		for _, q := range sh.unsent {
			st.UnsentNotifications += len(q)
		}
		sh.mu.Unlock()
	}
	return st
}
