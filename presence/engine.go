// Package presence turns what the proxy sees into presence decisions: it
// implements event.Observer, keeps each session's state machine, fires
// deadlines, and writes transitions and the notifications they cause to the
// store's outbox in one Commit. It knows nothing of HTTP delivery: package
// handoff sends the outbox; the engine only calls Options.Wake after
// committing notifications.
//
// Where things are:
//
//	engine.go       Options, Engine, New, Run
//	session.go      a session's state in memory, the shards that own it
//	cap.go          the bound on the session table: shedding, refusing
//	observer.go     the event.Observer methods (the proxy's data path)
//	transitions.go  the state changes: absent, seen, returned, hand-over on/off
//	deadlines.go    when transitions fire: the per-shard heaps, Tick
//	heap.go         the heap itself
//	commit.go       writing decisions and batches to the store, recovery at start
//	handover.go     how a hand-over is detected (Detect, rules, SetHandoff)
//	settings.go     what a bot's settings are, their validation and JSON
//	bots.go         each bot's settings at run time (file, store, PutBotSettings); Bots, shared with cluster mode
//	queries.go      View, Sessions, Session
//	stats.go        Stats
//	trace.go        the spans of transitions
//
// The rules it keeps are docs/ARCHITECTURE.md, "Presence invariants"; how
// it shares state between goroutines is "Concurrency" there, and how no
// decision is lost is "Durability".
package presence

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/presence/rules"
	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/timeline"
)

// Clock tells the time; tests use a fake one.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Options configure an Engine.
type Options struct {
	Defaults         Settings
	AllowAnyInterval bool
	// Bots come from PRESENCE_BOTS_FILE; settings changed at run time (in
	// the store) win over these, bot by bot.
	Bots          map[string]store.BotSettings
	Store         store.Store
	Clock         Clock       // nil: the real clock
	Log           *zap.Logger // nil: no logs
	Detect        Detect
	HandoffStart  rules.Set
	HandoffEnd    rules.Set
	Ignore        rules.Set     // client messages that are not activity (PRESENCE_IGNORE)
	ForgetAfter   time.Duration // how long an absent session without connections is kept (default DefaultForgetAfter)
	FlushInterval time.Duration // how often non-decision changes are written (default 200ms)
	Wake          func()        // called after notifications were committed
	// Tracer records a span per transition, in the trace of the session's
	// latest connection (or latest HTTP request, while it has no connection
	// open); the notification a transition causes
	// carries that span's context (Notification.TraceParent). nil: no spans,
	// the notification carries the session's trace context as it came.
	Tracer trace.TracerProvider
	// MaxSessions bounds the tracked sessions (0: no bound). A new session
	// beyond it sheds the oldest sessions that are not handed over and have
	// no connection; when none can be, it is not tracked (cap.go).
	MaxSessions int
	// Timeline, when set, gets each session's history (package timeline):
	// connections, activity, transitions, notifications queued. nil: none.
	Timeline *timeline.Recorder
}

const (
	numShards = 64 // a power of two
	// retryDelay paces retries of work blocked by a failed store write.
	retryDelay = 5 * time.Second

	defaultFlushInterval = 200 * time.Millisecond
)

// DefaultForgetAfter is how long an idle session is kept when
// Options.ForgetAfter is zero.
const DefaultForgetAfter = 24 * time.Hour

// Engine is the presence state machine. Create it with New.
//
// Who guards what:
//   - shards[i].mu guards every session of shard i (all of sess's fields)
//     and the shard's own fields (heap, dirty list, pending forgets, unsent
//     notifications, fence), except shards[i].head, which is atomic so that
//     Run can read it without the lock.
//   - conns[i].mu guards connection table i. Where both are held, the
//     connection shard's lock is taken first.
//   - bots.mu serialises writers of the bot table; readers load
//     bots.byID without a lock (the map is replaced, never changed).
//   - loop.flushMu makes Flush one at a time; it is never taken under a
//     shard lock.
//   - cap.shedMu makes shedding one at a time; it is taken before any
//     shard lock (a connection shard's may be held), never under one.
//   - Everything else is set by New and only read afterwards, or atomic.
type Engine struct {
	store              store.Store
	clock              Clock
	log                *zap.Logger
	tracer             trace.Tracer
	wakeHook           func() // Options.Wake; called through wakeDeliverer
	detect             Detect
	rules              matchRules
	timing             timing
	bots               *Bots
	shards             [numShards]shard     // the sessions, by shardOf(id)
	conns              [numShards]connShard // connection id → session
	loop               runLoop
	counts             counters
	cap                sessionCap
	storeErrorLoggedAt atomic.Int64 // Unix nanoseconds; see logStoreError
	idRefusedLoggedAt  atomic.Int64 // Unix nanoseconds; see boundIDs
	timeline           *timeline.Recorder
}

