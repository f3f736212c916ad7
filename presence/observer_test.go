package presence

import (
	"testing"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// TestConnectionIdentifiedLater: connections and requests without a session
// id count as untracked; a session id named later attaches the connection,
// a later bot id fills in only a missing one, and a bot id seen before the
// session id is kept.
func TestConnectionIdentifiedLater(t *testing.T) {
	r := newRig(t, nil, nil, nil)
	r.e.ConnOpened(1, event.Open{Who: event.Identity{}})
	r.e.ConnOpened(2, event.Open{Who: event.Identity{BotID: "bot"}})
	r.e.HTTPRequest(event.Request{Who: event.Identity{}, Body: []byte(`{}`)})
	if st := r.e.Stats(); st.UntrackedConnections != 2 || st.UntrackedRequests != 1 || st.Sessions != 0 {
		t.Fatalf("stats %+v", st)
	}
	r.client(1, userMsg) // ignored: no session
	r.e.ConnIdentified(1, event.Identity{SessionID: "s1"})
	r.e.ConnIdentified(1, event.Identity{BotID: "botA"}) // fills in the missing bot id
	r.e.ConnIdentified(1, event.Identity{BotID: "botB"}) // does not replace it
	r.e.ConnIdentified(2, event.Identity{SessionID: "s2"})
	if v := r.view("s1"); v.BotID != "botA" || v.Connections != 1 {
		t.Fatalf("%+v", v)
	}
	if v := r.view("s2"); v.BotID != "bot" {
		t.Fatalf("bot seen before the session id was lost: %+v", v)
	}
	if st := r.e.Stats(); st.UntrackedConnections != 0 || st.Connections != 2 {
		t.Fatalf("stats %+v", st)
	}
	r.e.ConnOpened(3, event.Open{Who: event.Identity{}})
	r.e.ConnClosed(3, event.CloseClean)
	r.close(1)
	r.close(2)
	if st := r.e.Stats(); st.UntrackedConnections != 0 || st.Connections != 0 {
		t.Fatalf("stats %+v", st)
	}
}
