package presence

import (
	"fmt"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
)

// checkOutbox asserts invariants 2 and 3 over an outbox: at most one
// offline and one online per (session, episode), and every online after an
// offline of the same episode in Seq order.
func checkOutbox(t *testing.T, p []store.Notification) {
	t.Helper()
	type key struct {
		s  string
		ep uint64
	}
	offline := map[key]uint64{} // seq
	online := map[key]bool{}
	var last uint64
	for _, n := range p {
		if n.Seq <= last {
			t.Fatalf("outbox not in Seq order at %d", n.Seq)
		}
		last = n.Seq
		k := key{n.SessionID, n.Episode}
		switch n.Kind {
		case store.KindOffline:
			if _, dup := offline[k]; dup {
				t.Fatalf("second /expire for session %s episode %d", n.SessionID, n.Episode)
			}
			offline[k] = n.Seq
		case store.KindOnline:
			seq, ok := offline[k]
			if !ok || seq >= n.Seq {
				t.Fatalf("return message for session %s episode %d without an earlier /expire of that episode", n.SessionID, n.Episode)
			}
			if online[k] {
				t.Fatalf("second return message for session %s episode %d", n.SessionID, n.Episode)
			}
			online[k] = true
		}
		if !strings.HasPrefix(n.ID, "msg_") || len(n.ID) < 20 {
			t.Fatalf("notification id %q", n.ID)
		}
	}
}

func TestInvariant1_ReconnectWithinIntervalNoNotification(t *testing.T) {
	r := newRig(t, nil, nil, nil)
	r.handover(1, "s1", "bot")
	r.close(1)
	r.advance(interval - time.Second)
	r.open(2, "s1", "bot") // reconnect just inside the interval
	r.advance(time.Second)
	r.advance(10 * interval)
	// A flapping network: many short disconnects, each shorter than the interval.
	c := event.ConnID(3)
	for i := 0; i < 20; i++ {
		r.close(c - 1)
		r.advance(interval - time.Millisecond)
		r.open(c, "s1", "bot")
		c++
		r.advance(interval)
	}
	r.wantNotes()
	if v := r.view("s1"); v.State != store.Present || v.Episode != 0 {
		t.Fatalf("state %v episode %d, want present, 0", v.State, v.Episode)
	}
	if r.wakes.Load() != 0 {
		t.Fatal("deliverer woken with nothing to send")
	}
}

func TestInvariant1_ActivityWithinIntervalNoNotification(t *testing.T) {
	r := newRig(t, nil, nil, func(o *Options) { o.Defaults.Mode = ModeActivity })
	r.handover(1, "s1", "bot")
	for i := 0; i < 10; i++ {
		r.advance(interval - time.Second)
		r.client(1, userMsg)
	}
	// HTTP requests (the seed's user messages) are activity too, connected or not.
	r.close(1)
	for i := 0; i < 10; i++ {
		r.advance(interval - time.Second)
		r.e.HTTPRequest(event.Request{Who: event.Identity{SessionID: "s1"}, Body: []byte(`{"sessionId":"s1","text":"oi"}`)})
	}
	r.wantNotes()
	// Silence for the whole interval is absence.
	r.advance(interval)
	n := r.wantNotes(store.KindOffline)
	if n[0].Reason != "inactive" {
		t.Fatalf("reason %q, want inactive", n[0].Reason)
	}
}

func TestInvariant1_HTTPRequestWithoutConnectionIsPresence(t *testing.T) {
	r := newRig(t, nil, nil, nil) // connection mode
	r.handover(1, "s1", "bot")
	r.close(1)
	for i := 0; i < 5; i++ {
		r.advance(interval - time.Second)
		r.e.HTTPRequest(event.Request{Who: event.Identity{SessionID: "s1"}}) // seen now: the deadline moves
	}
	r.wantNotes()
	r.advance(interval)
	r.wantNotes(store.KindOffline)
}

