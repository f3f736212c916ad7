package presence

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
)

// request is an HTTP request of session id: it creates the session (present,
// seen now, no connection), as the WebChat's message posts do.
func (r *rig) request(id string) {
	r.e.HTTPRequest(event.Request{Who: event.Identity{SessionID: id, BotID: "bot"}})
}

func (r *rig) tracked(id string) bool {
	_, ok := r.e.Session(id)
	return ok
}

func (r *rig) storedIDs() map[string]bool {
	r.t.Helper()
	if err := r.e.Flush(); err != nil {
		r.t.Fatal(err)
	}
	list, err := r.st.Sessions()
	if err != nil {
		r.t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, s := range list {
		ids[s.ID] = true
	}
	return ids
}

// TestSessionCapShedsTheOldestIdleSessionFirst: at the cap, a new session
// sheds the session seen longest ago among those not handed over and without
// a live connection, in memory and in the store; connected and handed-over
// sessions are kept however old they are.
func TestSessionCapShedsTheOldestIdleSessionFirst(t *testing.T) {
	r := newRig(t, nil, nil, func(o *Options) { o.MaxSessions = 5 })
	r.handover(1, "handed", "bot") // oldest of all, but handed over
	r.close(1)
	r.clk.Advance(time.Second)
	r.open(2, "connected", "bot") // connected
	r.clk.Advance(time.Second)
	r.request("idle-old")
	r.clk.Advance(time.Second)
	r.request("idle-new")
	r.clk.Advance(time.Second)
	r.request("idle-old") // seen again: now the newest
	r.clk.Advance(time.Second)
	r.request("fifth")
	if got := r.e.Stats().Sessions; got != 5 {
		t.Fatalf("%d sessions before the cap", got)
	}

	r.request("new-1")
	if r.tracked("idle-new") {
		t.Fatal("the idle session seen longest ago was not shed")
	}
	for _, id := range []string{"handed", "connected", "idle-old", "fifth", "new-1"} {
		if !r.tracked(id) {
			t.Fatalf("%q was shed", id)
		}
	}
	if ids := r.storedIDs(); len(ids) != 5 || ids["idle-new"] {
		t.Fatalf("store holds %v; the shed session must be forgotten there too", ids)
	}
	r.request("new-2")
	if r.tracked("idle-old") || !r.tracked("new-2") {
		t.Fatal("the next oldest idle session was not shed")
	}
	st := r.e.Stats()
	if st.Sessions != 5 || st.SessionsShed != 2 || st.SessionsRefused != 0 {
		t.Fatalf("%+v", st)
	}
	// The handed-over session keeps its promise: its /expire is queued.
	r.advance(interval)
	r.wantNotes(store.KindOffline)
}

// TestSessionCapRefusesNewSessionsWhenEverySessionHoldsAPromise: when every
// tracked session is connected or handed over, a new session is not tracked
// (counted; its connection is an untracked one, the API says why) and the
// tracked ones keep every promise; once one can be shed, new sessions are
// tracked again.
func TestSessionCapRefusesNewSessionsWhenEverySessionHoldsAPromise(t *testing.T) {
	r := newRig(t, nil, nil, func(o *Options) { o.MaxSessions = 2 })
	r.open(1, "connected", "bot")
	r.handover(2, "handed", "bot")
	r.close(2)

	r.request("new-http")
	r.open(3, "new-conn", "bot")
	err := r.e.SetHandoff("new-api", "bot", true)
	if !errors.Is(err, ErrSessionCap) {
		t.Fatalf("SetHandoff on a new session at the cap: %v", err)
	}
	for _, id := range []string{"new-http", "new-conn", "new-api"} {
		if r.tracked(id) {
			t.Fatalf("%q tracked over the cap", id)
		}
	}
	st := r.e.Stats()
	if st.Sessions != 2 || st.SessionsRefused != 3 || st.SessionsShed != 0 || st.UntrackedConnections != 1 {
		t.Fatalf("%+v", st)
	}
	r.server(3, transferFrame) // a refused connection stays untracked for its life
	r.close(3)
	// A connection whose id comes in a frame is refused the same way.
	r.e.ConnOpened(4, event.Open{})
	r.e.ConnIdentified(4, event.Identity{SessionID: "new-frame", BotID: "bot"})
	if st := r.e.Stats(); st.UntrackedConnections != 1 || st.SessionsRefused != 4 || r.tracked("new-frame") {
		t.Fatalf("%+v", st)
	}
	r.close(4)
	if st := r.e.Stats(); st.UntrackedConnections != 0 || st.Sessions != 2 {
		t.Fatalf("%+v", st)
	}
	// Sessions already tracked carry on.
	r.advance(interval)
	r.wantNotes(store.KindOffline)
	r.request("handed")
	r.wantNotes(store.KindOffline, store.KindOnline)

	// The connected session leaves and is not handed over: it can be shed.
	r.close(1)
	r.clk.Advance(rescanAfter) // a fruitless scan is repeated only after this
	r.request("new-http")
	if !r.tracked("new-http") || r.tracked("connected") || !r.tracked("handed") {
		t.Fatalf("sessions: %v", r.e.Sessions())
	}
	if st := r.e.Stats(); st.SessionsShed != 1 || st.SessionsRefused != 4 {
		t.Fatalf("%+v", st)
	}
}

// TestSessionCapNeverShedsASessionWithAnUnsentNotification: a session whose
// notification the store has not taken yet is never shed, even when it is no
// longer handed over; once the notification is in the outbox it can be.
func TestSessionCapNeverShedsASessionWithAnUnsentNotification(t *testing.T) {
	fs := &flakyStore{Memory: store.NewMemory()}
	r := newRig(t, fs, nil, func(o *Options) { o.MaxSessions = 1 })
	r.handover(1, "s1", "bot")
	r.close(1)
	fs.fail.Store(true)
	r.advance(interval) // absent: its /expire fails to commit and waits in memory
	if err := r.e.SetHandoff("s1", "", false); err == nil {
		t.Fatal("hand-over end committed to a failing store")
	}
	if st := r.e.Stats(); st.UnsentNotifications != 1 || st.HandedOver != 0 {
		t.Fatalf("%+v", st)
	}
	r.request("s2")
	if !r.tracked("s1") || r.tracked("s2") {
		t.Fatal("a session with an unsent notification was shed")
	}
	fs.fail.Store(false)
	if err := r.e.Flush(); err != nil {
		t.Fatal(err)
	}
	r.wantNotes(store.KindOffline)
	r.clk.Advance(rescanAfter)
	r.request("s2")
	if r.tracked("s1") || !r.tracked("s2") {
		t.Fatal("once its notification is in the outbox, the session can be shed")
	}
	r.wantNotes(store.KindOffline) // shedding the session leaves the outbox alone
}

// TestSessionCapShedsInBatchesAndMakesRoomAfterARestartOverIt: shedding takes
// 1 % of the cap at a time (one walk of the table per batch), and a restart
// with more stored sessions than the cap keeps them all, then sheds as many
// as a new session needs.
func TestSessionCapShedsInBatchesAndMakesRoomAfterARestartOverIt(t *testing.T) {
	r := newRig(t, nil, nil, func(o *Options) { o.MaxSessions = 300 })
	for i := range 300 {
		r.request(fmt.Sprintf("s%03d", i))
		r.clk.Advance(time.Millisecond)
	}
	r.request("new")
	if st := r.e.Stats(); st.SessionsShed != 3 || st.Sessions != 298 {
		t.Fatalf("%+v", st)
	}
	for i := range 3 {
		if r.tracked(fmt.Sprintf("s%03d", i)) {
			t.Fatalf("s%03d, among the oldest, was not shed", i)
		}
	}
	if err := r.e.Flush(); err != nil {
		t.Fatal(err)
	}

	r.opts.MaxSessions = 100
	r.restart(time.Second)
	if st := r.e.Stats(); st.Sessions != 298 {
		t.Fatalf("a restart over the cap lost stored sessions: %+v", st)
	}
	r.request("after-restart")
	// 298 - 100 + 1 to make room for this one; the batch (1 % of 100) is that one.
	if st := r.e.Stats(); st.Sessions != 100 || st.SessionsShed != 199 || !r.tracked("after-restart") || !r.tracked("s299") {
		t.Fatalf("%+v", st)
	}
	if ids := r.storedIDs(); len(ids) != 100 {
		t.Fatalf("store holds %d sessions", len(ids))
	}
}

// TestSessionCapShedSessionsLeaveNoDeadlineBehind: a shed session's heap
// entries go with it, so the cap bounds the memory and not only the table.
func TestSessionCapShedSessionsLeaveNoDeadlineBehind(t *testing.T) {
	r := newRig(t, nil, nil, func(o *Options) { o.MaxSessions = 100 })
	for i := range 1000 {
		r.request(fmt.Sprintf("s%04d", i))
		r.clk.Advance(time.Millisecond)
	}
	if st := r.e.Stats(); st.Sessions > 100 || st.Deadlines > 2*st.Sessions {
		t.Fatalf("%+v", st)
	}
}

// TestSessionCapWarnsWhenReachedAndNotOnEveryRefusal: the first time the cap
// is reached a warning names it; a flood of refusals adds at most one line
// per retryDelay.
func TestSessionCapWarnsWhenReachedAndNotOnEveryRefusal(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	r := newRig(t, nil, nil, func(o *Options) { o.MaxSessions = 1; o.Log = zap.New(core) })
	r.open(1, "connected", "bot")
	for i := range 100 {
		r.request(fmt.Sprintf("flood-%d", i))
		r.clk.Advance(rescanAfter) // each refusal walks the table again
	}
	lines := logs.FilterMessageSnippet("session cap reached").All()
	if len(lines) == 0 || len(lines) > 2 {
		t.Fatalf("%d warnings for 100 refusals", len(lines))
	}
	if f := lines[0].ContextMap(); f["cap"] != int64(1) || f["refused_so_far"] == nil {
		t.Fatalf("warning fields %v", f)
	}
	if got := r.e.Stats().SessionsRefused; got != 100 {
		t.Fatalf("%d refused", got)
	}
}

// TestSessionCapHoldsUnderConcurrentNewSessions: many goroutines creating
// sessions at the cap, by request and by connection, never take the table
// over it, and the count the cap keeps is the table's.
func TestSessionCapHoldsUnderConcurrentNewSessions(t *testing.T) {
	r := newRig(t, nil, nil, func(o *Options) { o.MaxSessions = 50 })
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				id := fmt.Sprintf("g%d-%d", g, i)
				if i%3 == 0 {
					c := event.ConnID(g*1000 + i + 1)
					r.open(c, id, "bot")
					r.close(c)
				} else {
					r.request(id)
				}
				if n := r.e.cap.tracked.Load(); n > 50 {
					t.Errorf("%d sessions tracked", n)
					return
				}
			}
		}()
	}
	wg.Wait()
	st := r.e.Stats()
	if st.Sessions > 50 || int64(st.Sessions) != r.e.cap.tracked.Load() || st.UntrackedConnections != 0 {
		t.Fatalf("%+v, counted %d", st, r.e.cap.tracked.Load())
	}
	if st.SessionsShed == 0 || uint64(st.Sessions)+st.SessionsShed+st.SessionsRefused != 8*300 {
		t.Fatalf("%+v", st)
	}
}

// TestNoSessionCapByDefault: Options.MaxSessions 0 tracks every session.
func TestNoSessionCapByDefault(t *testing.T) {
	r := newRig(t, nil, nil, nil)
	for i := range 500 {
		r.request(fmt.Sprintf("s%d", i))
	}
	if st := r.e.Stats(); st.Sessions != 500 || st.SessionsShed != 0 || st.SessionsRefused != 0 {
		t.Fatalf("%+v", st)
	}
}
