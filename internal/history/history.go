// Package history keeps the last hour, minute by minute, of the figures the
// status page charts: open connections, absences and returns, delivery
// outcomes and their p95 latency, the outbox's depth. It is a fixed ring of
// 60 minutes (about 30 KiB whatever the traffic), in memory only: a restart
// starts an empty hour, and in cluster mode each replica charts its own.
//
// Gauges are sampled (Sample, every few seconds, and at each read): a minute
// shows the last value sampled in it, and a minute nobody sampled repeats
// the one before. Counters are read as totals and charted as the increase
// within each minute. Deliveries are reported one by one (Delivery).
package history

import (
	"context"
	"math"
	"sync"
	"time"
)

// Minutes is how far back the history goes.
const Minutes = 60

// Totals are the cumulative counters and current gauges Sample reads.
type Totals struct {
	Connections int64 // open WebSocket connections now
	OutboxDepth int64 // notifications not delivered yet, now; -1: unknown
	Absences    int64 // sessions gone absent since start
	Returns     int64 // absent sessions back since start
}

// Outcome is one delivery attempt's result, as the chart groups it.
type Outcome uint8

const (
	Delivered Outcome = iota
	Retried           // failed, will be tried again
	Dead              // dead-lettered
	outcomes
)

// Minute is one minute of history. Start is its first instant.
type Minute struct {
	Start       time.Time
	Sampled     bool // a gauge value was read in (or carried into) this minute
	Connections int64
	OutboxDepth int64 // -1: unknown
	Absences    int64
	Returns     int64
	Outcomes    [outcomes]int64 // by Outcome
	// P95 of the latencies of the minute's HTTP exchanges; 0 with none.
	P95 time.Duration
	lat latencyHist
}

// Recorder is the ring. Its methods are safe for concurrent use.
type Recorder struct {
	mu    sync.Mutex
	now   func() time.Time
	read  func() Totals
	ring  [Minutes]Minute
	head  int       // index of the current minute
	start time.Time // the current minute's Start; zero before the first call
	last  Totals    // the totals at the last sample
	began bool      // last holds a sample
}

// New records what read gives; now is the clock (nil: time.Now).
func New(read func() Totals, now func() time.Time) *Recorder {
	if now == nil {
		now = time.Now
	}
	return &Recorder{read: read, now: now}
}

// Sample reads the totals into the current minute.
func (r *Recorder) Sample() {
	t := r.read()
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.advanceLocked()
	if r.began {
		// Counters only grow; a smaller total (a restarted source) counts from 0.
		m.Absences += max(0, t.Absences-r.last.Absences)
		m.Returns += max(0, t.Returns-r.last.Returns)
	}
	m.Sampled, m.Connections, m.OutboxDepth = true, t.Connections, t.OutboxDepth
	r.last, r.began = t, true
}

// Delivery records one attempt's outcome and, when an HTTP exchange took
// place, its latency.
func (r *Recorder) Delivery(o Outcome, exchanged bool, latency time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.advanceLocked()
	if o < outcomes {
		m.Outcomes[o]++
	}
	if exchanged {
		m.lat.add(latency)
	}
}

// Last samples, then returns the hour oldest first, the current (partial)
// minute last; always Minutes entries, those before the first call empty
// but dated.
func (r *Recorder) Last() []Minute {
	r.Sample()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Minute, Minutes)
	for i := range out {
		m := r.ring[(r.head+1+i)%Minutes]
		m.Start = r.start.Add(time.Duration(i-Minutes+1) * time.Minute)
		if m.lat.n > 0 {
			m.P95 = m.lat.quantile(0.95)
		}
		m.lat = latencyHist{}
		out[i] = m
	}
	return out
}

// Run samples every interval until ctx is done.
func (r *Recorder) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.Sample()
		}
	}
}

// advanceLocked moves the ring to the minute of now and returns it. Minutes
// skipped carry the gauges of the last sampled one: nothing changed that
// anyone saw.
func (r *Recorder) advanceLocked() *Minute {
	cur := r.now().Truncate(time.Minute)
	if r.start.IsZero() {
		r.start = cur
		r.ring[r.head] = Minute{Start: cur, OutboxDepth: -1}
		return &r.ring[r.head]
	}
	steps := int(cur.Sub(r.start) / time.Minute)
	if steps <= 0 { // the same minute, or a clock stepped back: stay
		return &r.ring[r.head]
	}
	prev := r.ring[r.head]
	for i := range min(steps, Minutes) {
		r.head = (r.head + 1) % Minutes
		r.ring[r.head] = Minute{
			Start:   cur.Add(time.Duration(i-min(steps, Minutes)+1) * time.Minute),
			Sampled: prev.Sampled, Connections: prev.Connections, OutboxDepth: prev.OutboxDepth,
		}
	}
	r.start = cur
	return &r.ring[r.head]
}

// latencyHist is a log-scale histogram: bucket i holds latencies below
// 1ms·growth^i, so a quantile is read within a bucket's width (±6%) from
// 1 ms to about 2 minutes.
type latencyHist struct {
	n       uint32
	buckets [latencyBuckets]uint32
}

const (
	latencyBuckets = 100
	growth         = 1.125
)

func (h *latencyHist) add(d time.Duration) {
	i := 0
	if ms := float64(d) / float64(time.Millisecond); ms >= 1 {
		i = min(latencyBuckets-1, 1+int(math.Log(ms)/math.Log(growth)))
	}
	h.buckets[i]++
	h.n++
}

// quantile is the q-quantile, interpolated within its bucket.
func (h *latencyHist) quantile(q float64) time.Duration {
	rank := q * float64(h.n)
	var seen float64
	for i, c := range h.buckets {
		if c == 0 {
			continue
		}
		if seen+float64(c) >= rank {
			lo, hi := bucketBounds(i)
			f := (rank - seen) / float64(c)
			return time.Duration((lo + f*(hi-lo)) * float64(time.Millisecond))
		}
		seen += float64(c)
	}
	_, hi := bucketBounds(latencyBuckets - 1)
	return time.Duration(hi * float64(time.Millisecond))
}

// bucketBounds are bucket i's bounds in milliseconds.
func bucketBounds(i int) (lo, hi float64) {
	if i == 0 {
		return 0, 1
	}
	return math.Pow(growth, float64(i-1)), math.Pow(growth, float64(i))
}
