package timeline

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Defaults of the zero Options fields, the figures the README states.
const (
	DefaultPerSession = 64
	// DefaultTotal bounds one replica's memory: an Event is about 300 bytes
	// with its strings (TestEventSize), so 5,000 of them about 1.5 MB. The
	// memory is the recent part and the write buffer; History reads the
	// Backend too, which keeps PerSession per session, so a small figure
	// loses nothing a reader sees while the Backend works.
	DefaultTotal      = 5_000
	DefaultFlushEvery = 500 * time.Millisecond
	// ActivityGap: client messages less than this apart are one activity
	// summary; ActivitySpan: a summary covers at most this long, so a long
	// conversation reads as a few summaries, not one.
	ActivityGap  = time.Minute
	ActivitySpan = 10 * time.Minute
	// backendTimeout bounds one Save or Load.
	backendTimeout = 2 * time.Second
)

// Options configure a Recorder. Zero values take the defaults.
type Options struct {
	PerSession int
	Total      int
	Replica    string           // stamped on every event (cluster mode: the replica id; embedded: the host name)
	Backend    Backend          // nil: memory only
	FlushEvery time.Duration    // how often Run writes what changed to Backend
	Now        func() time.Time // nil: time.Now; tests pass a fake clock
	Log        *zap.Logger
}

// Stats are the Recorder's figures since start.
type Stats struct {
	Events, Sessions int
	Dropped          Dropped
	StoreErrors      uint64 // Backend calls that failed
}

// Dropped counts events lost, by cause.
type Dropped struct {
	PerSession uint64 `json:"perSession"` // the session had PerSession events already
	Total      uint64 `json:"total"`      // the replica had Total events already
	Store      uint64 `json:"store"`      // a Backend write failed (still in memory)
}

// Recorder keeps the histories. The zero value is not usable; a nil
// *Recorder records nothing, so that callers need no check.
type Recorder struct {
	o   Options
	run string // this process's part of every event id
	log *zap.Logger

	mu       sync.Mutex
	seq      uint64
	sessions map[string]*sessLog
	order    []ref // every event in memory (and some dropped: stale) in the order added
	head     int   // order[:head] are consumed
	total    int
	dirty    map[*sessLog]struct{}

	droppedSession, droppedTotal, droppedStore, storeErrors atomic.Uint64
	errLoggedAt                                             atomic.Int64
}

// sessLog is one session's events in memory, oldest first.
type sessLog struct {
	id     string
	events []Event
	seqs   []uint64 // the event's place in Recorder.order, parallel to events
	saved  uint64   // the last seq handed to the Backend
	grown  bool     // the last event (an activity summary) changed after it was saved
}

type ref struct {
	l   *sessLog
	seq uint64
}

