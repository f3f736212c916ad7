package presence

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestSeveralTabsClosingOneOfTwoNotifiesNothing: a session stays present,
// without a deadline, while one of its connections is open; closing the last
// one starts the interval.
func TestSeveralTabsClosingOneOfTwoNotifiesNothing(t *testing.T) {
	r := newRig(t, nil, nil, nil)
	r.handover(1, "s1", "bot")
	r.open(2, "s1", "bot")
	r.close(1)
	r.advance(10 * interval)
	r.wantNotes()
	if v := r.view("s1"); v.Connections != 1 || v.State != store.Present || !v.Deadline.IsZero() {
		t.Fatalf("%+v", v)
	}
	r.close(2)
	r.advance(interval)
	r.wantNotes(store.KindOffline)
}

// TestActivityModeKeepAliveIsNotPresence: in activity mode, client messages
// matched by PRESENCE_IGNORE (keep-alives), a new tab and server messages
// are not activity; a real client message is, and it brings the session
// back.
func TestActivityModeKeepAliveIsNotPresence(t *testing.T) {
	r := newRig(t, nil, nil, func(o *Options) { o.Defaults.Mode = ModeActivity })
	r.handover(1, "s1", "bot")
	r.client(1, userMsg)
	for i := 0; i < 4; i++ { // keep-alives every 30 s
		r.advance(30 * time.Second)
		r.client(1, keepAlive)
	}
	p := r.wantNotes(store.KindOffline)
	if p[0].Reason != "inactive" || !p[0].LastSeenAt.Equal(r.clk.Now().Add(-interval)) {
		t.Fatalf("%+v", p[0])
	}
	if v := r.view("s1"); v.State != store.Absent || v.Connections != 1 {
		t.Fatalf("absent while connected: %+v", v)
	}
	// More keep-alives and a new tab are not a return; a real message is.
	r.client(1, keepAlive)
	r.open(2, "s1", "bot")
	r.wantNotes(store.KindOffline)
	r.client(2, userMsg)
	checkOutbox(t, r.wantNotes(store.KindOffline, store.KindOnline))
	// Server messages are not the client's activity.
	for i := 0; i < 3; i++ {
		r.advance(interval / 2)
		r.server(1, userMsg)
	}
	r.wantNotes(store.KindOffline, store.KindOnline, store.KindOffline)
}

// TestOneLogLinePerTransitionWithoutContents: each transition logs one line
// with the session, bot, episode and reason, and no line carries message
// contents.
func TestOneLogLinePerTransitionWithoutContents(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	r := newRig(t, nil, nil, func(o *Options) { o.Log = zap.New(core) })
	r.handover(1, "s1", "bot") // handoff on
	r.client(1, userMsg)       // no transition
	r.close(1)                 //
	r.advance(interval)        // absent
	r.open(2, "s1", "bot")     // back
	r.server(2, endFrame)      // handoff off
	r.e.HTTPRequest(event.Request{Who: event.Identity{SessionID: "s1"}, Body: []byte(`{"text":"segredo"}`)})
	var got []string
	for _, l := range logs.All() {
		if !strings.HasPrefix(l.Message, "presence: client") && !strings.HasPrefix(l.Message, "presence: hand-over") {
			continue
		}
		f := l.ContextMap()
		if f["session"] != "s1" || f["bot"] != "bot" {
			t.Errorf("%q lacks ids: %v", l.Message, f)
		}
		if _, ok := f["episode"]; !ok {
			t.Errorf("%q lacks episode", l.Message)
		}
		if _, ok := f["reason"]; !ok {
			t.Errorf("%q lacks reason", l.Message)
		}
		got = append(got, l.Message)
	}
	want := []string{"presence: hand-over started", "presence: client absent", "presence: client back", "presence: hand-over ended"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("transition lines %q, want %q", got, want)
	}
	for _, l := range logs.All() {
		if s := fmt.Sprint(l.Message, l.ContextMap()); strings.Contains(s, "segredo") || strings.Contains(s, `"oi"`) || strings.Contains(s, "isTransfer") {
			t.Fatalf("message contents logged: %s", s)
		}
	}
}