func TestInvariant2_AtMostOneExpirePerEpisode(t *testing.T) {
	r := newRig(t, nil, nil, nil)
	r.handover(1, "s1", "bot")
	r.open(2, "s1", "bot")
	r.open(3, "s1", "bot")
	// Closes of several tabs, then double ticks at and after the deadline.
	r.close(1)
	r.close(2)
	r.close(3)
	r.close(3) // a duplicate close is ignored
	r.advance(interval)
	r.e.Tick(r.clk.Now())
	r.e.Tick(r.clk.Now())
	r.advance(interval)
	r.advance(time.Hour)
	// A hand-over start repeated by rule and by API changes nothing.
	if err := r.e.SetHandoff("s1", "bot", true); err != nil {
		t.Fatal(err)
	}
	r.advance(time.Hour)
	p := r.wantNotes(store.KindOffline)
	if p[0].Episode != 1 || r.view("s1").Episode != 1 || !r.view("s1").ExpireSent {
		t.Fatalf("episode %d, view %+v", p[0].Episode, r.view("s1"))
	}
	// Hand-over ends and starts again during the same absence: the new agent
	// must hear it, as a new episode, never as a second /expire of episode 1.
	if err := r.e.SetHandoff("s1", "", false); err != nil {
		t.Fatal(err)
	}
	if err := r.e.SetHandoff("s1", "", true); err != nil {
		t.Fatal(err)
	}
	r.advance(time.Hour)
	p = r.wantNotes(store.KindOffline, store.KindOffline)
	if p[1].Episode != 2 {
		t.Fatalf("second /expire has episode %d, want 2", p[1].Episode)
	}
	// Return and a new absence: one more of each, then nothing however often we tick.
	r.open(4, "s1", "bot")
	r.close(4)
	for i := 0; i < 5; i++ {
		r.advance(interval)
	}
	p = r.wantNotes(store.KindOffline, store.KindOffline, store.KindOnline, store.KindOffline)
	checkOutbox(t, p)
}

func TestInvariant3_ReturnOnlyAfterItsExpire(t *testing.T) {
	t.Run("return follows its own expire", func(t *testing.T) {
		r := newRig(t, nil, nil, nil)
		r.handover(1, "s1", "bot")
		r.close(1)
		r.advance(interval)
		r.advance(30 * time.Second)
		r.open(2, "s1", "bot")
		p := r.wantNotes(store.KindOffline, store.KindOnline)
		off, on := p[0], p[1]
		if on.Episode != off.Episode || on.Seq <= off.Seq {
			t.Fatalf("online %+v does not follow offline %+v", on, off)
		}
		if !on.OfflineSince.Equal(off.DetectedAt) || on.Text != DefaultReturnMessage {
			t.Fatalf("online %+v", on)
		}
		if !on.DetectedAt.Equal(r.clk.Now()) {
			t.Fatalf("detectedAt %v, want %v", on.DetectedAt, r.clk.Now())
		}
		if v := r.view("s1"); v.ExpireSent || v.State != store.Present {
			t.Fatalf("after return: %+v", v)
		}
		checkOutbox(t, p)
	})
	t.Run("absence never reported: no return message", func(t *testing.T) {
		r := newRig(t, nil, nil, nil)
		r.open(1, "s1", "bot")
		r.close(1)
		r.advance(interval)
		r.open(2, "s1", "bot")
		r.wantNotes()
	})
	t.Run("hand-over ended during absence: no return message", func(t *testing.T) {
		r := newRig(t, nil, nil, nil)
		r.handover(1, "s1", "bot")
		r.close(1)
		r.advance(interval)
		if err := r.e.SetHandoff("s1", "", false); err != nil {
			t.Fatal(err)
		}
		r.open(2, "s1", "bot")
		r.wantNotes(store.KindOffline)
	})
	t.Run("expire sent late by hand-over start, then return", func(t *testing.T) {
		r := newRig(t, nil, nil, nil)
		r.open(1, "s1", "bot")
		r.close(1)
		r.advance(interval)
		r.wantNotes()
		r.advance(time.Minute)
		if err := r.e.SetHandoff("s1", "", true); err != nil {
			t.Fatal(err)
		}
		r.advance(time.Minute)
		r.open(2, "s1", "bot")
		p := r.wantNotes(store.KindOffline, store.KindOnline)
		checkOutbox(t, p)
	})
}

