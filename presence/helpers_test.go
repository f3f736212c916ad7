package presence

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/presence/rules"
	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

const interval = 2 * time.Minute

// seed platform frames
var (
	transferFrame = []byte(`{"action":"end_conversation","data":{"isTransfer":true}}`)
	endFrame      = []byte(`{"action":"end_conversation","data":{}}`)
	keepAlive     = []byte(`{"action":"keep_alive","data":{}}`)
	userMsg       = []byte(`{"action":"message","data":{"text":"oi"}}`)
)

type rig struct {
	t     testing.TB
	e     *Engine
	st    store.Store
	clk   *fakeClock
	wakes atomic.Int64
	opts  Options
}

func defaultOptions(st store.Store, clk Clock) Options {
	return Options{
		Defaults:     Settings{Enabled: true, CheckInterval: interval, Mode: ModeConnection},
		Store:        st,
		Clock:        clk,
		Detect:       Detect{Rules: true, API: true},
		HandoffStart: rules.MustParse("server:data.isTransfer=true", event.FromClient),
		HandoffEnd:   rules.MustParse("server:action=end_conversation&data.isTransfer!=true", event.FromClient),
		Ignore:       rules.MustParse("action=keep_alive", event.FromClient),
	}
}

// newRig builds an engine over st (a fresh memory store when nil); mod may
// change the options first.
func newRig(t testing.TB, st store.Store, clk *fakeClock, mod func(*Options)) *rig {
	t.Helper()
	if st == nil {
		st = store.NewMemory()
	}
	if clk == nil {
		clk = newClock()
	}
	r := &rig{t: t, st: st, clk: clk}
	o := defaultOptions(st, clk)
	o.Wake = func() { r.wakes.Add(1) }
	if mod != nil {
		mod(&o)
	}
	r.opts = o
	e, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r.e = e
	return r
}

// restart abandons the engine as a kill -9 would (no flush) and builds a new
// one over the same store.
func (r *rig) restart(down time.Duration) {
	r.t.Helper()
	r.clk.Advance(down)
	e, err := New(r.opts)
	if err != nil {
		r.t.Fatalf("New after restart: %v", err)
	}
	r.e = e
}

func (r *rig) advance(d time.Duration) {
	r.e.Tick(r.clk.Advance(d))
}

func (r *rig) notes() []store.Notification {
	r.t.Helper()
	p, err := r.st.Pending()
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

func (r *rig) wantNotes(kinds ...store.Kind) []store.Notification {
	r.t.Helper()
	p := r.notes()
	if len(p) != len(kinds) {
		r.t.Fatalf("outbox has %d notifications %v, want %v", len(p), kindsOf(p), kinds)
	}
	for i, k := range kinds {
		if p[i].Kind != k {
			r.t.Fatalf("outbox = %v, want %v", kindsOf(p), kinds)
		}
	}
	return p
}

func kindsOf(p []store.Notification) []store.Kind {
	var out []store.Kind
	for _, n := range p {
		out = append(out, n.Kind)
	}
	return out
}

func (r *rig) view(id string) View {
	r.t.Helper()
	v, ok := r.e.Session(id)
	if !ok {
		r.t.Fatalf("session %q not tracked", id)
	}
	return v
}

func (r *rig) stored(id string) store.Session {
	r.t.Helper()
	list, err := r.st.Sessions()
	if err != nil {
		r.t.Fatal(err)
	}
	for _, s := range list {
		if s.ID == id {
			return s
		}
	}
	r.t.Fatalf("session %q not in the store", id)
	return store.Session{}
}

func (r *rig) open(c event.ConnID, session, bot string) {
	r.e.ConnOpened(c, event.Open{Who: event.Identity{SessionID: session, BotID: bot}})
}

func (r *rig) close(c event.ConnID) { r.e.ConnClosed(c, event.CloseClientGone) }

func (r *rig) server(c event.ConnID, frame []byte) {
	r.e.Message(c, event.FromServer, event.Message{Text: true, Size: int64(len(frame)), Prefix: frame})
}

func (r *rig) client(c event.ConnID, frame []byte) {
	r.e.Message(c, event.FromClient, event.Message{Text: true, Size: int64(len(frame)), Prefix: frame})
}

// handover opens a connection and hands the session over through the seed's transfer frame.
func (r *rig) handover(c event.ConnID, session, bot string) {
	r.open(c, session, bot)
	r.server(c, transferFrame)
	if !r.view(session).HandedOver {
		r.t.Fatalf("session %q not handed over", session)
	}
}

// flakyStore fails Commit while fail is set, and can hold a Commit that
// removes or only puts sessions (a flush) until released.
type flakyStore struct {
	*store.Memory
	fail    atomic.Bool
	commits atomic.Int64
	hold    chan chan struct{} // when set, each notes-less Commit sends a gate and waits for it
}

func (f *flakyStore) Commit(put []store.Session, forget []string, notes []store.Notification) error {
	f.commits.Add(1)
	if f.fail.Load() {
		return errors.New("disk full")
	}
	if f.hold != nil && len(notes) == 0 {
		gate := make(chan struct{})
		f.hold <- gate
		<-gate
	}
	return f.Memory.Commit(put, forget, notes)
}

// nopStore keeps nothing: for measuring the engine's own memory.
type nopStore struct{ *store.Memory }

func (nopStore) Commit([]store.Session, []string, []store.Notification) error { return nil }

func writeFile(path, body string) error { return os.WriteFile(path, []byte(body), 0o600) }

func mustRules(t *testing.T, src string) rules.Set {
	t.Helper()
	s, err := rules.Parse(src, event.FromClient)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// heapAlloc is the live heap after garbage collection, for memory figures.
func heapAlloc() uint64 {
	var m runtime.MemStats
	for i := 0; i < 3; i++ {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