// New returns a Recorder.
func New(o Options) *Recorder {
	if o.PerSession <= 0 {
		o.PerSession = DefaultPerSession
	}
	if o.Total <= 0 {
		o.Total = DefaultTotal
	}
	if o.FlushEvery <= 0 {
		o.FlushEvery = DefaultFlushEvery
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	r := &Recorder{o: o, log: o.Log, sessions: map[string]*sessLog{}, dirty: map[*sessLog]struct{}{}}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	r.run = hex.EncodeToString(b[:])
	return r
}

// UseBackend sets the Backend of a Recorder built before its store was
// (cluster mode dials Redis after the engines' options are made). Call it
// before Run and before any History.
func (r *Recorder) UseBackend(b Backend) {
	if r != nil {
		r.o.Backend = b
	}
}

// Bounds are the Recorder's figures.
func (r *Recorder) Bounds() Bounds {
	if r == nil {
		return Bounds{}
	}
	return Bounds{PerSession: r.o.PerSession, Total: r.o.Total}
}

// Add records e for session sid. It stamps At (when zero), the replica and
// the id.
func (r *Recorder) Add(sid string, e Event) {
	if r == nil || sid == "" {
		return
	}
	if e.At.IsZero() {
		e.At = r.o.Now().UTC()
	}
	e.Replica = r.o.Replica
	r.mu.Lock()
	r.appendLocked(sid, e)
	r.mu.Unlock()
}

// Activity counts one client message (request false) or one HTTP request
// of session sid, into the session's latest activity summary while it is
// the session's latest event, less than ActivityGap old and shorter than
// ActivitySpan; otherwise it starts a new one. This is the only call made
// per message: a map lookup and two field writes.
func (r *Recorder) Activity(sid string, request bool) {
	if r == nil || sid == "" {
		return
	}
	now := r.o.Now().UTC()
	r.mu.Lock()
	defer r.mu.Unlock()
	if l := r.sessions[sid]; l != nil && len(l.events) > 0 {
		last := &l.events[len(l.events)-1]
		if last.Kind == Activity && last.Until != nil && now.Sub(*last.Until) < ActivityGap && now.Sub(last.At) < ActivitySpan {
			if request {
				last.Requests++
			} else {
				last.Messages++
			}
			*last.Until = now
			if l.seqs[len(l.seqs)-1] <= l.saved {
				l.grown = true
			}
			r.dirty[l] = struct{}{}
			return
		}
	}
	until := now
	e := Event{At: now, Kind: Activity, Replica: r.o.Replica, Until: &until}
	if request {
		e.Requests = 1
	} else {
		e.Messages = 1
	}
	r.appendLocked(sid, e)
}

func (r *Recorder) appendLocked(sid string, e Event) {
	r.seq++
	e.ID = fmt.Sprintf("%s-%012x", r.run, r.seq)
	l := r.sessions[sid]
	if l == nil {
		l = &sessLog{id: sid}
		r.sessions[sid] = l
	}
	if len(l.events) >= r.o.PerSession {
		l.dropOldest()
		r.total--
		r.droppedSession.Add(1)
	}
	l.events = append(l.events, e)
	l.seqs = append(l.seqs, r.seq)
	r.dirty[l] = struct{}{}
	r.order = append(r.order, ref{l: l, seq: r.seq})
	r.total++
	for r.total > r.o.Total {
		r.evictOldestLocked()
	}
	r.compactLocked()
}

func (l *sessLog) dropOldest() {
	copy(l.events, l.events[1:])
	l.events[len(l.events)-1] = Event{}
	l.events = l.events[:len(l.events)-1]
	copy(l.seqs, l.seqs[1:])
	l.seqs = l.seqs[:len(l.seqs)-1]
}

// evictOldestLocked drops the oldest event in memory, whichever session's.
func (r *Recorder) evictOldestLocked() {
	for r.head < len(r.order) {
		x := r.order[r.head]
		r.order[r.head] = ref{}
		r.head++
		l := x.l
		if len(l.seqs) == 0 || l.seqs[0] != x.seq {
			continue // dropped already by the per-session bound
		}
		l.dropOldest()
		r.total--
		r.droppedTotal.Add(1)
		if len(l.events) == 0 && r.sessions[l.id] == l {
			delete(r.sessions, l.id)
			delete(r.dirty, l)
		}
		return
	}
}

// compactLocked keeps order from growing past twice the events it refers
// to: the per-session bound leaves stale refs behind.
func (r *Recorder) compactLocked() {
	if r.head > 4096 && r.head > len(r.order)/2 {
		r.order = append(r.order[:0], r.order[r.head:]...)
		r.head = 0
	}
	if len(r.order)-r.head <= 2*r.o.Total+r.o.PerSession {
		return
	}
	live := r.order[:0]
	for _, x := range r.order[r.head:] {
		if s := x.l.seqs; len(s) > 0 && x.seq >= s[0] && r.sessions[x.l.id] == x.l {
			live = append(live, x)
		}
	}
	clear(r.order[len(live):])
	r.order, r.head = live, 0
}

// Stats returns the figures.
func (r *Recorder) Stats() Stats {
	if r == nil {
		return Stats{}
	}
	r.mu.Lock()
	s := Stats{Events: r.total, Sessions: len(r.sessions)}
	r.mu.Unlock()
	s.Dropped = r.dropped()
	s.StoreErrors = r.storeErrors.Load()
	return s
}

func (r *Recorder) dropped() Dropped {
	return Dropped{PerSession: r.droppedSession.Load(), Total: r.droppedTotal.Load(), Store: r.droppedStore.Load()}
}

// memory copies session sid's events.
func (r *Recorder) memory(sid string) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.sessions[sid]
	if l == nil {
		return nil
	}
	out := make([]Event, len(l.events))
	copy(out, l.events)
	for i := range out { // Until is written in place by Activity
		if u := out[i].Until; u != nil {
			v := *u
			out[i].Until = &v
		}
	}
	return out
}

