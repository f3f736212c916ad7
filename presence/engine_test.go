package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
)

// holdStore holds the first notes-less Commit (a flush) after arm() until
// release, to force a decision to race with a flush.
type holdStore struct {
	*store.Memory
	armed atomic.Bool
	held  chan struct{}
	gate  chan struct{}
}

func (h *holdStore) arm() {
	h.held, h.gate = make(chan struct{}), make(chan struct{})
	h.armed.Store(true)
}

func (h *holdStore) Commit(put []store.Session, forget []string, notes []store.Notification) error {
	if len(notes) == 0 && h.armed.CompareAndSwap(true, false) {
		close(h.held)
		<-h.gate
	}
	return h.Memory.Commit(put, forget, notes)
}

func TestFlushNeverOverwritesADecision(t *testing.T) {
	hs := &holdStore{Memory: store.NewMemory()}
	r := newRig(t, hs, nil, nil)
	r.handover(1, "s1", "bot")
	r.close(1) // dirty: conns 0, deadline
	hs.arm()
	flushed := make(chan error)
	go func() { flushed <- r.e.Flush() }()
	<-hs.held // the flush has its (present) snapshot and is writing it
	ticked := make(chan struct{})
	go func() {
		r.advance(interval) // decides absent and commits /expire
		close(ticked)
	}()
	select {
	case <-ticked:
		t.Fatal("the decision was committed while an older flush of the same session was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(hs.gate)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	<-ticked
	if s := r.stored("s1"); s.State != store.Absent || !s.ExpireSent || s.Episode != 1 {
		t.Fatalf("the flush's older copy won: %+v", s)
	}
	r.restart(time.Minute)
	r.advance(interval)
	r.wantNotes(store.KindOffline)
}

func TestCommitFailureIsRetriedInOrder(t *testing.T) {
	fs := &flakyStore{Memory: store.NewMemory()}
	r := newRig(t, fs, nil, nil)
	r.handover(1, "s1", "bot")
	r.close(1)
	fs.fail.Store(true)
	r.advance(interval)
	if v := r.view("s1"); v.State != store.Absent || !v.ExpireSent {
		t.Fatalf("decision not kept in memory: %+v", v)
	}
	if st := r.e.Stats(); st.UnsentNotifications != 1 || st.CommitErrors == 0 {
		t.Fatalf("stats %+v", st)
	}
	if err := r.e.SetHandoff("s2", "", true); err == nil {
		t.Fatal("SetHandoff hid a store failure")
	}
	r.advance(time.Minute)
	r.open(2, "s1", "bot") // the return queues behind the unsent /expire
	if err := r.e.Flush(); err == nil {
		t.Fatal("flush hid a store failure")
	}
	r.wantNotes()
	fs.fail.Store(false)
	wakes := r.wakes.Load()
	if err := r.e.Flush(); err != nil {
		t.Fatal(err)
	}
	p := r.wantNotes(store.KindOffline, store.KindOnline)
	checkOutbox(t, p)
	if r.wakes.Load() == wakes {
		t.Fatal("deliverer not woken after the retry")
	}
	if st := r.e.Stats(); st.UnsentNotifications != 0 {
		t.Fatalf("stats %+v", st)
	}
	if s := r.stored("s2"); !s.HandedOver {
		t.Fatalf("hand-over kept in memory was not written by the flush: %+v", s)
	}
}

func TestRunFiresAndFlushes(t *testing.T) {
	st := store.NewMemory()
	woke := make(chan struct{}, 10)
	o := defaultOptions(st, nil)
	o.Defaults.CheckInterval = 50 * time.Millisecond
	o.AllowAnyInterval = true
	o.FlushInterval = 10 * time.Millisecond
	o.Wake = func() { woke <- struct{}{} }
	e, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	e.ConnOpened(1, event.Open{Who: event.Identity{SessionID: "s1", BotID: "bot"}})
	e.Message(1, event.FromServer, event.Message{Prefix: transferFrame})
	start := time.Now()
	e.ConnClosed(1, event.CloseProbeTimeout)
	select {
	case <-woke:
	case <-time.After(5 * time.Second):
		t.Fatal("no absence within 5s")
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("absent after %v, before the interval", d)
	}
	if err := e.Run(ctx); err == nil {
		t.Fatal("a second Run was accepted")
	}
	e.HTTPRequest(event.Request{Who: event.Identity{SessionID: "s2"}}) // a non-decision change, written by the final flush
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	list, _ := st.Sessions()
	if len(list) != 2 {
		t.Fatalf("store has %d sessions after the final flush", len(list))
	}
	if p, _ := st.Pending(); len(p) != 1 || p[0].Kind != store.KindOffline {
		t.Fatalf("outbox %v", p)
	}
}

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

func TestViewJSON(t *testing.T) {
	r := newRig(t, nil, nil, nil)
	r.handover(1, "s1", "bot")
	b, err := json.Marshal(r.e.Sessions())
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{`"id":"s1"`, `"botId":"bot"`, `"handedOver":true`, `"connections":1`, `"checkInterval":"2m0s"`, `"mode":"connection"`, `"enabled":true`} {
		if !strings.Contains(s, want) {
			t.Errorf("%s lacks %s", s, want)
		}
	}
	var back Settings
	if err := json.Unmarshal([]byte(`{"enabled":true,"checkInterval":"3m","mode":"activity"}`), &back); err != nil ||
		back.CheckInterval != 3*time.Minute || back.Mode != ModeActivity || !back.Enabled {
		t.Fatalf("%+v %v", back, err)
	}
}

// TestConcurrentHammer drives opens, closes, messages, HTTP requests and
// hand-over changes for a few sessions from many goroutines while another
// ticks a fast clock and flushes. Run with -race. Afterwards the outbox
// must satisfy invariants 2 and 3 and the counts must balance.
func TestConcurrentHammer(t *testing.T) {
	clk := newClock()
	r := newRig(t, nil, clk, func(o *Options) {
		o.Bots = map[string]store.BotSettings{"act": {Mode: "activity"}}
		o.Detect = Detect{Rules: true, API: true}
	})
	e := r.e
	sessions := []string{"a", "b", "c", "d", "e"}
	bots := []string{"act", "conn"}
	var connID atomic.Uint64
	stop := make(chan struct{})
	var ticker sync.WaitGroup
	ticker.Add(1)
	go func() {
		defer ticker.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			e.Tick(clk.Advance(time.Duration(rand.IntN(40)) * time.Second))
			if i%7 == 0 {
				if err := e.Flush(); err != nil {
					t.Error(err)
				}
			}
			_ = e.Stats()
			_ = e.Sessions()
			runtime.Gosched()
		}
	}()
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for i := 0; i < 400; i++ {
				sid := sessions[rng.IntN(len(sessions))]
				bot := bots[int(sid[0])%2]
				id := event.ConnID(connID.Add(1))
				if rng.IntN(3) == 0 {
					e.ConnOpened(id, event.Open{Who: event.Identity{}})
					e.ConnIdentified(id, event.Identity{SessionID: sid, BotID: bot})
				} else {
					e.ConnOpened(id, event.Open{Who: event.Identity{SessionID: sid, BotID: bot}})
				}
				for k := rng.IntN(4); k > 0; k-- {
					switch rng.IntN(6) {
					case 0:
						e.Message(id, event.FromServer, event.Message{Prefix: transferFrame})
					case 1:
						e.Message(id, event.FromServer, event.Message{Prefix: endFrame})
					case 2:
						e.Message(id, event.FromClient, event.Message{Prefix: keepAlive})
					case 3:
						e.HTTPRequest(event.Request{Who: event.Identity{SessionID: sid}, Body: userMsg})
					case 4:
						_ = e.SetHandoff(sid, bot, rng.IntN(2) == 0)
					default:
						e.Message(id, event.FromClient, event.Message{Prefix: userMsg})
					}
					runtime.Gosched()
				}
				e.ConnClosed(id, event.CloseClientGone)
				if rng.IntN(8) == 0 { // deadlines fire while others open and close
					e.Tick(clk.Advance(time.Duration(rng.IntN(60)) * time.Second))
				}
			}
		}(g)
	}
	wg.Wait()
	close(stop)
	ticker.Wait()

	st := e.Stats()
	if st.Connections != 0 || st.UntrackedConnections != 0 {
		t.Fatalf("connections do not balance: %+v", st)
	}
	for _, id := range sessions {
		_ = e.SetHandoff(id, "", true)
	}
	r.advance(interval)
	r.advance(interval)
	p := r.notes()
	checkOutbox(t, p)
	var off int
	for _, n := range p {
		if n.Kind == store.KindOffline {
			off++
		}
	}
	if off == 0 || st.Transitions.Absent == 0 || st.Transitions.Present == 0 {
		t.Fatalf("the hammer decided nothing: %d offline, %+v", off, st)
	}
	// Memory and store agree after a flush.
	if err := e.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, v := range e.Sessions() {
		s := r.stored(v.ID)
		if s.State != v.State || s.Episode != v.Episode || s.ExpireSent != v.ExpireSent || s.HandedOver != v.HandedOver {
			t.Fatalf("store %+v, memory %+v", s, v.Session)
		}
		if v.State != store.Absent || !v.ExpireSent {
			t.Fatalf("%s not reported absent: %+v", v.ID, v)
		}
	}
	t.Logf("%d notifications, stats %+v", len(p), st)
}

func heapAlloc() uint64 {
	var m runtime.MemStats
	for i := 0; i < 3; i++ {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
