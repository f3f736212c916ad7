package timeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
	"unsafe"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

// memBackend is a Backend in a map, failing while fail is set.
type memBackend struct {
	mu    sync.Mutex
	fail  bool
	byID  map[string]map[string]Event
	saves int
}

func (b *memBackend) Name() string { return "test" }
func (b *memBackend) Save(_ context.Context, batch map[string][]Event) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail {
		return errors.New("store down")
	}
	b.saves++
	if b.byID == nil {
		b.byID = map[string]map[string]Event{}
	}
	for sid, evs := range batch {
		if b.byID[sid] == nil {
			b.byID[sid] = map[string]Event{}
		}
		for _, e := range evs {
			b.byID[sid][e.ID] = e
		}
	}
	return nil
}
func (b *memBackend) Load(_ context.Context, sid string) ([]Event, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail {
		return nil, errors.New("store down")
	}
	var out []Event
	for _, e := range b.byID[sid] {
		out = append(out, e)
	}
	return Merge(0, out), nil
}

func kinds(evs []Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, fmt.Sprintf("%s/%d", e.Kind, e.Conn))
	}
	return out
}

func TestPerSessionBoundDropsOldestAndCounts(t *testing.T) {
	clk := newClock()
	r := New(Options{PerSession: 4, Total: 100, Now: clk.Now})
	for i := 1; i <= 6; i++ {
		r.Add("s1", Event{Kind: ConnOpened, Conn: uint64(i)})
		clk.Add(time.Second)
	}
	h := r.History(context.Background(), "s1")
	if got, want := fmt.Sprint(kinds(h.Events)), "[conn.opened/3 conn.opened/4 conn.opened/5 conn.opened/6]"; got != want {
		t.Fatalf("events %s, want %s", got, want)
	}
	st := r.Stats()
	if st.Events != 4 || st.Dropped.PerSession != 2 || st.Dropped.Total != 0 {
		t.Fatalf("stats %+v, want 4 events, 2 dropped per session", st)
	}
	if h.Bounds != (Bounds{PerSession: 4, Total: 100}) || h.Kept != "memory" {
		t.Fatalf("bounds %+v kept %q", h.Bounds, h.Kept)
	}
}

func TestTotalBoundDropsGloballyOldestFirst(t *testing.T) {
	clk := newClock()
	r := New(Options{PerSession: 10, Total: 5, Now: clk.Now})
	// a1 a2 b1 a3 b2, then c1 c2: the oldest two (a1, a2) go.
	for _, x := range []struct {
		sid  string
		conn uint64
	}{{"a", 1}, {"a", 2}, {"b", 1}, {"a", 3}, {"b", 2}, {"c", 1}, {"c", 2}} {
		r.Add(x.sid, Event{Kind: ConnOpened, Conn: x.conn})
		clk.Add(time.Second)
	}
	ctx := context.Background()
	if got := fmt.Sprint(kinds(r.History(ctx, "a").Events)); got != "[conn.opened/3]" {
		t.Fatalf("a: %s", got)
	}
	if got := fmt.Sprint(kinds(r.History(ctx, "b").Events)); got != "[conn.opened/1 conn.opened/2]" {
		t.Fatalf("b: %s", got)
	}
	// b's events go next, then a's last: a session left with none is gone.
	for i := 3; i <= 5; i++ {
		r.Add("c", Event{Kind: ConnOpened, Conn: uint64(i)})
	}
	st := r.Stats()
	if st.Events != 5 || st.Sessions != 1 || st.Dropped.Total != 5 {
		t.Fatalf("stats %+v, want 5 events of one session, 5 dropped for the total", st)
	}
}

