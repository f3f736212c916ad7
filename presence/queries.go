package presence

import (
	"context"
	"encoding/json"
	"slices"
	"strings"

	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/timeline"
)

// View is one session as the admin API shows it. Session.Conns is the live
// connection count (the same as Connections), not the persisted hint.
type View struct {
	store.Session
	Connections int      `json:"connections"`
	Settings    Settings `json:"settings"`
	// Replicas, in cluster mode, are the replicas holding the session's
	// connections, with how many each holds.
	Replicas map[string]int64 `json:"replicas,omitempty"`
}

// MarshalJSON writes the view with one name per field: Session.Conns, the
// same number as Connections, is left out.
func (v View) MarshalJSON() ([]byte, error) {
	type session store.Session // the fields without this method
	type view struct {
		session
		Connections int              `json:"connections"`
		Settings    Settings         `json:"settings"`
		Replicas    map[string]int64 `json:"replicas,omitempty"`
		// Shallower than session's conns, so it wins the name; always 0, so never written.
		Conns int `json:"conns,omitempty"`
	}
	return json.Marshal(view{session: session(v.Session), Connections: v.Connections, Settings: v.Settings, Replicas: v.Replicas})
}

func (e *Engine) viewLocked(s *sess) View {
	// UpdatedAt: the last change we know of; the write time is not kept in memory.
	return View{Session: e.snapshot(s, max(s.lastSeen, s.absentAt)), Connections: int(s.conns), Settings: *e.bots.settings(s.bot)}
}

// Sessions lists every tracked session, ordered by id.
func (e *Engine) Sessions() []View {
	out := []View{} // JSON: [] rather than null when empty
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		for _, s := range sh.sessions {
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
	s := sh.sessions[id]
	if s == nil {
		return View{}, false
	}
	return e.viewLocked(s), true
}

// Timeline is session id's recent history (package timeline); empty when
// the engine keeps none.
func (e *Engine) Timeline(ctx context.Context, id string) timeline.History {
	return e.timeline.History(ctx, id)
}
