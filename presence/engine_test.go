package presence

import (
	"context"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
)

// TestRunFiresAndFlushes: Run fires a deadline no earlier than due, refuses a
// second Run, and flushes once more when its context ends.
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