// matchRules are the rule sets messages are matched against. Read-only.
type matchRules struct {
	handoffStart rules.Set // HANDOFF_START_MATCH
	handoffEnd   rules.Set // HANDOFF_END_MATCH
	ignore       rules.Set // PRESENCE_IGNORE: client messages that are not activity
}

// timing holds the engine's own periods. Read-only.
type timing struct {
	forgetAfter   time.Duration // an absent session without connections is dropped this long after it was last seen or went absent
	flushInterval time.Duration // how often Run flushes non-decision changes
}

// runLoop is the state Run and Flush share with the code that arms deadlines.
type runLoop struct {
	flushMu sync.Mutex    // one Flush at a time
	timerAt atomic.Int64  // when Run's timer fires next; MaxInt64 while Run is computing it
	kick    chan struct{} // wakes Run when a deadline earlier than timerAt is armed
	running atomic.Bool   // Run is running (a second one is refused)
}

// counters are the figures Stats reports. Atomic: no lock.
type counters struct {
	untrackedConns   atomic.Int64  // live connections without a session id
	untrackedReqs    atomic.Uint64 // HTTP requests without a session id
	absent           atomic.Uint64 // present -> absent transitions
	returned         atomic.Uint64 // absent -> present transitions
	handoffOn        atomic.Uint64
	handoffOff       atomic.Uint64
	offlineCommitted atomic.Uint64 // client.offline notifications written
	onlineCommitted  atomic.Uint64 // client.online notifications written
	commitErrors     atomic.Uint64
	idsRefused       atomic.Uint64 // ids longer than store.MaxIDBytes, not tracked
	sessionsShed     atomic.Uint64 // sessions dropped to make room under MaxSessions
	sessionsRefused  atomic.Uint64 // new sessions not tracked: MaxSessions reached, nothing to shed
}

var _ event.Observer = (*Engine)(nil)

// New builds an engine, loads the sessions in the store and resumes their
// deadlines. A session that had live connections when the sidecar stopped is
// treated as closed now: its deadline becomes now + interval (its LastSeenAt
// is kept), since the outage hid the client from us and must not count as
// its absence. Deadlines already persisted resume as they are; those that
// passed while the sidecar was down fire on the first Tick.
func New(o Options) (*Engine, error) {
	if o.Store == nil {
		return nil, errors.New("presence: Options.Store is nil")
	}
	defaults := o.Defaults
	defaults.Mode = defaults.Mode.normal()
	if err := ValidateSettings(defaults, o.AllowAnyInterval); err != nil {
		return nil, fmt.Errorf("presence defaults: %w", err)
	}
	e := &Engine{
		store: o.Store, clock: o.Clock, log: o.Log, wakeHook: o.Wake, detect: o.Detect,
		rules:  matchRules{handoffStart: o.HandoffStart, handoffEnd: o.HandoffEnd, ignore: o.Ignore},
		timing: timing{forgetAfter: o.ForgetAfter, flushInterval: o.FlushInterval},
		loop:   runLoop{kick: make(chan struct{}, 1)}, timeline: o.Timeline,
	}
	e.cap.max = int64(max(o.MaxSessions, 0))
	if e.clock == nil {
		e.clock = realClock{}
	}
	if e.log == nil {
		e.log = zap.NewNop()
	}
	tp := o.Tracer
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	e.tracer = tp.Tracer("github.com/presence-sidecar/presence-sidecar/presence")
	if e.timing.forgetAfter <= 0 {
		e.timing.forgetAfter = DefaultForgetAfter
	}
	if e.timing.flushInterval <= 0 {
		e.timing.flushInterval = defaultFlushInterval
	}
	for i := range e.shards {
		e.shards[i].sessions = map[string]*sess{}
		e.shards[i].head.Store(math.MaxInt64)
		e.conns[i].byConn = map[event.ConnID]conn{}
	}
	e.loop.timerAt.Store(math.MaxInt64)
	var err error
	if e.bots, err = NewBots(defaults, o.AllowAnyInterval, o.Bots, o.Store, e.log); err != nil {
		return nil, err
	}
	if err := e.bots.Reload(); err != nil {
		return nil, err
	}
	if err := e.recoverSessions(); err != nil {
		return nil, err
	}
	return e, nil
}

