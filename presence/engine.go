// Package presence turns what the proxy sees into presence decisions: it
// implements event.Observer, keeps each session's state machine, fires
// deadlines, and writes transitions and the notifications they cause to the
// store's outbox in one Commit. It knows nothing of HTTP delivery: package
// handoff sends the outbox; the engine only calls Options.Wake after
// committing notifications.
//
// Concurrency: sessions are sharded by a hash of their id; one shard's mutex
// owns a session's state, so a close on one connection and an open on
// another cannot race. Each shard keeps a min-heap of deadlines; the single
// Run goroutine drains them with one timer. Decisions that produce a
// notification or change the hand-over are committed synchronously under the
// shard lock (no race can yield two /expire); other changes (connection
// counts, last seen, deadlines moved by activity) are batched by Flush.
package presence

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/presence/rules"
	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
)

// Clock tells the time; tests use a fake one.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Detect says how hand-over to a human is detected (HANDOFF_DETECT).
type Detect struct {
	Always bool // every session counts as handed over
	Rules  bool // HANDOFF_START_MATCH / HANDOFF_END_MATCH on messages and HTTP bodies
	API    bool // SetHandoff (the admin API)
}

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
	ForgetAfter   time.Duration // how long an absent session without connections is kept (default 24h)
	FlushInterval time.Duration // how often non-decision changes are written (default 200ms)
	Wake          func()        // called after notifications were committed
	// Tracer records a span per transition, in the trace of the session's
	// latest connection (or latest HTTP request, while it has no connection
	// open); the notification a transition causes
	// carries that span's context (Notification.TraceParent). nil: no spans,
	// the notification carries the session's trace context as it came.
	Tracer trace.TracerProvider
}

const (
	numShards = 64 // a power of two
	// retryDelay paces retries of work blocked by a failed store write.
	retryDelay = 5 * time.Second
)

// Absence reasons, stored compactly in sess.reason.
const (
	reasonNone uint8 = iota
	reasonDisconnected
	reasonInactive
)

var reasonText = [...]string{"", "disconnected", "inactive"}

func reasonCode(s string) uint8 {
	switch s {
	case "disconnected":
		return reasonDisconnected
	case "inactive":
		return reasonInactive
	}
	return reasonNone
}

// sess is one session's state in memory, kept small (104 bytes): times are
// Unix nanoseconds, 0 meaning none.
type sess struct {
	id       string
	bot      string // interned when the bot is known to the settings table
	seen     int64  // LastSeenAt: last presence (connection mode) or activity (activity mode)
	absentAt int64
	deadline int64 // becomes absent at this time unless seen; 0: none
	armed    int64 // at of this session's live heap entry; 0: none
	episode  uint32
	conns    int32
	state    store.Presence
	handed   bool
	expSent  bool // ExpireSent
	reason   uint8
	trace    traceRef // of the latest connection or request that brought one
	dirty    bool     // changed since last written
	gone     bool     // forgotten; heap entries and conns still pointing here are stale
	shard    uint8
}

type shard struct {
	mu     sync.Mutex
	m      map[string]*sess
	h      dueHeap
	head   atomic.Int64 // h[0].at or MaxInt64, read by Run without the lock
	dirty  []*sess
	forget []string
	// unsent holds notifications whose Commit failed, per session, in order.
	// Such a session's later notes are appended after them, and the session
	// is not written without them, so a crash cannot keep a state that claims
	// a notification which is not in the outbox.
	unsent map[*sess][]store.Notification
	// fence is closed when the Flush that last snapshotted this shard has
	// committed. A decision waits for it, so the flush's older copy of a
	// session can never land after the decision's newer one.
	fence chan struct{}
}

type conn struct {
	s     *sess     // nil: no session id yet (untracked)
	bot   string    // a bot id seen before the session id
	trace *traceRef // the upgrade's trace, kept until the session id comes
}

type connShard struct {
	mu sync.Mutex
	m  map[event.ConnID]conn
}

type botEntry struct {
	id   string            // canonical copy, shared by sessions (interning)
	file store.BotSettings // from PRESENCE_BOTS_FILE
	api  store.BotSettings // changed through the admin API (stored); wins field by field
	set  Settings
}