func TestInvariant4_NotHandedOverNoNotificationButTracked(t *testing.T) {
	r := newRig(t, nil, nil, nil)
	r.open(1, "s1", "bot")
	r.client(1, userMsg)
	r.server(1, userMsg)
	r.e.HTTPRequest(event.Request{Who: event.Identity{SessionID: "s2", BotID: "bot"}, Body: []byte(`{"text":"oi"}`)})
	r.close(1)
	r.advance(interval)
	for _, id := range []string{"s1", "s2"} {
		v := r.view(id)
		if v.State != store.Absent || v.Episode != 1 || v.HandedOver || v.ExpireSent || v.Reason != "disconnected" {
			t.Fatalf("%s: %+v", id, v)
		}
	}
	if st := r.e.Stats(); st.Absent != 2 || st.Sessions != 2 || st.Transitions.Absent != 2 {
		t.Fatalf("stats %+v", st)
	}
	r.open(2, "s1", "bot")
	if v := r.view("s1"); v.State != store.Present || v.Connections != 1 {
		t.Fatalf("after return: %+v", v)
	}
	if err := r.e.Flush(); err != nil {
		t.Fatal(err)
	}
	if s := r.stored("s1"); s.State != store.Present || s.Episode != 1 || s.Conns != 1 {
		t.Fatalf("stored %+v", s)
	}
	r.wantNotes()
	if r.wakes.Load() != 0 {
		t.Fatal("deliverer woken")
	}
}

// Invariant 5: nothing is sent to the client or the bot because of
// presence. The engine cannot: it sees the proxy only through
// event.Observer, whose methods return nothing, and it holds no connection,
// writer or HTTP client. Its only outputs are the store (the outbox, for the
// human-service platform) and Wake, which carries no data.
func TestInvariant5_ObserveOnly(t *testing.T) {
	obs := reflect.TypeFor[event.Observer]()
	for i := 0; i < obs.NumMethod(); i++ {
		m := obs.Method(i)
		if m.Type.NumOut() != 0 {
			t.Errorf("event.Observer.%s returns values: the proxy could be told to act", m.Name)
		}
		for j := 0; j < m.Type.NumIn(); j++ {
			if in := m.Type.In(j); in.Kind() == reflect.Func || in.Kind() == reflect.Chan || in.Kind() == reflect.Interface {
				t.Errorf("event.Observer.%s takes %v: a way back to the connection", m.Name, in)
			}
		}
	}

	writer := reflect.TypeFor[io.Writer]()
	netConn := reflect.TypeFor[net.Conn]()
	bad := func(ty reflect.Type) bool {
		return ty.Implements(writer) || ty.Implements(netConn) ||
			strings.HasPrefix(ty.PkgPath(), "net") ||
			(ty.Kind() == reflect.Pointer && strings.HasPrefix(ty.Elem().PkgPath(), "net"))
	}
	et := reflect.TypeFor[*Engine]()
	for i := 0; i < et.NumMethod(); i++ {
		m := et.Method(i)
		for j := 1; j < m.Type.NumIn(); j++ {
			if bad(m.Type.In(j)) {
				t.Errorf("Engine.%s takes %v", m.Name, m.Type.In(j))
			}
		}
	}
	ef := reflect.TypeFor[Engine]()
	for i := 0; i < ef.NumField(); i++ {
		f := ef.Field(i)
		if bad(f.Type) {
			t.Errorf("Engine.%s is a %v: a way to send", f.Name, f.Type)
		}
		if f.Type.Kind() == reflect.Func && f.Type != reflect.TypeFor[func()]() {
			t.Errorf("Engine.%s is a %v: only a data-less wake hook is allowed", f.Name, f.Type)
		}
	}
	ot := reflect.TypeFor[Options]()
	for i := 0; i < ot.NumField(); i++ {
		if f := ot.Field(i); f.Type.Kind() == reflect.Func && f.Name != "Wake" {
			t.Errorf("Options.%s is a callback: a way to act on traffic", f.Name)
		}
	}

	// A whole life cycle produces outbox entries for the human-service
	// platform and nothing else.
	r := newRig(t, nil, nil, nil)
	r.handover(1, "s1", "bot")
	r.close(1)
	r.advance(interval)
	r.open(2, "s1", "bot")
	for _, n := range r.notes() {
		if n.Kind != store.KindOffline && n.Kind != store.KindOnline {
			t.Fatalf("unexpected notification kind %q", n.Kind)
		}
	}
}