func TestTotalBoundSkipsEventsTheSessionBoundDropped(t *testing.T) {
	clk := newClock()
	r := New(Options{PerSession: 2, Total: 3, Now: clk.Now})
	r.Add("a", Event{Kind: ConnOpened, Conn: 1})
	r.Add("a", Event{Kind: ConnOpened, Conn: 2})
	r.Add("a", Event{Kind: ConnOpened, Conn: 3}) // drops a1 (per session)
	r.Add("b", Event{Kind: ConnOpened, Conn: 1})
	r.Add("b", Event{Kind: ConnOpened, Conn: 2}) // over the total: a2 goes, not the stale a1
	ctx := context.Background()
	if got := fmt.Sprint(kinds(r.History(ctx, "a").Events)); got != "[conn.opened/3]" {
		t.Fatalf("a: %s", got)
	}
	st := r.Stats()
	if st.Events != 3 || st.Dropped.PerSession != 1 || st.Dropped.Total != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOrderStaysBounded(t *testing.T) {
	r := New(Options{PerSession: 4, Total: 16, Now: newClock().Now})
	for i := range 100_000 {
		r.Add(fmt.Sprint("s", i%3), Event{Kind: ConnOpened})
	}
	r.mu.Lock()
	n := len(r.order) - r.head
	c := cap(r.order)
	r.mu.Unlock()
	if n > 2*16+4+1 || c > 20_000 {
		t.Fatalf("order holds %d refs (capacity %d) for 12 events", n, c)
	}
}

func TestActivityIsSummarised(t *testing.T) {
	clk := newClock()
	r := New(Options{Now: clk.Now})
	r.Add("s", Event{Kind: ConnOpened, Conn: 1})
	t1 := clk.Now()
	for range 12 {
		clk.Add(time.Second)
		r.Activity("s", false)
	}
	r.Activity("s", true)
	t2 := clk.Now()
	clk.Add(2 * ActivityGap) // a pause: a new summary
	r.Activity("s", false)
	clk.Add(time.Second)
	r.Add("s", Event{Kind: ConnClosed, Conn: 1, Reason: "client_gone"})
	r.Activity("s", true) // after another event: a new summary
	evs := r.History(context.Background(), "s").Events
	if got := fmt.Sprint(kinds(evs)); got != "[conn.opened/1 activity/0 activity/0 conn.closed/1 activity/0]" {
		t.Fatalf("events %s", got)
	}
	a := evs[1]
	if a.Messages != 12 || a.Requests != 1 || !a.At.Equal(t1.Add(time.Second)) || !a.Until.Equal(t2) {
		t.Fatalf("first summary %+v (until %v), want 12 messages and 1 request from %v to %v", a, *a.Until, t1.Add(time.Second), t2)
	}
	if evs[2].Messages != 1 || evs[4].Requests != 1 {
		t.Fatalf("later summaries %+v %+v", evs[2], evs[4])
	}
}

func TestActivitySpanIsBounded(t *testing.T) {
	clk := newClock()
	r := New(Options{Now: clk.Now})
	for range 40 { // 20 minutes of a message every 30 s
		r.Activity("s", false)
		clk.Add(30 * time.Second)
	}
	evs := r.History(context.Background(), "s").Events
	if len(evs) != 2 || evs[0].Messages+evs[1].Messages != 40 {
		t.Fatalf("%d summaries %v, want 2 of 40 messages in all", len(evs), kinds(evs))
	}
}

func TestFlushWritesChangesAndGrownSummaries(t *testing.T) {
	clk := newClock()
	b := &memBackend{}
	r := New(Options{Now: clk.Now, Backend: b, Replica: "r1"})
	ctx := context.Background()
	r.Add("s", Event{Kind: ConnOpened, Conn: 7})
	r.Activity("s", false)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	r.Activity("s", false) // grows the saved summary
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil || b.saves != 2 {
		t.Fatalf("an idle flush wrote (%d saves, %v)", b.saves, err)
	}
	// What a new process reads from the backend alone.
	r2 := New(Options{Now: clk.Now, Backend: b})
	h := r2.History(ctx, "s")
	if got := fmt.Sprint(kinds(h.Events)); got != "[conn.opened/7 activity/0]" || h.Events[1].Messages != 2 || h.Events[0].Replica != "r1" {
		t.Fatalf("stored history %s %+v", got, h.Events)
	}
	if h.Kept != "memory+test" {
		t.Fatalf("kept %q", h.Kept)
	}
}

func TestStoreFailureDropsAndCountsButKeepsMemory(t *testing.T) {
	clk := newClock()
	b := &memBackend{fail: true}
	r := New(Options{Now: clk.Now, Backend: b})
	ctx := context.Background()
	r.Add("s", Event{Kind: ConnOpened, Conn: 1})
	r.Add("s", Event{Kind: ConnClosed, Conn: 1})
	if err := r.Flush(ctx); err == nil {
		t.Fatal("a failing backend's flush returned no error")
	}
	h := r.History(ctx, "s")
	if len(h.Events) != 2 || h.StoreError == "" {
		t.Fatalf("history with the store down: %+v", h)
	}
	if st := r.Stats(); st.Dropped.Store != 2 || st.StoreErrors != 2 {
		t.Fatalf("stats %+v, want 2 dropped by the store, 2 errors (a write, a read)", st)
	}
	b.fail = false
	r.Add("s", Event{Kind: ConnOpened, Conn: 2})
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(b.byID["s"]); n != 1 {
		t.Fatalf("after recovery the backend holds %d events, want the 1 new one (the failed ones were dropped)", n)
	}
}

func TestMergePrefersLaterListsAndOrdersByTime(t *testing.T) {
	t0 := time.Unix(100, 0)
	a := []Event{{ID: "x-1", At: t0, Messages: 1}, {ID: "y-1", At: t0.Add(2 * time.Second)}}
	b := []Event{{ID: "x-1", At: t0, Messages: 5}, {ID: "x-2", At: t0.Add(time.Second)}}
	got := Merge(2, a, b)
	if len(got) != 2 || got[0].ID != "x-2" || got[1].ID != "y-1" {
		t.Fatalf("merge kept %v", got)
	}
	if all := Merge(0, a, b); all[0].Messages != 5 {
		t.Fatalf("the later copy did not win: %+v", all[0])
	}
}

func TestNilRecorderIsANop(t *testing.T) {
	var r *Recorder
	r.Add("s", Event{Kind: ConnOpened})
	r.Activity("s", false)
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h := r.History(context.Background(), "s"); len(h.Events) != 0 {
		t.Fatal(h)
	}
}

// TestEventSize pins the figure DefaultTotal's comment states.
func TestEventSize(t *testing.T) {
	if s := unsafe.Sizeof(Event{}); s > 240 {
		t.Fatalf("Event is %d bytes; DefaultTotal's memory figure assumes at most 240 plus strings", s)
	}
}

func TestConcurrentUseIsSafe(t *testing.T) {
	r := New(Options{PerSession: 8, Total: 64, Backend: &memBackend{}})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				sid := fmt.Sprint("s", (g*7+i)%20)
				if i%3 == 0 {
					r.Add(sid, Event{Kind: ConnOpened})
				} else {
					r.Activity(sid, i%2 == 0)
				}
				if i%100 == 0 {
					_ = r.Flush(context.Background())
					r.History(context.Background(), sid)
				}
			}
		})
	}
	wg.Wait()
	if st := r.Stats(); st.Events > 64 {
		t.Fatalf("%d events over the total of 64", st.Events)
	}
}