// Engine is the presence state machine. Create it with New.
type Engine struct {
	store  store.Store
	clock  Clock
	log    *zap.Logger
	detect Detect
	start  rules.Set
	end    rules.Set
	ignore rules.Set
	wakeFn func()
	tracer trace.Tracer

	def      Settings
	allowAny bool
	forget   int64
	flushInt time.Duration

	botsMu sync.Mutex // serialises writers of bots
	bots   atomic.Pointer[map[string]*botEntry]

	shards [numShards]shard
	conns  [numShards]connShard

	flushMu sync.Mutex // one Flush at a time
	wakeAt  atomic.Int64
	kick    chan struct{}
	running atomic.Bool

	untrackedConns atomic.Int64
	untrackedReqs  atomic.Uint64
	nAbsent        atomic.Uint64
	nPresent       atomic.Uint64
	nHandoffOn     atomic.Uint64
	nHandoffOff    atomic.Uint64
	nOffline       atomic.Uint64
	nOnline        atomic.Uint64
	commitErrors   atomic.Uint64
	lastErrLog     atomic.Int64
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
	def := o.Defaults
	def.Mode = def.Mode.normal()
	if err := ValidateSettings(def, o.AllowAnyInterval); err != nil {
		return nil, fmt.Errorf("presence defaults: %w", err)
	}
	e := &Engine{
		store: o.Store, clock: o.Clock, log: o.Log, detect: o.Detect,
		start: o.HandoffStart, end: o.HandoffEnd, ignore: o.Ignore, wakeFn: o.Wake,
		def: def, allowAny: o.AllowAnyInterval,
		forget: int64(o.ForgetAfter), flushInt: o.FlushInterval,
		kick: make(chan struct{}, 1),
	}
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
	if e.forget <= 0 {
		e.forget = int64(24 * time.Hour)
	}
	if e.flushInt <= 0 {
		e.flushInt = 200 * time.Millisecond
	}
	for i := range e.shards {
		e.shards[i].m = map[string]*sess{}
		e.shards[i].head.Store(math.MaxInt64)
		e.conns[i].m = map[event.ConnID]conn{}
	}
	e.wakeAt.Store(math.MaxInt64)

	// The file's settings and the API's are kept apart and laid over the
	// environment field by field, so an edit of the file still shows for
	// every field the API did not set.
	bots := make(map[string]*botEntry, len(o.Bots))
	for id, ov := range o.Bots {
		set, err := Resolve(def, ov, o.AllowAnyInterval)
		if err != nil {
			return nil, fmt.Errorf("presence: bot %q: %w", id, err)
		}
		bots[id] = &botEntry{id: id, file: ov, set: set}
	}
	stored, err := o.Store.Bots()
	if err != nil {
		return nil, fmt.Errorf("presence: reading bot settings: %w", err)
	}
	for id, api := range stored {
		b := bots[id]
		if b == nil {
			b = &botEntry{id: id}
		}
		set, err := Resolve(def, mergeOverrides(b.file, api), o.AllowAnyInterval)
		if err != nil {
			// Refusing to start would also lock out the admin API that can fix it.
			e.log.Warn("presence: ignoring stored bot settings", zap.String("bot", id), zap.Error(err))
			continue
		}
		bots[id] = &botEntry{id: id, file: b.file, api: api, set: set}
	}
	e.bots.Store(&bots)

	if err := e.recover(); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *Engine) recover() error {
	list, err := e.store.Sessions()
	if err != nil {
		return fmt.Errorf("presence: loading sessions: %w", err)
	}
	now := e.clock.Now().UnixNano()
	var put []store.Session
	for _, st := range list {
		if st.ID == "" {
			continue
		}
		s := &sess{
			id: st.ID, bot: e.intern(st.BotID),
			seen: ns(st.LastSeenAt), absentAt: ns(st.AbsentAt), deadline: ns(st.Deadline),
			episode: uint32(min(st.Episode, math.MaxUint32)),
			state:   st.State, handed: st.HandedOver || e.detect.Always, expSent: st.ExpireSent,
			reason: reasonCode(st.Reason), shard: shardOf(st.ID),
		}
		set := e.settings(s.bot)
		changed := s.handed != st.HandedOver
		if st.Conns > 0 {
			changed = true
			if s.state == store.Present {
				s.deadline = now + int64(set.CheckInterval)
			}
		}
		if s.state == store.Present && s.deadline == 0 {
			// Cannot be written by this engine; never leave a session without a way out.
			changed = true
			s.deadline = max(s.seen, now) + int64(set.CheckInterval)
		}
		if s.state == store.Absent {
			s.deadline = 0
		}
		sh := &e.shards[s.shard]
		sh.m[s.id] = s
		e.rearm(sh, s)
		if changed {
			put = append(put, e.snapshot(s, now))
		}
	}
	if len(put) > 0 {
		if err := e.store.Commit(put, nil, nil); err != nil {
			return fmt.Errorf("presence: writing recovered sessions: %w", err)
		}
	}
	e.log.Info("presence: sessions recovered", zap.Int("sessions", len(list)), zap.Int("reset", len(put)))
	return nil
}