func TestInvariant6_RestartLosesNothing(t *testing.T) {
	t.Run("connected at the crash, never returns: one expire after New()+interval", func(t *testing.T) {
		r := newRig(t, nil, nil, nil)
		r.handover(1, "s1", "bot") // the hand-over commit persists Conns=1
		r.advance(time.Hour)       // connected a long time; the deadline must not count from before the crash
		r.restart(30 * time.Second)
		if v := r.view("s1"); v.Connections != 0 || v.State != store.Present || !v.HandedOver {
			t.Fatalf("recovered %+v", v)
		}
		if s := r.stored("s1"); s.Conns != 0 || s.Deadline.IsZero() {
			t.Fatalf("recovery not persisted: %+v", s)
		}
		r.advance(interval - time.Second)
		r.wantNotes()
		r.advance(time.Second)
		r.advance(interval)
		p := r.wantNotes(store.KindOffline)
		if r.wakes.Load() == 0 {
			t.Fatal("deliverer not woken")
		}
		// LastSeenAt is kept from before the crash.
		if !p[0].LastSeenAt.Before(p[0].DetectedAt.Add(-interval)) {
			t.Fatalf("lastSeenAt %v, detectedAt %v", p[0].LastSeenAt, p[0].DetectedAt)
		}
	})
	t.Run("client reconnects right after the restart: nothing", func(t *testing.T) {
		r := newRig(t, nil, nil, nil)
		r.handover(1, "s1", "bot")
		r.restart(5 * time.Second)
		r.advance(2 * time.Second)
		r.open(7, "s1", "bot")
		r.advance(10 * interval)
		r.wantNotes()
	})
	t.Run("deadline passed while down fires at start", func(t *testing.T) {
		r := newRig(t, nil, nil, nil)
		r.handover(1, "s1", "bot")
		r.close(1)
		if err := r.e.Flush(); err != nil { // the close and its deadline were written
			t.Fatal(err)
		}
		r.restart(interval + time.Minute)
		r.e.Tick(r.clk.Now())
		r.wantNotes(store.KindOffline)
	})
	t.Run("activity mode, connected at the crash: the outage is not inactivity", func(t *testing.T) {
		r := newRig(t, nil, nil, func(o *Options) { o.Defaults.Mode = ModeActivity })
		r.handover(1, "s1", "bot") // persisted: Conns=1, deadline = open + interval
		r.client(1, userMsg)
		r.restart(interval + time.Minute) // the persisted deadline passed while down
		r.e.Tick(r.clk.Now())
		r.wantNotes()
		r.advance(interval)
		p := r.wantNotes(store.KindOffline)
		if p[0].Reason != "inactive" {
			t.Fatalf("%+v", p[0])
		}
	})
	t.Run("committed notifications are not duplicated; the return still follows", func(t *testing.T) {
		r := newRig(t, nil, nil, nil)
		r.handover(1, "s1", "bot")
		r.close(1)
		r.advance(interval) // /expire committed, then kill -9
		r.restart(time.Minute)
		for i := 0; i < 5; i++ {
			r.advance(interval)
		}
		r.wantNotes(store.KindOffline)
		r.restart(time.Minute)
		r.open(2, "s1", "bot")
		p := r.wantNotes(store.KindOffline, store.KindOnline)
		checkOutbox(t, p)
	})
	t.Run("graceful stop: connections the sidecar closed still count; the client has a whole interval after the start", func(t *testing.T) {
		r := newRig(t, nil, nil, nil)
		r.handover(1, "s1", "bot")
		r.e.ConnClosed(1, event.CloseShutdown) // SIGTERM's 1001, not the client leaving
		if err := r.e.Flush(); err != nil {
			t.Fatal(err)
		}
		if s := r.stored("s1"); s.Conns != 1 || !s.Deadline.IsZero() {
			t.Fatalf("stored at stop %+v: the client did not leave", s)
		}
		r.restart(interval + time.Minute) // a downtime longer than the interval
		r.e.Tick(r.clk.Now())
		r.advance(interval - time.Second)
		r.open(2, "s1", "bot") // the client reconnects after the restart
		r.advance(10 * interval)
		r.wantNotes()
	})
	t.Run("graceful stop flushes; hand-over and episode survive", func(t *testing.T) {
		r := newRig(t, nil, nil, nil)
		r.handover(1, "s1", "bot")
		r.open(2, "s1", "bot")
		r.close(1)
		r.close(2)
		r.advance(interval)
		r.open(3, "s1", "bot")
		r.close(3)
		if err := r.e.Flush(); err != nil {
			t.Fatal(err)
		}
		r.restart(10 * time.Second)
		v := r.view("s1")
		if !v.HandedOver || v.Episode != 1 || v.State != store.Present || v.Deadline.IsZero() {
			t.Fatalf("recovered %+v", v)
		}
		r.advance(interval)
		p := r.wantNotes(store.KindOffline, store.KindOnline, store.KindOffline)
		if p[2].Episode != 2 {
			t.Fatalf("episode %d after restart, want 2", p[2].Episode)
		}
		checkOutbox(t, p)
	})
}