// Run fires deadlines on one timer reset to the earliest deadline and
// flushes every FlushInterval. When ctx ends it flushes once more and
// returns that flush's error.
func (e *Engine) Run(ctx context.Context) error {
	if !e.loop.running.CompareAndSwap(false, true) {
		return errors.New("presence: Run is already running")
	}
	defer e.loop.running.Store(false)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	nextFlush := e.now() + int64(e.timing.flushInterval)
	for {
		now := e.now()
		e.Tick(time.Unix(0, now))
		if now >= nextFlush {
			if err := e.Flush(); err != nil {
				e.logStoreError("presence: flush failed, will retry", err)
			}
			nextFlush = now + int64(e.timing.flushInterval)
		}
		// Any arm while we compute sees MaxInt64 and kicks, so none is missed.
		e.loop.timerAt.Store(math.MaxInt64)
		at := min(e.earliestDue(), nextFlush)
		e.loop.timerAt.Store(at)
		t.Reset(time.Duration(max(at-e.now(), 0)))
		select {
		case <-ctx.Done():
			return e.Flush()
		case <-t.C:
		case <-e.loop.kick:
		}
	}
}

func (e *Engine) now() int64 { return e.clock.Now().UnixNano() }

// wakeDeliverer tells the deliverer that notifications were committed.
func (e *Engine) wakeDeliverer() {
	if e.wakeHook != nil {
		e.wakeHook()
	}
}

// logStoreError logs at most one store failure per retryDelay: a store that
// is down would otherwise log on every flush and every decision.
func (e *Engine) logStoreError(msg string, err error, fields ...zap.Field) {
	if logDue(&e.storeErrorLoggedAt) {
		e.log.Error(msg, append(fields, zap.Error(err), zap.Uint64("store_errors_so_far", e.counts.commitErrors.Load()))...)
	}
}

// logDue reports whether a repeated log line may be written now: at most
// one per retryDelay, so that a fault hit on every event cannot flood the log.
func logDue(lastAt *atomic.Int64) bool {
	now := time.Now().UnixNano()
	last := lastAt.Load()
	return now-last >= int64(retryDelay) && lastAt.CompareAndSwap(last, now)
}

// ErrIDTooLong is the error of an API call naming a session or bot id
// longer than store.MaxIDBytes.
var ErrIDTooLong = fmt.Errorf("presence: an id is longer than %d bytes", store.MaxIDBytes)

// boundIDs drops from who an id longer than store.MaxIDBytes: such a
// session is not tracked (its traffic passes untouched, like a connection
// without a session id) and such a bot id is not used. A store refuses the
// id anyway; refusing it here keeps it out of every batch, where it would
// fail the unrelated sessions written with it.
func (e *Engine) boundIDs(who event.Identity) event.Identity {
	if len(who.SessionID) <= store.MaxIDBytes && len(who.BotID) <= store.MaxIDBytes {
		return who
	}
	e.counts.idsRefused.Add(1)
	if logDue(&e.idRefusedLoggedAt) {
		e.log.Warn("presence: an id longer than the bound is not tracked",
			zap.Int("session_id_bytes", len(who.SessionID)), zap.Int("bot_id_bytes", len(who.BotID)),
			zap.Int("bound", store.MaxIDBytes), zap.Uint64("refused_so_far", e.counts.idsRefused.Load()))
	}
	if len(who.SessionID) > store.MaxIDBytes {
		who.SessionID = ""
	}
	if len(who.BotID) > store.MaxIDBytes {
		who.BotID = ""
	}
	return who
}
