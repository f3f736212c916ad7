package presence

import (
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// TestForgetting: absent sessions without connections are forgotten
// ForgetAfter after they were last seen, in memory and then in the store;
// connected ones are kept, and a session re-created before the flush is not
// deleted by it.
func TestForgetting(t *testing.T) {
	r := newRig(t, nil, nil, func(o *Options) {
		o.ForgetAfter = time.Hour
		o.Defaults.Mode = ModeActivity
	})
	r.open(1, "gone", "bot")
	r.close(1)
	r.open(2, "connected", "bot")
	r.handover(3, "handed", "bot")
	r.close(3)
	r.advance(interval) // all absent; "connected" stays connected
	if err := r.e.Flush(); err != nil {
		t.Fatal(err)
	}
	r.advance(time.Hour - time.Second)
	if r.e.Stats().Sessions != 3 {
		t.Fatal("forgotten too early")
	}
	r.advance(time.Second)
	if _, ok := r.e.Session("gone"); ok {
		t.Fatal("idle session not forgotten")
	}
	if _, ok := r.e.Session("handed"); ok {
		t.Fatal("settled hand-over not forgotten")
	}
	if _, ok := r.e.Session("connected"); !ok {
		t.Fatal("a connected session was forgotten")
	}
	// Re-created before the flush: the pending forget must not delete it.
	r.e.HTTPRequest(event.Request{Who: event.Identity{SessionID: "gone"}})
	if err := r.e.Flush(); err != nil {
		t.Fatal(err)
	}
	list, _ := r.st.Sessions()
	ids := map[string]bool{}
	for _, s := range list {
		ids[s.ID] = true
	}
	if len(ids) != 2 || !ids["gone"] || !ids["connected"] {
		t.Fatalf("store holds %v", ids)
	}
	r.close(2)
	r.advance(interval)
	r.advance(2 * time.Hour)
	if st := r.e.Stats(); st.Sessions != 0 || st.Deadlines != 0 {
		t.Fatalf("memory not bounded: %+v", st)
	}
	if err := r.e.Flush(); err != nil {
		t.Fatal(err)
	}
	if list, _ := r.st.Sessions(); len(list) != 0 {
		t.Fatalf("store still holds %d sessions", len(list))
	}
}