// ---- helpers ----

func ns(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func tm(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func shardOf(id string) uint8 {
	// FNV-1a, inline so that no hasher is allocated per event.
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return uint8(h & (numShards - 1))
}

func (e *Engine) now() int64 { return e.clock.Now().UnixNano() }

func (e *Engine) settings(bot string) *Settings {
	if bot != "" {
		if b, ok := (*e.bots.Load())[bot]; ok {
			return &b.set
		}
	}
	return &e.def
}

// intern returns the table's copy of a known bot id, or a private copy:
// strings handed in may point into larger buffers we must not keep alive.
func (e *Engine) intern(bot string) string {
	if bot == "" {
		return ""
	}
	if b, ok := (*e.bots.Load())[bot]; ok {
		return b.id
	}
	return strings.Clone(bot)
}

// logStoreError logs at most one store failure per retryDelay: a store that
// is down would otherwise log on every flush and every decision.
func (e *Engine) logStoreError(msg string, err error, fields ...zap.Field) {
	now := time.Now().UnixNano()
	last := e.lastErrLog.Load()
	if now-last < int64(retryDelay) || !e.lastErrLog.CompareAndSwap(last, now) {
		return
	}
	e.log.Error(msg, append(fields, zap.Error(err), zap.Uint64("store_errors_so_far", e.commitErrors.Load()))...)
}

func (e *Engine) wake() {
	if e.wakeFn != nil {
		e.wakeFn()
	}
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return "msg_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

func (e *Engine) handed(s *sess) bool { return s.handed || e.detect.Always }

func (e *Engine) snapshot(s *sess, now int64) store.Session {
	return store.Session{
		ID: s.id, BotID: s.bot, State: s.state, HandedOver: e.handed(s),
		Episode: uint64(s.episode), ExpireSent: s.expSent, Conns: int(s.conns),
		LastSeenAt: tm(s.seen), AbsentAt: tm(s.absentAt), Deadline: tm(s.deadline),
		Reason: reasonText[s.reason], UpdatedAt: tm(now),
	}
}

func (sh *shard) markDirty(s *sess) {
	if !s.dirty {
		s.dirty = true
		sh.dirty = append(sh.dirty, s)
	}
}

// next is when s must be looked at again: its deadline while present, the
// time to forget it while absent with no connection, else never.
func (e *Engine) next(s *sess) int64 {
	switch {
	case s.gone:
		return 0
	case s.state == store.Present:
		return s.deadline
	case s.conns == 0:
		return max(s.seen, s.absentAt) + e.forget
	}
	return 0
}

// rearm makes sure a heap entry exists no later than next(s). A later next
// needs nothing: the earlier entry re-arms itself when popped.
func (e *Engine) rearm(sh *shard, s *sess) {
	if n := e.next(s); n != 0 && (s.armed == 0 || n < s.armed) {
		e.push(sh, s, n)
	}
}

func (e *Engine) push(sh *shard, s *sess, at int64) {
	s.armed = at
	sh.h.push(due{at: at, s: s})
	if at < sh.head.Load() {
		sh.head.Store(at)
		if at < e.wakeAt.Load() {
			select {
			case e.kick <- struct{}{}:
			default:
			}
		}
	}
}

func (sh *shard) updateHead() {
	if len(sh.h) == 0 {
		sh.head.Store(math.MaxInt64)
	} else {
		sh.head.Store(sh.h[0].at)
	}
}

// getLocked returns the session id, creating it (present, seen now).
func (e *Engine) getLocked(sh *shard, id, bot string, now int64) *sess {
	s := sh.m[id]
	if s == nil {
		s = &sess{id: strings.Clone(id), bot: e.intern(bot), seen: now, shard: shardOf(id), handed: e.detect.Always}
		s.deadline = now + int64(e.settings(s.bot).CheckInterval)
		sh.m[s.id] = s
		// A pending forget of an earlier session with this id must not delete this one.
		for i, f := range sh.forget {
			if f == id {
				sh.forget = append(sh.forget[:i], sh.forget[i+1:]...)
				break
			}
		}
		sh.markDirty(s)
		return s
	}
	if s.bot == "" && bot != "" {
		s.bot = e.intern(bot)
		sh.markDirty(s)
	}
	return s
}

// change gathers what one call decided about one session, for commitLocked.
type change struct {
	s     *sess
	notes []store.Notification
	sync  bool // must be committed now (a notification or a hand-over change)
}

// commitLocked writes the sessions and notes of chs in one Commit, under
// sh.mu. It reports whether notifications were committed (call wake after
// unlocking). On failure the state stays applied in memory and the notes
// wait in sh.unsent for Flush to retry them.
func (e *Engine) commitLocked(sh *shard, chs []change, now int64) bool {
	if f := sh.fence; f != nil {
		<-f
	}
	put := make([]store.Session, 0, len(chs))
	var notes []store.Notification
	for i := range chs {
		c := &chs[i]
		if q := sh.unsent[c.s]; len(q) > 0 {
			c.notes = append(q[:len(q):len(q)], c.notes...)
		}
		put = append(put, e.snapshot(c.s, now))
		notes = append(notes, c.notes...)
	}
	if err := e.store.Commit(put, nil, notes); err != nil {
		e.commitErrors.Add(1)
		e.logStoreError("presence: committing a decision failed; kept in memory, will retry", err,
			zap.Int("sessions", len(chs)), zap.Int("notifications", len(notes)))
		for _, c := range chs {
			if len(c.notes) > 0 {
				if sh.unsent == nil {
					sh.unsent = map[*sess][]store.Notification{}
				}
				sh.unsent[c.s] = c.notes
			}
			sh.markDirty(c.s)
		}
		return false
	}
	for _, c := range chs {
		delete(sh.unsent, c.s)
		c.s.dirty = false // a stale entry in sh.dirty is skipped by Flush
	}
	for _, n := range notes {
		if n.Kind == store.KindOffline {
			e.nOffline.Add(1)
		} else {
			e.nOnline.Add(1)
		}
	}
	return len(notes) > 0
}

// ---- transitions (all under the session's shard lock) ----

// logTransition writes the one log line of a transition: ids, never content.
func (e *Engine) logTransition(msg string, s *sess, reason, traceparent string) {
	e.log.Info(msg, zap.String("session", s.id), zap.String("bot", s.bot),
		zap.Uint32("episode", s.episode), zap.String("reason", reason), zap.String("trace_id", traceID(traceparent)))
}

// absentLocked: the deadline passed without presence.
func (e *Engine) absentLocked(sh *shard, s *sess, set *Settings, now int64, c *change) {
	s.state = store.Absent
	s.episode++
	s.absentAt = now
	s.deadline = 0
	s.expSent = false
	s.reason = reasonDisconnected
	if set.Mode == ModeActivity {
		s.reason = reasonInactive
	}
	tp := e.span(spanAbsent, s, now, set)
	if e.handed(s) && set.Enabled {
		c.notes = append(c.notes, e.offlineNote(s, now, tp))
		s.expSent = true
		c.sync = true
	}
	e.nAbsent.Add(1)
	sh.markDirty(s)
	e.logTransition("presence: client absent", s, reasonText[s.reason], tp)
}

func (e *Engine) offlineNote(s *sess, now int64, traceparent string) store.Notification {
	return store.Notification{
		ID: newID(), Kind: store.KindOffline, SessionID: s.id, BotID: s.bot,
		Episode: uint64(s.episode), Reason: reasonText[s.reason],
		LastSeenAt: tm(s.seen), DetectedAt: tm(s.absentAt), CreatedAt: tm(now),
		TraceParent: traceparent,
	}
}

// seenLocked: the client showed presence (activity mode: activity; either
// mode: an HTTP request). The caller has set nothing yet.
func (e *Engine) seenLocked(sh *shard, s *sess, set *Settings, now int64, c *change) {
	s.seen = now
	if s.state == store.Absent {
		e.returnLocked(sh, s, set, now, c)
		return
	}
	if set.Mode == ModeActivity || s.conns == 0 {
		s.deadline = now + int64(set.CheckInterval) // lazily: the heap entry re-arms itself
	}
	sh.markDirty(s)
	e.rearm(sh, s)
}

// returnLocked: an absent session is seen again.
func (e *Engine) returnLocked(sh *shard, s *sess, set *Settings, now int64, c *change) {
	tp := e.span(spanReturned, s, now, set)
	if s.expSent {
		c.notes = append(c.notes, store.Notification{
			ID: newID(), Kind: store.KindOnline, SessionID: s.id, BotID: s.bot,
			Episode: uint64(s.episode), Text: set.ReturnText(),
			OfflineSince: tm(s.absentAt), DetectedAt: tm(now), CreatedAt: tm(now),
			TraceParent: tp,
		})
		c.sync = true
	}
	reason := reasonText[s.reason]
	s.state = store.Present
	s.expSent = false
	s.absentAt = 0
	s.reason = reasonNone
	s.deadline = 0
	if set.Mode == ModeActivity || s.conns == 0 {
		s.deadline = now + int64(set.CheckInterval)
	}
	e.nPresent.Add(1)
	sh.markDirty(s)
	e.rearm(sh, s)
	e.logTransition("presence: client back", s, reason, tp)
}

// handoffLocked applies a hand-over start (on) or end.
func (e *Engine) handoffLocked(sh *shard, s *sess, on bool, now int64, c *change) {
	if on {
		if s.handed {
			return
		}
		s.handed = true
		c.sync = true
		e.nHandoffOn.Add(1)
		set := e.settings(s.bot)
		tp := e.span(spanHandoffOn, s, now, set)
		// The agent must learn that the client is already gone.
		if s.state == store.Absent && !s.expSent && set.Enabled {
			c.notes = append(c.notes, e.offlineNote(s, now, tp))
			s.expSent = true
		}
		sh.markDirty(s)
		e.logTransition("presence: hand-over started", s, reasonText[s.reason], tp)
		return
	}
	if e.detect.Always || !s.handed {
		return
	}
	s.handed = false
	c.sync = true
	if s.state == store.Absent && s.expSent {
		// That episode is closed without a return message; a new hand-over
		// during this absence is reported as a new episode, so there is
		// never a second /expire for one episode.
		s.episode++
		s.expSent = false
	}
	e.nHandoffOff.Add(1)
	sh.markDirty(s)
	tp := e.span(spanHandoffOff, s, now, e.settings(s.bot))
	e.logTransition("presence: hand-over ended", s, reasonText[s.reason], tp)
}

// finish commits c when needed; it reports whether to wake the deliverer.
func (e *Engine) finish(sh *shard, c *change, now int64) bool {
	if c.s == nil || !c.sync {
		return false
	}
	return e.commitLocked(sh, []change{*c}, now)
}

// ---- deadlines ----

// fire handles s's popped heap entry at now. It returns a retry time when
// s must be looked at again though next(s) says otherwise.
func (e *Engine) fire(sh *shard, s *sess, now int64, chs *[]change) int64 {
	if s.state == store.Present {
		if s.deadline == 0 || s.deadline > now {
			return 0 // moved by activity or cleared by a connection
		}
		set := e.settings(s.bot)
		if set.Mode == ModeConnection && s.conns > 0 {
			s.deadline = 0 // the mode changed under a connected session
			sh.markDirty(s)
			return 0
		}
		c := change{s: s}
		e.absentLocked(sh, s, set, now, &c)
		if c.sync {
			*chs = append(*chs, c)
		}
		return 0
	}
	if s.conns > 0 || max(s.seen, s.absentAt)+e.forget > now {
		return 0
	}
	if _, busy := sh.unsent[s]; busy {
		return now + int64(retryDelay) // forgetting it would lose its notifications
	}
	s.gone = true
	delete(sh.m, s.id)
	sh.forget = append(sh.forget, s.id)
	return 0
}

// Tick fires everything due at now: absences, and forgetting of sessions
// idle past ForgetAfter. Run calls it; tests drive it with a fake clock.
func (e *Engine) Tick(now time.Time) {
	n := now.UnixNano()
	woke := false
	var chs []change
	for i := range e.shards {
		sh := &e.shards[i]
		if sh.head.Load() > n {
			continue
		}
		sh.mu.Lock()
		chs = chs[:0]
		for len(sh.h) > 0 && sh.h[0].at <= n {
			d := sh.h.pop()
			s := d.s
			if s.gone || d.at != s.armed {
				continue // stale: superseded by an earlier entry, or forgotten
			}
			s.armed = 0
			if r := e.fire(sh, s, n, &chs); r != 0 {
				e.push(sh, s, r)
			} else {
				e.rearm(sh, s) // next(s) > n here, so the loop ends
			}
		}
		sh.updateHead()
		if len(chs) > 0 && e.commitLocked(sh, chs, n) {
			woke = true
		}
		sh.mu.Unlock()
	}
	if woke {
		e.wake()
	}
}

func (e *Engine) earliest() int64 {
	m := int64(math.MaxInt64)
	for i := range e.shards {
		m = min(m, e.shards[i].head.Load())
	}
	return m
}

// Run fires deadlines on one timer reset to the earliest deadline and
// flushes every FlushInterval. When ctx ends it flushes once more and
// returns that flush's error.
func (e *Engine) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return errors.New("presence: Run is already running")
	}
	defer e.running.Store(false)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	nextFlush := e.now() + int64(e.flushInt)
	for {
		now := e.now()
		e.Tick(time.Unix(0, now))
		if now >= nextFlush {
			if err := e.Flush(); err != nil {
				e.logStoreError("presence: flush failed, will retry", err)
			}
			nextFlush = now + int64(e.flushInt)
		}
		// Any push while we compute sees MaxInt64 and kicks, so none is missed.
		e.wakeAt.Store(math.MaxInt64)
		at := min(e.earliest(), nextFlush)
		e.wakeAt.Store(at)
		t.Reset(time.Duration(max(at-e.now(), 0)))
		select {
		case <-ctx.Done():
			return e.Flush()
		case <-t.C:
		case <-e.kick:
		}
	}
}

// Flush writes pending non-decision changes (connections, last seen,
// deadlines moved by activity, sessions created or forgotten) in one Commit,
// and retries decisions whose commit failed.
func (e *Engine) Flush() error {
	e.flushMu.Lock()
	defer e.flushMu.Unlock()
	now := e.now()
	done := make(chan struct{})
	var put []store.Session
	var forget []string
	var taken [numShards][]*sess
	var forgot [numShards][]string
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		if len(sh.dirty) == 0 && len(sh.forget) == 0 {
			sh.mu.Unlock()
			continue
		}
		keep := sh.dirty[:0]
		for _, s := range sh.dirty {
			switch {
			case !s.dirty || s.gone:
			case sh.unsent[s] != nil:
				keep = append(keep, s) // written with its notes, by the retry below
			default:
				s.dirty = false
				put = append(put, e.snapshot(s, now))
				taken[i] = append(taken[i], s)
			}
		}
		clear(sh.dirty[len(keep):])
		sh.dirty = keep
		if cap(sh.dirty) > 1024 && len(sh.dirty) < cap(sh.dirty)/4 {
			sh.dirty = append([]*sess(nil), sh.dirty...)
		}
		forget = append(forget, sh.forget...)
		forgot[i], sh.forget = sh.forget, nil
		sh.fence = done
		sh.mu.Unlock()
	}
	var err error
	if len(put) > 0 || len(forget) > 0 {
		err = e.store.Commit(put, forget, nil)
	}
	close(done)
	if err != nil {
		e.commitErrors.Add(1)
		err = fmt.Errorf("presence: flushing %d sessions: %w", len(put), err)
		for i := range e.shards {
			if len(taken[i]) == 0 && len(forgot[i]) == 0 {
				continue
			}
			sh := &e.shards[i]
			sh.mu.Lock()
			for _, s := range taken[i] {
				if !s.gone {
					sh.markDirty(s)
				}
			}
			for _, id := range forgot[i] {
				if sh.m[id] == nil { // not re-created meanwhile
					sh.forget = append(sh.forget, id)
				}
			}
			sh.mu.Unlock()
		}
	}
	woke := false
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		if len(sh.unsent) > 0 {
			chs := make([]change, 0, len(sh.unsent))
			for s := range sh.unsent {
				chs = append(chs, change{s: s})
			}
			if e.commitLocked(sh, chs, now) {
				woke = true
			}
		}
		sh.mu.Unlock()
	}
	if woke {
		e.wake()
	}
	return err
}