func TestSeveralTabs_CloseOneOfTwoNothing(t *testing.T) {
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

func TestActivityMode_KeepAliveIsNotPresence(t *testing.T) {
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

func TestPerBotSettings(t *testing.T) {
	yes, no := true, false
	clk := newClock()
	st := store.NewMemory()
	file := map[string]store.BotSettings{
		"slow":     {CheckInterval: "5m", ReturnMessage: "Cliente de volta"},
		"off":      {Enabled: &no},
		"blank":    {ReturnMessage: "   "},
		"activity": {Mode: "activity", Enabled: &yes},
	}
	r := newRig(t, st, clk, func(o *Options) { o.Bots = file })
	for i, bot := range []string{"slow", "off", "blank", "activity", ""} {
		c := event.ConnID(i + 1)
		r.handover(c, "s-"+bot, bot)
		if bot != "activity" {
			r.close(c)
		}
	}
	r.advance(interval)
	p := r.notes()
	got := map[string]bool{}
	for _, n := range p {
		got[n.SessionID] = true
	}
	if len(p) != 3 || !got["s-blank"] || !got["s-activity"] || !got["s-"] {
		t.Fatalf("after 2m: %v", p)
	}
	if v := r.view("s-off"); v.State != store.Absent || v.ExpireSent {
		t.Fatalf("disabled bot: state still tracked, no notification: %+v", v)
	}
	r.advance(3 * time.Minute)
	p = r.notes()
	if len(p) != 4 || p[3].SessionID != "s-slow" {
		t.Fatalf("slow bot after 5m: %v", kindsOf(p))
	}
	for i, bot := range []string{"slow", "off", "blank"} {
		r.open(event.ConnID(10+i), "s-"+bot, bot)
	}
	p = r.notes()
	texts := map[string]string{}
	for _, n := range p {
		if n.Kind == store.KindOnline {
			texts[n.SessionID] = n.Text
		}
	}
	if len(texts) != 2 || texts["s-slow"] != "Cliente de volta" || texts["s-blank"] != DefaultReturnMessage {
		t.Fatalf("return texts %v", texts)
	}

	// Run-time change: merged over the file entry, validated, persisted.
	if _, err := r.e.PutBotSettings("slow", store.BotSettings{CheckInterval: "30s"}); err == nil ||
		!strings.Contains(err.Error(), `checkInterval "30s" is outside 1m0s–10m0s`) {
		t.Fatalf("invalid change accepted: %v", err)
	}
	set, err := r.e.PutBotSettings("slow", store.BotSettings{CheckInterval: "1m"})
	if err != nil {
		t.Fatal(err)
	}
	if set.CheckInterval != time.Minute || set.ReturnMessage != "Cliente de volta" || !set.Enabled {
		t.Fatalf("merged settings %+v", set)
	}
	if got := r.e.BotSettings("slow"); got != set {
		t.Fatalf("BotSettings %+v", got)
	}
	if b, _ := st.Bots(); b["slow"].CheckInterval != "1m" || b["slow"].ReturnMessage != "" {
		t.Fatalf("stored %+v: only the run-time change is stored, the file keeps its own", b)
	}
	r.close(10)
	r.advance(time.Minute)
	if p := r.notes(); p[len(p)-1].SessionID != "s-slow" || p[len(p)-1].Kind != store.KindOffline {
		t.Fatal("new interval not applied")
	}
	// A new engine: the run-time change wins over the file, field by field;
	// an edit of the file shows in the fields the API did not set.
	file["slow"] = store.BotSettings{CheckInterval: "5m", ReturnMessage: "Voltou (editado)"}
	r.restart(0)
	if got := r.e.BotSettings("slow"); got.CheckInterval != time.Minute || got.ReturnMessage != "Voltou (editado)" {
		t.Fatalf("after restart %+v", got)
	}
	// Clearing a run-time change falls back to the file, then the environment.
	if got, err := r.e.PutBotSettings("slow", store.BotSettings{}, "checkInterval"); err != nil || got.CheckInterval != 5*time.Minute {
		t.Fatalf("cleared interval: %+v %v", got, err)
	}
	if _, err := r.e.PutBotSettings("b2", store.BotSettings{ReturnMessage: "Custom"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.e.PutBotSettings("b2", store.BotSettings{}, "returnMessage"); got.ReturnText() != DefaultReturnMessage {
		t.Fatalf("cleared return message: %+v", got)
	}
	if _, err := r.e.PutBotSettings("b2", store.BotSettings{}, "colour"); err == nil {
		t.Fatal("an unknown field to clear must be refused")
	}
	if got := r.e.BotSettings("unknown"); got.CheckInterval != interval || got.Mode != ModeConnection {
		t.Fatalf("defaults %+v", got)
	}
}

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

func TestSettingsValidation(t *testing.T) {
	cases := []struct {
		s        Settings
		allowAny bool
		want     string
	}{
		{Settings{CheckInterval: 30 * time.Second}, false, `checkInterval "30s" is outside 1m0s–10m0s`},
		{Settings{CheckInterval: 11 * time.Minute}, false, `checkInterval "11m0s" is outside 1m0s–10m0s`},
		{Settings{CheckInterval: 30 * time.Second}, true, ""},
		{Settings{CheckInterval: 0}, true, `checkInterval "0s" must be a positive duration`},
		{Settings{CheckInterval: time.Minute, Mode: "tcp"}, false, `mode "tcp" is not one of connection, activity`},
		{Settings{CheckInterval: 10 * time.Minute, Mode: ModeActivity}, false, ""},
		{Settings{CheckInterval: time.Minute}, false, ""},
	}
	for _, c := range cases {
		err := ValidateSettings(c.s, c.allowAny)
		if got := fmt.Sprint(err); (c.want == "" && err != nil) || (c.want != "" && got != c.want) {
			t.Errorf("%+v allowAny=%v: %v, want %q", c.s, c.allowAny, err, c.want)
		}
	}
	def := Settings{Enabled: true, CheckInterval: interval}
	if _, err := Resolve(def, store.BotSettings{CheckInterval: "soon"}, false); err == nil || !strings.Contains(err.Error(), `checkInterval "soon"`) {
		t.Errorf("bad duration: %v", err)
	}
	got, err := Resolve(def, store.BotSettings{Mode: " Activity ", ReturnMessage: "x"}, false)
	if err != nil || got.Mode != ModeActivity || got.ReturnMessage != "x" || got.CheckInterval != interval || !got.Enabled {
		t.Errorf("Resolve = %+v, %v", got, err)
	}
	if _, err := New(Options{Store: store.NewMemory(), Defaults: Settings{CheckInterval: time.Second}}); err == nil ||
		!strings.Contains(err.Error(), `checkInterval "1s" is outside`) {
		t.Errorf("New accepted a bad default: %v", err)
	}
}

func TestLoadBotsFile(t *testing.T) {
	def := Settings{Enabled: true, CheckInterval: interval}
	write := func(body string) string {
		p := t.TempDir() + "/bots.json"
		if err := writeFile(p, body); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write(`{"botA":{"enabled":true,"checkInterval":"3m","returnMessage":"voltou","mode":"activity"},"botB":{"enabled":false}}`)
	m, err := LoadBotsFile(good, def, false)
	if err != nil || len(m) != 2 || m["botA"].CheckInterval != "3m" || *m["botB"].Enabled {
		t.Fatalf("%v %v", m, err)
	}
	for body, want := range map[string]string{
		`{"botA":{"checkInterval":"30s"}}`:         `bot "botA": checkInterval "30s" is outside 1m0s–10m0s`,
		`{"botA":{"mode":"push"}}`:                 `bot "botA": mode "push" is not one of connection, activity`,
		`{"botA":{"enabled":"yes"}}`:               `bot "botA": enabled has the wrong type`,
		`{"botA":{"checkInterva":"3m"}}`:           `bot "botA": json: unknown field "checkInterva"`,
		`["botA"]`:                                 `not a JSON object`,
		`{"ok":{},"botZ":{"checkInterval":"99m"}}`: `bot "botZ": checkInterval "1h39m0s" is outside`,
	} {
		_, err := LoadBotsFile(write(body), def, false)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", body, err, want)
		}
	}
	if m, err := LoadBotsFile(write(`{"botA":{"checkInterval":"30s"}}`), def, true); err != nil || len(m) != 1 {
		t.Errorf("allowAny: %v", err)
	}
	if m, err := LoadBotsFile("", def, false); m != nil || err != nil {
		t.Errorf("no file: %v %v", m, err)
	}
	if _, err := LoadBotsFile(t.TempDir()+"/missing.json", def, false); err == nil {
		t.Error("missing file accepted")
	}
}