// History returns session sid's recent events, oldest first: the
// Backend's merged with this process's (which win: an activity summary
// may have grown since it was written), at most PerSession.
func (r *Recorder) History(ctx context.Context, sid string) History {
	h := History{SessionID: sid, Events: []Event{}, Kept: "memory"}
	if r == nil {
		return h
	}
	h.Bounds = r.Bounds()
	mem := r.memory(sid)
	var stored []Event
	if b := r.o.Backend; b != nil {
		h.Kept = "memory+" + b.Name()
		ctx, cancel := context.WithTimeout(ctx, backendTimeout)
		var err error
		stored, err = b.Load(ctx, sid)
		cancel()
		if err != nil {
			r.storeErrors.Add(1)
			h.StoreError = err.Error()
		}
	}
	h.Events = Merge(r.o.PerSession, stored, mem)
	return h
}

// Merge joins event lists, the later lists' copy of an id winning, and
// returns at most limit, the newest, oldest first: ordered by At, then by
// id (one process's ids sort in the order it made them).
func Merge(limit int, lists ...[]Event) []Event {
	byID := map[string]int{}
	out := []Event{}
	for _, l := range lists {
		for _, e := range l {
			if i, ok := byID[e.ID]; ok {
				out[i] = e
				continue
			}
			byID[e.ID] = len(out)
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b Event) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}

// Flush hands what changed since the last Flush to the Backend. A failed
// write is dropped (counted in Stats.Dropped.Store); its events stay in
// memory.
func (r *Recorder) Flush(ctx context.Context) error {
	if r == nil || r.o.Backend == nil {
		return nil
	}
	batch := map[string][]Event{}
	n := 0
	r.mu.Lock()
	for l := range r.dirty {
		var evs []Event
		for i, seq := range l.seqs {
			if seq > l.saved || (l.grown && i == len(l.seqs)-1) {
				e := l.events[i]
				if u := e.Until; u != nil {
					v := *u
					e.Until = &v
				}
				evs = append(evs, e)
			}
		}
		if len(l.seqs) > 0 {
			l.saved = l.seqs[len(l.seqs)-1]
		}
		l.grown = false
		if len(evs) > 0 {
			batch[l.id] = append(batch[l.id], evs...)
			n += len(evs)
		}
	}
	clear(r.dirty)
	r.mu.Unlock()
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, backendTimeout)
	defer cancel()
	if err := r.o.Backend.Save(ctx, batch); err != nil {
		r.storeErrors.Add(1)
		r.droppedStore.Add(uint64(n))
		return err
	}
	return nil
}

// Run flushes every FlushEvery until ctx ends, then once more.
func (r *Recorder) Run(ctx context.Context) error {
	if r == nil || r.o.Backend == nil {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(r.o.FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := r.Flush(context.Background()); err != nil {
				r.logError(err)
			}
			return nil
		case <-t.C:
			if err := r.Flush(ctx); err != nil {
				r.logError(err)
			}
		}
	}
}

// logError logs at most one failed write every 10 s: a store that is down
// would otherwise log at every flush.
func (r *Recorder) logError(err error) {
	now := time.Now().UnixNano()
	last := r.errLoggedAt.Load()
	if now-last < int64(10*time.Second) || !r.errLoggedAt.CompareAndSwap(last, now) {
		return
	}
	r.log.Warn("timeline: writing session histories failed; the events are kept in memory only",
		zap.String("backend", r.o.Backend.Name()), zap.Error(err), zap.Uint64("dropped_so_far", r.droppedStore.Load()))
}
