package presence

import (
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
)

// TestHandoffEndClearsAbsence: a hand-over end during an absence closes its
// episode (ExpireSent cleared, committed at once), so the client's return
// sends nothing; both hand-over transitions are counted.
func TestHandoffEndClearsAbsence(t *testing.T) {
	r := newRig(t, nil, nil, func(o *Options) { o.Defaults.Mode = ModeActivity })
	r.handover(1, "s1", "bot")
	r.advance(interval)
	r.wantNotes(store.KindOffline)
	r.server(1, endFrame) // the conversation ended (HANDOFF_END_MATCH)
	v := r.view("s1")
	if v.HandedOver || v.ExpireSent || v.State != store.Absent {
		t.Fatalf("after end: %+v", v)
	}
	if s := r.stored("s1"); s.HandedOver || s.ExpireSent {
		t.Fatalf("hand-over end not committed at once: %+v", s)
	}
	r.client(1, userMsg) // back, but nobody is waiting for it
	r.wantNotes(store.KindOffline)
	if st := r.e.Stats(); st.Transitions.HandoffOn != 1 || st.Transitions.HandoffOff != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestHandoffStartWhileAbsentSendsExpire: a hand-over that starts while the
// client is already absent sends that absence's /expire at once, with the
// time the absence was detected.
func TestHandoffStartWhileAbsentSendsExpire(t *testing.T) {
	r := newRig(t, nil, nil, func(o *Options) { o.Defaults.Mode = ModeActivity })
	r.open(1, "s1", "bot")
	r.advance(interval)
	r.wantNotes()
	r.advance(time.Minute)
	r.server(1, transferFrame) // hand-over while the client is already inactive
	p := r.wantNotes(store.KindOffline)
	if p[0].Episode != 1 || p[0].Reason != "inactive" || !p[0].DetectedAt.Equal(r.clk.Now().Add(-time.Minute)) {
		t.Fatalf("%+v", p[0])
	}
	if s := r.stored("s1"); !s.HandedOver || !s.ExpireSent {
		t.Fatalf("stored %+v", s)
	}
}

// TestHandoffRulesOnHTTPBody: the hand-over rules apply to HTTP request
// bodies as client messages.
func TestHandoffRulesOnHTTPBody(t *testing.T) {
	r := newRig(t, nil, nil, func(o *Options) {
		o.HandoffStart = mustRules(t, "client:type=agent_request")
	})
	r.e.HTTPRequest(event.Request{Who: event.Identity{SessionID: "s1", BotID: "bot"}, Body: []byte(`{"sessionId":"s1","type":"agent_request"}`)})
	if !r.view("s1").HandedOver {
		t.Fatal("HTTP body did not start the hand-over")
	}
	r.advance(interval)
	r.wantNotes(store.KindOffline)
}

// TestDetectAlwaysAndAPI: with HANDOFF_DETECT=always every session is handed
// over whatever the rules say, and SetHandoff is refused; with api, off for
// an unknown session does nothing and on creates the session and stores it.
func TestDetectAlwaysAndAPI(t *testing.T) {
	r := newRig(t, nil, nil, func(o *Options) { o.Detect = Detect{Always: true} })
	r.open(1, "s1", "")
	if !r.view("s1").HandedOver {
		t.Fatal("always: not handed over")
	}
	r.server(1, endFrame) // rules are off, and always wins anyway
	if err := r.e.SetHandoff("s1", "", false); err != ErrAPIDisabled {
		t.Fatalf("SetHandoff with api off: %v", err)
	}
	r.close(1)
	r.advance(interval)
	r.wantNotes(store.KindOffline)

	r2 := newRig(t, nil, nil, func(o *Options) { o.Detect = Detect{API: true} })
	if err := r2.e.SetHandoff("ghost", "", false); err != nil {
		t.Fatalf("off for an unknown session: %v", err)
	}
	if _, ok := r2.e.Session("ghost"); ok {
		t.Fatal("off created a session")
	}
	if err := r2.e.SetHandoff("s2", "bot", true); err != nil {
		t.Fatal(err)
	}
	if s := r2.stored("s2"); !s.HandedOver || s.BotID != "bot" {
		t.Fatalf("stored %+v", s)
	}
	r2.advance(interval) // never connected: absent after the interval
	r2.wantNotes(store.KindOffline)
}

// TestParseDetect: HANDOFF_DETECT is a comma list of always, rules, api;
// blanks are skipped and anything else is refused with what is wanted.
func TestParseDetect(t *testing.T) {
	for in, want := range map[string]Detect{
		"":                     {},
		"rules":                {Rules: true},
		" rules , api ":        {Rules: true, API: true},
		"always,rules,api,":    {Always: true, Rules: true, API: true},
		"api,,api":             {API: true},
		"always":               {Always: true},
		"rules,api,always,api": {Always: true, Rules: true, API: true},
	} {
		if got, err := ParseDetect(in); err != nil || got != want {
			t.Errorf("ParseDetect(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"psychic", "rules,psychic", "Rules", "rules;api"} {
		if got, err := ParseDetect(in); err == nil || err.Error() != "want a comma list of always, rules, api" || got != (Detect{}) {
			t.Errorf("ParseDetect(%q) = %+v, %v; want the wanted list", in, got, err)
		}
	}
}
