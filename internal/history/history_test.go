package history

import (
	"sync"
	"testing"
	"time"
	"unsafe"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func rig() (*Recorder, *clock, *Totals) {
	c := &clock{t: time.Date(2026, 12, 3, 10, 0, 30, 0, time.UTC)}
	tot := &Totals{}
	var mu sync.Mutex
	r := New(func() Totals { mu.Lock(); defer mu.Unlock(); return *tot }, c.Now)
	return r, c, tot
}

// TestCountersByMinuteGaugesCarried: counters become per-minute increases,
// gauges the last value seen in the minute, carried over minutes nobody
// sampled; the hour is dated back from the current minute.
func TestCountersByMinuteGaugesCarried(t *testing.T) {
	r, c, tot := rig()
	r.Sample() // 10:00: the baseline
	tot.Absences, tot.Returns, tot.Connections, tot.OutboxDepth = 3, 1, 7, 2
	r.Sample()
	c.add(time.Minute) // 10:01
	tot.Absences, tot.Connections = 5, 4
	r.Sample()
	c.add(3 * time.Minute) // 10:04: 10:02 and 10:03 unsampled
	tot.Returns = 4
	h := r.Last()
	if len(h) != Minutes {
		t.Fatalf("%d minutes", len(h))
	}
	end := h[Minutes-5:]
	want := []struct {
		start        string
		abs, ret     int64
		conns, depth int64
	}{
		{"10:00", 3, 1, 7, 2},
		{"10:01", 2, 0, 4, 2},
		{"10:02", 0, 0, 4, 2},
		{"10:03", 0, 0, 4, 2},
		{"10:04", 0, 3, 4, 2},
	}
	for i, w := range want {
		m := end[i]
		if got := m.Start.Format("15:04"); got != w.start || m.Absences != w.abs || m.Returns != w.ret ||
			m.Connections != w.conns || m.OutboxDepth != w.depth || !m.Sampled {
			t.Errorf("minute %d: %s %+v; want %+v", i, got, m, w)
		}
	}
	if first := h[0]; first.Sampled || first.Start.Format("15:04") != "09:05" {
		t.Errorf("first minute %+v: before the recorder began, dated 09:05", first)
	}
}

// TestHourRollsOver: after more than an hour only the last 60 minutes are
// kept, and a long pause carries the gauges, not the counts.
func TestHourRollsOver(t *testing.T) {
	r, c, tot := rig()
	r.Sample()
	for i := range 90 {
		tot.Absences += int64(i)
		r.Delivery(Delivered, true, 10*time.Millisecond)
		r.Sample()
		c.add(time.Minute)
	}
	h := r.Last()
	if h[Minutes-2].Absences != 89 || h[0].Absences != 31 || h[Minutes-1].Absences != 0 {
		t.Fatalf("absences %d %d %d", h[0].Absences, h[Minutes-2].Absences, h[Minutes-1].Absences)
	}
	c.add(5 * time.Hour)
	tot.Connections = 9
	h = r.Last()
	for _, m := range h[:Minutes-1] {
		if m.Absences != 0 || m.Outcomes[Delivered] != 0 || m.Connections != 0 && m.Connections != 9 {
			t.Fatalf("after a long pause: %+v", m)
		}
	}
	if h[Minutes-1].Connections != 9 {
		t.Fatalf("now: %+v", h[Minutes-1])
	}
}

// TestDeliveriesAndP95: outcomes counted by minute; the p95 is within the
// histogram's resolution of the true one.
func TestDeliveriesAndP95(t *testing.T) {
	r, c, _ := rig()
	for i := 1; i <= 100; i++ {
		r.Delivery(Delivered, true, time.Duration(i)*time.Millisecond)
	}
	r.Delivery(Retried, true, 5*time.Second)
	r.Delivery(Dead, false, 0) // no exchange: no latency
	c.add(time.Minute)
	r.Delivery(Delivered, true, 250*time.Millisecond)
	h := r.Last()
	m := h[Minutes-2]
	if m.Outcomes != [outcomes]int64{100, 1, 1} {
		t.Fatalf("outcomes %v", m.Outcomes)
	}
	// 101 latencies: the 95th percentile is 96 ms.
	if m.P95 < 90*time.Millisecond || m.P95 > 102*time.Millisecond {
		t.Fatalf("p95 %v, want about 96ms", m.P95)
	}
	if p := h[Minutes-1].P95; p < 235*time.Millisecond || p > 265*time.Millisecond {
		t.Fatalf("one delivery of 250ms: p95 %v", p)
	}
	if h[Minutes-3].P95 != 0 {
		t.Fatal("a minute without deliveries has a p95")
	}
}

// TestClockBackAndCounterReset: a clock stepped back stays in the minute;
// a total that shrinks (a source restarted) does not chart negative.
func TestClockBackAndCounterReset(t *testing.T) {
	r, c, tot := rig()
	tot.Absences = 10
	r.Sample()
	c.add(-2 * time.Minute)
	tot.Absences = 2
	r.Sample()
	tot.Absences = 4
	h := r.Last()
	if m := h[Minutes-1]; m.Absences != 2 || m.Start.Format("15:04") != "10:00" {
		t.Fatalf("%+v", m)
	}
}

// TestConcurrentUse for the race detector.
func TestConcurrentUse(t *testing.T) {
	r, c, _ := rig()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 500 {
				r.Delivery(Delivered, true, time.Millisecond)
				r.Sample()
				c.add(time.Second)
			}
		}()
	}
	for range 20 {
		r.Last()
	}
	wg.Wait()
}

// TestRingSize: the hour's memory is fixed.
func TestRingSize(t *testing.T) {
	if got := unsafe.Sizeof(Recorder{}); got > 32<<10 {
		t.Fatalf("a Recorder is %d bytes", got)
	}
}
