package presence

import (
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

// TestInvariant1ReconnectWithinIntervalNotifiesNothing pins invariant 1
// (docs/ARCHITECTURE.md, "Presence invariants"): a reconnect within the interval, once or many
// times in a row (a flapping network), produces no notification and wakes
// no deliverer.
func TestInvariant1ReconnectWithinIntervalNotifiesNothing(t *testing.T) {
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

// TestInvariant1ActivityWithinIntervalNotifiesNothing pins invariant 1 in
// activity mode: client messages, and HTTP requests with or without a
// connection, less than an interval apart produce no notification; a whole
// interval of silence is an absence (reason "inactive").
func TestInvariant1ActivityWithinIntervalNotifiesNothing(t *testing.T) {
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

// TestInvariant1HTTPRequestWithoutConnectionIsPresence pins invariant 1 in
// connection mode: an HTTP request of a session without a connection is
// presence and moves its deadline.
func TestInvariant1HTTPRequestWithoutConnectionIsPresence(t *testing.T) {
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

// TestInvariant2AtMostOneExpirePerEpisode pins invariant 2 (docs/ARCHITECTURE.md, "Presence invariants"):
// closing several tabs, ticking twice and starting the hand-over again give
// one /expire per episode; a hand-over that ends and starts again during one
// absence is reported as a new episode, never as a second /expire.
func TestInvariant2AtMostOneExpirePerEpisode(t *testing.T) {
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

// TestInvariant3ReturnMessageOnlyAfterItsExpire pins invariant 3
// (docs/ARCHITECTURE.md, "Presence invariants"): a return message is queued only after the
// /expire of the same episode, so none follows an absence that was never
// reported or whose hand-over ended; an /expire sent late by a hand-over
// start is followed by its return message.
func TestInvariant3ReturnMessageOnlyAfterItsExpire(t *testing.T) {
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

// TestInvariant4NotHandedOverNotifiesNothingButIsTracked pins invariant 4
// (docs/ARCHITECTURE.md, "Presence invariants"): sessions not handed over produce no
// notification and wake nothing, while their state is tracked, counted and
// stored.
func TestInvariant4NotHandedOverNotifiesNothingButIsTracked(t *testing.T) {
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

// TestInvariant5NothingSentToClientOrBot pins invariant 5
// (docs/ARCHITECTURE.md, "Presence invariants"): nothing is sent to the client or the bot
// because of presence. The engine cannot: it sees the proxy only through
// event.Observer, whose methods return nothing, and it holds no connection,
// writer or HTTP client. Its only outputs are the store (the outbox, for the
// human-service platform) and Wake, which carries no data.
func TestInvariant5NothingSentToClientOrBot(t *testing.T) {
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
	// Engine's fields, and the fields of this package's structs it groups
	// them in (arrays of them included), however deep.
	ef := reflect.TypeFor[Engine]()
	var fields func(prefix string, st reflect.Type)
	fields = func(prefix string, st reflect.Type) {
		for i := 0; i < st.NumField(); i++ {
			f := st.Field(i)
			name := prefix + f.Name
			if bad(f.Type) {
				t.Errorf("Engine.%s is a %v: a way to send", name, f.Type)
			}
			if f.Type.Kind() == reflect.Func && f.Type != reflect.TypeFor[func()]() {
				t.Errorf("Engine.%s is a %v: only a data-less wake hook is allowed", name, f.Type)
			}
			ft := f.Type
			if ft.Kind() == reflect.Array {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft.PkgPath() == ef.PkgPath() {
				fields(name+".", ft)
			}
		}
	}
	fields("", ef)
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

// TestInvariant6RestartLosesNoDecisionOrNotification pins invariant 6
// (docs/ARCHITECTURE.md, "Presence invariants"): after a kill -9 (restart without a flush)
// or a graceful stop, no decision and no notification is lost or repeated,
// and a client connected at the stop has a whole interval after the start.
func TestInvariant6RestartLosesNoDecisionOrNotification(t *testing.T) {
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

// TestInvariant7ClientRetryingThroughOutageIsPresent pins invariant 7
// (docs/ARCHITECTURE.md, "Presence invariants"): the upstream goes away and
// closes the client's socket; the client retries its handshake every second,
// each attempt failing (UpgradeFailed: a 502, or the upstream's refusal),
// for five intervals: no notification. It stops retrying: absent one
// interval after its last attempt, one /expire. A failed attempt of an
// absent session is its return. Both modes alike: during an outage the
// client cannot show activity either.
func TestInvariant7ClientRetryingThroughOutageIsPresent(t *testing.T) {
	for _, mode := range []Mode{ModeConnection, ModeActivity} {
		t.Run(string(mode), func(t *testing.T) {
			r := newRig(t, nil, nil, func(o *Options) { o.Defaults.Mode = mode })
			r.handover(1, "s1", "bot")
			r.e.ConnClosed(1, event.CloseUpstreamGone)
			attempt := event.Request{Who: event.Identity{SessionID: "s1", BotID: "bot"}}
			for range int(5 * interval / time.Second) {
				r.advance(time.Second)
				r.e.UpgradeFailed(attempt)
			}
			r.wantNotes()
			if v := r.view("s1"); v.State != store.Present {
				t.Fatalf("state %v while retrying, want present", v.State)
			}
			last := r.clk.Now()
			r.advance(interval - time.Second)
			r.wantNotes()
			r.advance(time.Second)
			p := r.wantNotes(store.KindOffline)
			if !p[0].LastSeenAt.Equal(last) {
				t.Fatalf("lastSeenAt %v, want the last attempt %v", p[0].LastSeenAt, last)
			}
			r.advance(10 * interval)
			r.wantNotes(store.KindOffline)
			r.e.UpgradeFailed(attempt)
			checkOutbox(t, r.wantNotes(store.KindOffline, store.KindOnline))
		})
	}
}
