// Package cluster is the presence engine of cluster mode: one per replica,
// it feeds the proxy's events to the shared state in Redis (store/redisstate,
// where every decision is made by a script) and sweeps the deadlines there
// (docs/ARCHITECTURE.md, "Cluster mode").
package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/presence"
	"github.com/presence-sidecar/presence-sidecar/presence/rules"
	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
	"github.com/presence-sidecar/presence-sidecar/timeline"
)

// EngineOptions configure an Engine.
type EngineOptions struct {
	State   *redisstate.State
	Replica string        // this process's id in the registry; unique per process
	Lease   time.Duration // REDIS_LEASE_TTL: a replica not heard of this long is dead

	// Bots are the bots' effective settings (the environment's defaults,
	// PRESENCE_BOTS_FILE, run-time changes, which live in Redis: BotStore).
	// Reloaded every lease/3, so another replica's change shows within that.
	Bots         *presence.Bots
	Detect       presence.Detect
	HandoffStart rules.Set
	HandoffEnd   rules.Set
	Ignore       rules.Set

	Sweep time.Duration // how often every shard's due deadlines are swept (default 250ms)
	// Lag, when not nil, gets each decision's lag: how long after its due
	// time (both by Redis's clock) a sweep decided it.
	Lag  func(time.Duration)
	Log  *zap.Logger
	Wake func() // called after notifications were queued
	// Timeline, when set, gets what this replica sees and decides of each
	// session (package timeline). nil: none.
	Timeline *timeline.Recorder
}

// Engine feeds the proxy's events to the cluster's state in Redis and
// sweeps its deadlines. The proxy's callbacks never wait for Redis: they
// write the ledger, which one writer goroutine states to Redis; while Redis
// is away the ledger keeps what it must hear, decisions pause (no sweep, so
// no /expire from missing data), and when Redis is back the ledger is
// replayed and one lease passes before sweeping again, so that every
// replica re-asserted its connections first.
type Engine struct {
	o      EngineOptions
	log    *zap.Logger
	ledger *ledger

	connsMu sync.Mutex
	conns   map[event.ConnID]*connInfo

	shards ownership // the shards swept at every round (shards.go)

	healthy atomic.Bool   // the last Redis call succeeded
	okSeq   atomic.Uint64 // successful rounds so far (redisFailed)
	lastErr atomic.Pointer[string]
	// reassertOwed is when (Unix ms, Redis's clock) Redis last told this
	// replica its lease had lapsed, until the self-reap and re-assertion
	// that follow have succeeded; 0: none owed.
	reassertOwed atomic.Int64
	rounds       int          // renewal rounds (registryLoop's goroutine only)
	sweepAfter   atomic.Int64 // Unix ns: no sweep before (a lease after Redis came back)

	counts struct {
		decisions, queued, returned, redisErrors, reasserts, reaped       atomic.Uint64
		offline, online, handoffOn, handoffOff, idsRefused, untrackedReqs atomic.Uint64
		renewals, renewFailures, restated                                 atomic.Uint64
		untrackedConns                                                    atomic.Int64
	}
}

type connInfo struct {
	sid   string
	bot   string
	trace string
}

var _ event.Observer = (*Engine)(nil)

// NewEngine returns an Engine; Run starts its work.
func NewEngine(o EngineOptions) (*Engine, error) {
	switch {
	case o.State == nil:
		return nil, errors.New("cluster: no state")
	case o.Replica == "":
		return nil, errors.New("cluster: no replica id")
	case o.Lease <= 0:
		return nil, errors.New("cluster: the lease must be positive")
	case o.Bots == nil:
		return nil, errors.New("cluster: no bot settings")
	}
	if o.Sweep <= 0 {
		o.Sweep = 250 * time.Millisecond
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Wake == nil {
		o.Wake = func() {}
	}
	return &Engine{o: o, log: o.Log, ledger: newLedger(), conns: map[event.ConnID]*connInfo{}}, nil
}

// ---- event.Observer: the data path; map writes only ----

// ConnOpened implements event.Observer.
func (e *Engine) ConnOpened(id event.ConnID, o event.Open) {
	who := e.bound(o.Who)
	c := &connInfo{sid: who.SessionID, bot: who.BotID, trace: o.Trace}
	e.connsMu.Lock()
	e.conns[id] = c
	e.connsMu.Unlock()
	if c.sid == "" {
		e.counts.untrackedConns.Add(1)
		return
	}
	e.o.Timeline.Add(c.sid, timeline.Event{Kind: timeline.ConnOpened, Conn: uint64(id)})
	e.attach(c.sid, c.bot, c.trace)
}

// bound drops ids over store.MaxIDBytes (they are not tracked, as in the
// embedded engine): a key is never built from an unbounded client string.
func (e *Engine) bound(who event.Identity) event.Identity {
	if len(who.SessionID) > store.MaxIDBytes {
		who.SessionID = ""
		e.counts.idsRefused.Add(1)
	}
	if len(who.BotID) > store.MaxIDBytes {
		who.BotID = ""
		e.counts.idsRefused.Add(1)
	}
	return who
}

func (e *Engine) attach(sid, bot, trace string) {
	e.ledger.update(sid, func(en *entry) {
		en.conns++
		en.connsDirty, en.opened = true, true
		if bot != "" {
			en.bot = bot
		}
		if trace != "" {
			en.trace = trace
		}
	})
}

// ConnIdentified implements event.Observer.
func (e *Engine) ConnIdentified(id event.ConnID, who event.Identity) {
	who = e.bound(who)
	e.connsMu.Lock()
	c := e.conns[id]
	attach := c != nil && c.sid == "" && who.SessionID != ""
	var bot, trace string
	if c != nil {
		if attach {
			c.sid = who.SessionID
		}
		if who.BotID != "" && c.bot == "" {
			c.bot = who.BotID
		}
		bot, trace = c.bot, c.trace
	}
	e.connsMu.Unlock()
	if attach {
		e.counts.untrackedConns.Add(-1)
		e.o.Timeline.Add(who.SessionID, timeline.Event{Kind: timeline.ConnOpened, Conn: uint64(id)})
		e.attach(who.SessionID, bot, trace)
	}
}

// Message implements event.Observer: the hand-over rules on any message,
// and in activity mode a client message not matched by Ignore is activity.
func (e *Engine) Message(id event.ConnID, dir event.Direction, m event.Message) {
	e.connsMu.Lock()
	var sid, bot string
	if c := e.conns[id]; c != nil {
		sid, bot = c.sid, c.bot // copied under the lock: ConnIdentified writes them
	}
	e.connsMu.Unlock()
	if sid == "" {
		return
	}
	if dir == event.FromClient {
		e.o.Timeline.Activity(sid, false)
	}
	var handoff int8
	if e.o.Detect.Rules {
		switch {
		case e.o.HandoffStart.Match(dir, m.Prefix):
			handoff = 1
		case e.o.HandoffEnd.Match(dir, m.Prefix):
			handoff = -1
		}
	}
	activity := dir == event.FromClient && e.o.Bots.Settings(bot).Mode == presence.ModeActivity &&
		!e.o.Ignore.Match(event.FromClient, m.Prefix)
	if handoff == 0 && !activity {
		return
	}
	now := time.Now()
	e.ledger.update(sid, func(en *entry) {
		if handoff != 0 {
			en.handoff, en.handedOver = handoff, handoff
		}
		if activity {
			en.activityAt = now
		}
	})
}

// ConnClosed implements event.Observer. A connection the sidecar closes at
// shutdown still counts: its lease lapses with the replica, and the client
// has a whole interval from then to come back (invariant 6).
func (e *Engine) ConnClosed(id event.ConnID, reason event.CloseReason) {
	e.connsMu.Lock()
	c := e.conns[id]
	delete(e.conns, id)
	e.connsMu.Unlock()
	if c != nil && c.sid == "" {
		e.counts.untrackedConns.Add(-1)
	}
	if c != nil && c.sid != "" {
		if reason == event.CloseProbeTimeout {
			e.o.Timeline.Add(c.sid, timeline.Event{Kind: timeline.ProbeTimeout, Conn: uint64(id), Reason: string(reason)})
		}
		e.o.Timeline.Add(c.sid, timeline.Event{Kind: timeline.ConnClosed, Conn: uint64(id), Reason: string(reason)})
	}
	if c == nil || c.sid == "" || reason == event.CloseShutdown {
		return
	}
	e.ledger.update(c.sid, func(en *entry) {
		if en.conns > 0 {
			en.conns--
		}
		en.connsDirty = true
	})
}

// HTTPRequest implements event.Observer: a request of a session is a sign
// of presence in either mode.
func (e *Engine) HTTPRequest(r event.Request) { e.sign(r) }

// UpgradeFailed implements event.Observer: a client trying to reach the
// service is present (invariant 7).
func (e *Engine) UpgradeFailed(r event.Request) { e.sign(r) }

func (e *Engine) sign(r event.Request) {
	r.Who = e.bound(r.Who)
	if r.Who.SessionID == "" {
		e.counts.untrackedReqs.Add(1)
		return
	}
	var handoff int8
	if e.o.Detect.Rules && r.Body != nil {
		switch {
		case e.o.HandoffStart.Match(event.FromClient, r.Body):
			handoff = 1
		case e.o.HandoffEnd.Match(event.FromClient, r.Body):
			handoff = -1
		}
	}
	e.o.Timeline.Activity(r.Who.SessionID, true)
	now := time.Now()
	e.ledger.update(r.Who.SessionID, func(en *entry) {
		en.activityAt = now
		if r.Who.BotID != "" {
			en.bot = r.Who.BotID
		}
		if r.Trace != "" && en.conns == 0 {
			en.trace = r.Trace
		}
		if handoff != 0 {
			en.handoff, en.handedOver = handoff, handoff
		}
	})
}

// SetHandoff starts or ends a session's hand-over (the admin API). Unlike
// the rules it waits for Redis: the caller wants to know it took effect.
func (e *Engine) SetHandoff(sid, bot string, on bool) error {
	if !e.o.Detect.API {
		return presence.ErrAPIDisabled
	}
	if len(sid) > store.MaxIDBytes || len(bot) > store.MaxIDBytes {
		return presence.ErrIDTooLong
	}
	ctx, cancel := context.WithTimeout(context.Background(), redisstate.CallTimeout)
	defer cancel()
	began := e.began()
	changed, err := e.o.State.Handoff(ctx, sid, bot, on, e.ledger.trace(sid))
	if err != nil {
		e.redisFailed(err, began)
		return fmt.Errorf("cluster: Redis: %w", err)
	}
	e.countHandoff(changed, on)
	e.timelineHandoff(sid, changed, on)
	e.ledger.sawHandoff(sid, on)
	if changed && on {
		e.o.Wake() // a start during an absence queued its /expire
	}
	return nil
}

func (e *Engine) timelineHandoff(sid string, changed, on bool) {
	switch {
	case changed && on:
		e.o.Timeline.Add(sid, timeline.Event{Kind: timeline.HandoffOn})
	case changed:
		e.o.Timeline.Add(sid, timeline.Event{Kind: timeline.HandoffOff})
	}
}

func (e *Engine) countHandoff(changed, on bool) {
	switch {
	case changed && on:
		e.counts.handoffOn.Add(1)
	case changed:
		e.counts.handoffOff.Add(1)
	}
}

// ---- the writer, the sweeper, the registry ----

// Run states the ledger to Redis, renews this replica's lease, reaps lapsed
// replicas and sweeps deadlines, until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	e.sweepAfter.Store(time.Now().Add(e.o.Lease).UnixNano()) // let every replica's connections in first
	var wg sync.WaitGroup
	wg.Go(func() { e.writeLoop(ctx) })
	wg.Go(func() { e.registryLoop(ctx) })
	wg.Go(func() { e.sweepLoop(ctx) })
	wg.Wait()
	return nil
}

func (e *Engine) writeLoop(ctx context.Context) {
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	failing := false
	for {
		kick := e.ledger.kick
		if failing {
			// A Redis that failed the last round is tried again once a
			// second, not at every connection change: retrying each change
			// against a dead Redis would cost the relay's CPU for nothing.
			kick = nil
		}
		select {
		case <-ctx.Done():
			// A last write of what is pending (activity, hand-overs, closes
			// that came before the shutdown), bounded by one call's time.
			final, cancel := context.WithTimeout(context.Background(), redisstate.CallTimeout)
			e.writeDirty(final)
			cancel()
			return
		case <-kick:
		case <-retry.C:
		}
		if failing = e.writeDirty(ctx); failing {
			retry.Reset(time.Second)
		}
	}
}

// writeDirty states every dirty entry; it reports whether any write failed
// (those are dirty again). Up to writers calls run at once: each is one
// round trip, and rueidis pipelines concurrent calls on one connection, so
// a burst of connection changes is stated at Redis's pace rather than one
// round trip at a time.
func (e *Engine) writeDirty(ctx context.Context) (failed bool) {
	var (
		mu      sync.Mutex
		woke    bool
		wg      sync.WaitGroup
		sem     = make(chan struct{}, writers)
		stopped atomic.Bool // once a write failed, the rest of the round is put back unsent
	)
	began := e.began()
	for n := range redisstate.Shards {
		for _, p := range e.ledger.take(n) {
			if stopped.Load() {
				e.ledger.putBack(p)
				continue
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				queued, err := e.write(ctx, p)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					e.ledger.putBack(p)
					e.redisFailed(err, began)
					stopped.Store(true)
					failed = true
					return
				}
				woke = woke || queued
			})
		}
	}
	wg.Wait()
	if !failed {
		e.redisOK()
	}
	if woke {
		e.o.Wake()
	}
	return failed
}

// writers bounds the writer's concurrent calls to Redis.
const writers = 32

// write states one session's pending changes; it reports whether a
// notification was queued.
func (e *Engine) write(ctx context.Context, p pending) (queued bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, redisstate.CallTimeout)
	defer cancel()
	set := e.o.Bots.Settings(p.bot)
	ev := redisstate.Event{Bot: p.bot, Mode: redisstate.Mode{Activity: set.Mode == presence.ModeActivity, Interval: set.CheckInterval},
		HandedOver: e.o.Detect.Always || p.handedOver > 0, Muted: !set.Enabled, Opened: p.opened, ReturnText: set.ReturnText(), TraceParent: p.trace}
	if p.handoff != 0 {
		changed, err := e.o.State.Handoff(ctx, p.sid, p.bot, p.handoff > 0, p.trace)
		if err != nil {
			return false, err
		}
		e.countHandoff(changed, p.handoff > 0)
		e.timelineHandoff(p.sid, changed, p.handoff > 0)
		queued = changed && p.handoff > 0 // maybe an /expire: wake the deliverer
	}
	if p.connsDirty {
		sg, _, err := e.o.State.Conns(ctx, p.sid, e.o.Replica, p.conns, ev)
		if err != nil {
			return false, err
		}
		queued = queued || e.noteSign(p.sid, sg)
	}
	if !p.activityAt.IsZero() {
		sg, err := e.o.State.Activity(ctx, p.sid, ev)
		if err != nil {
			return queued, err
		}
		queued = queued || e.noteSign(p.sid, sg)
	}
	return queued, nil
}

func (e *Engine) noteSign(sid string, sg redisstate.Sign) bool {
	if sg.Returned {
		e.o.Timeline.Add(sid, timeline.Event{Kind: timeline.Returned, Episode: sg.Episode})
	}
	if sg.Queued {
		// The webhook-id is derived in Redis; the attempts carry it.
		e.o.Timeline.Add(sid, timeline.Event{Kind: timeline.Queued, Notification: string(store.KindOnline), Episode: sg.Episode})
	}
	if sg.Returned {
		e.counts.returned.Add(1)
		e.log.Info("presence: client back", zap.String("session", sid), zap.Uint64("episode", sg.Episode),
			zap.Bool("return_message_queued", sg.Queued))
	}
	if sg.Queued {
		e.counts.queued.Add(1)
		e.counts.online.Add(1)
	}
	return sg.Queued
}

// began is what redisFailed needs to know of a call: the successes seen
// before it started.
func (e *Engine) began() uint64 { return e.okSeq.Load() }

// redisFailed records a failed call that started when began was taken. A
// call that started before a later success (it failed during an outage that
// has since ended) counts as an error but does not mark Redis away again:
// health must not flap after a recovery.
func (e *Engine) redisFailed(err error, began uint64) {
	e.counts.redisErrors.Add(1)
	msg := err.Error()
	e.lastErr.Store(&msg)
	if e.okSeq.Load() != began {
		return
	}
	if e.healthy.Swap(false) {
		e.log.Error("presence: Redis is unreachable; decisions pause, connection changes are kept and replayed", zap.Error(err))
	}
}

func (e *Engine) redisOK() {
	e.okSeq.Add(1)
	if !e.healthy.Swap(true) {
		// Back (or first contact): every replica re-asserts its connections
		// within a lease; sweeping earlier could decide from missing data.
		e.sweepAfter.Store(time.Now().Add(e.o.Lease).UnixNano())
		e.log.Info("presence: Redis reachable; sweeping resumes after one lease", zap.Duration("lease", e.o.Lease))
	}
}

// Owns reports whether shard n is among the shards this replica looks at
// every round (shards.go); the cluster deliverer shares its claims the same
// way.
func (e *Engine) Owns(n int) bool { return e.shards.owns(n) }

// Healthy reports whether the last call to Redis succeeded (/readyz).
func (e *Engine) Healthy() bool { return e.healthy.Load() }

// RedisTrouble says why presence is degraded ("" when Redis answers):
// /readyz shows it without failing, since the data plane is unaffected.
func (e *Engine) RedisTrouble() string {
	if e.healthy.Load() {
		return ""
	}
	why := "not reached yet"
	if m := e.lastErr.Load(); m != nil {
		why = "unreachable (" + *m + ")"
	}
	return why + "; decisions paused, connection changes kept for replay"
}

func (e *Engine) registryLoop(ctx context.Context) {
	// Renewing every third of the lease leaves two renewals' slack; the
	// lapsed replicas are looked for more often, so that a dead replica's
	// connections are gone within about a second of its lapse.
	renewEvery := e.o.Lease / 3
	tick := time.NewTicker(min(time.Second, renewEvery))
	defer tick.Stop()
	var renewed time.Time
	for {
		if time.Since(renewed) >= renewEvery-renewEvery/10 {
			renewed = time.Now()
			e.renewRound(ctx)
		}
		e.reapRound(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// renewRound renews this replica's lease, re-asserts its connections when
// Redis lost the lease, shares the shards among the live replicas,
// reconciles what Redis records of this replica every few rounds, and
// reloads the bots' settings.
func (e *Engine) renewRound(parent context.Context) {
	if err := e.o.Bots.Reload(); err != nil { // its own bounded call
		e.log.Debug("presence: bot settings not reloaded", zap.Error(err))
	}
	began := e.began()
	ctx, cancel := context.WithTimeout(parent, redisstate.CallTimeout)
	now, lapsed, err := e.o.State.Renew(ctx, e.o.Replica, e.o.Lease)
	cancel()
	if err != nil {
		e.counts.renewFailures.Add(1)
		e.redisFailed(err, began)
		e.shards.assign(e.o.Replica, nil)
		return
	}
	first := e.counts.renewals.Add(1) == 1
	e.redisOK()
	switch {
	case lapsed && first:
		// A new process's lease is missing, not lapsed: nothing of ours in
		// Redis can be stale (the id is new), so there is nothing to reap;
		// stating what is held already is harmless.
		e.ledger.reassert()
	case lapsed:
		e.reassertOwed.CompareAndSwap(0, now.UnixMilli())
	}
	if owed := e.reassertOwed.Load(); owed != 0 && e.reassert(parent, time.UnixMilli(owed)) {
		e.reassertOwed.CompareAndSwap(owed, 0)
	}
	e.rounds++
	if e.rounds%reconcileEvery == 0 {
		e.reconcile(parent)
	}
	ctx, cancel = context.WithTimeout(parent, redisstate.CallTimeout)
	defer cancel()
	var live []string
	if rs, err := e.o.State.Replicas(ctx); err == nil {
		for _, r := range rs {
			if !r.Lapsed {
				live = append(live, r.ID)
			}
		}
	}
	e.shards.assign(e.o.Replica, live)
}

// reassert follows a lapse of our lease (a pause past it, or a Redis that
// lost it): survivors may have reaped us or may yet, so reap ourselves
// (idempotent; sessions left without connections start their interval at
// lapse), then state every live connection again. It reports success;
// until then it is owed at every round.
func (e *Engine) reassert(parent context.Context, lapse time.Time) bool {
	began := e.began()
	ctx, cancel := context.WithTimeout(parent, e.o.Lease)
	defer cancel()
	if _, err := e.o.State.ReapReplica(ctx, redisstate.LapsedReplica{ID: e.o.Replica, Lapse: lapse}); err != nil {
		e.redisFailed(err, began)
		return false
	}
	e.counts.reasserts.Add(1)
	e.ledger.reassert()
	e.log.Warn("presence: Redis had lost this replica's lease; its connections were stated again", zap.Time("lapse", lapse))
	return true
}

// reconcileEvery is how often (in renewal rounds, a third of a lease each)
// the replica compares what Redis records of its connections with what it
// holds.
const reconcileEvery = 3

// reconcile finds writes Redis acknowledged and then lost (a Sentinel
// failover to a replica that had not received them): per shard, the count
// of sessions Redis lists on this replica against the count it holds, and
// where they differ the lists, restating every difference (ledger.restate).
// A close that was lost is then stated again within a lease, and its
// session decided an interval later: no decision is lost for good.
func (e *Engine) reconcile(parent context.Context) {
	began := e.began()
	ctx, cancel := context.WithTimeout(parent, redisstate.CallTimeout)
	counts, err := e.o.State.ReplicaCounts(ctx, e.o.Replica)
	cancel()
	if err != nil {
		e.redisFailed(err, began)
		return
	}
	marked := 0
	for n := range redisstate.Shards {
		if held := e.ledger.held(n); int64(len(held)) != counts[n] {
			ctx, cancel := context.WithTimeout(parent, redisstate.CallTimeout)
			sids, err := e.o.State.ReplicaSessions(ctx, n, e.o.Replica)
			cancel()
			if err != nil {
				e.redisFailed(err, began)
				return
			}
			marked += e.ledger.restate(n, sids)
		}
	}
	if marked > 0 {
		e.counts.restated.Add(uint64(marked))
		e.log.Info("presence: what Redis records of this replica's connections differed from what it holds; restated",
			zap.Int("sessions", marked))
	}
}

// reapRound removes the connections of every other replica whose lease
// lapsed (idempotent: survivors may race).
func (e *Engine) reapRound(parent context.Context) {
	ctx, cancel := context.WithTimeout(parent, e.o.Lease)
	defer cancel()
	lapsed, err := e.o.State.Lapsed(ctx)
	if err != nil {
		return // the renewal reports Redis's trouble
	}
	for _, r := range lapsed {
		if r.ID == e.o.Replica {
			continue
		}
		began := e.began()
		n, err := e.o.State.ReapReplica(ctx, r)
		if err != nil {
			e.redisFailed(err, began)
			return
		}
		e.counts.reaped.Add(1)
		e.log.Warn("presence: a replica's lease lapsed; its connections were removed",
			zap.String("replica", r.ID), zap.Time("lapse", r.Lapse), zap.Int64("sessions", n))
	}
}

// fireBatch: how many decisions one sweep's Fire run takes at most
// (redisstate.FireBatch).
const fireBatch = redisstate.FireBatch

func (e *Engine) sweepLoop(ctx context.Context) {
	tick := time.NewTicker(e.o.Sweep)
	defer tick.Stop()
	rounds := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !e.healthy.Load() || time.Now().UnixNano() < e.sweepAfter.Load() {
			continue
		}
		rounds++
		if e.sweep(ctx, rounds%fullSweepEvery == 0) {
			e.o.Wake()
		}
	}
}

// sweep decides the due deadlines of the shards this replica owns, or of
// every shard (all), once; it reports whether a notification was queued.
func (e *Engine) sweep(parent context.Context, all bool) (woke bool) {
	for n := 0; n < redisstate.Shards; n++ {
		if !all && !e.shards.owns(n) {
			continue
		}
		ctx, cancel := context.WithTimeout(parent, redisstate.CallTimeout)
		began := e.began()
		ds, err := e.o.State.Fire(ctx, n, fireBatch)
		cancel()
		if err != nil {
			e.redisFailed(err, began)
			break
		}
		if len(ds) == fireBatch {
			n-- // more may be due in this shard: again, in another short run
		}
		for _, d := range ds {
			e.counts.decisions.Add(1)
			if e.o.Lag != nil && !d.Due.IsZero() {
				e.o.Lag(max(d.At.Sub(d.Due), 0))
			}
			e.o.Timeline.Add(d.SessionID, timeline.Event{At: d.At, Kind: timeline.Absent, Episode: d.Episode, Reason: d.Reason})
			if d.Queued {
				e.o.Timeline.Add(d.SessionID, timeline.Event{At: d.At, Kind: timeline.Queued, Notification: string(store.KindOffline), Episode: d.Episode})
				e.counts.queued.Add(1)
				e.counts.offline.Add(1)
				woke = true
			}
			e.log.Info("presence: client absent", zap.String("session", d.SessionID),
				zap.Uint64("episode", d.Episode), zap.String("reason", d.Reason), zap.Bool("expire_queued", d.Queued))
		}
	}
	return woke
}

// ClusterStats are the engine's own counters since start (metrics).
type ClusterStats struct {
	Decisions, Queued, Returned, RedisErrors, Reasserts, ReapedReplicas uint64
	Renewals, RenewFailures                                             uint64
	LedgerSessions, LedgerConnections, LedgerDirty                      int
	Healthy                                                             bool
}

// ClusterStats returns the engine's own counters.
func (e *Engine) ClusterStats() ClusterStats {
	s, c, d := e.ledger.size()
	return ClusterStats{
		Decisions: e.counts.decisions.Load(), Queued: e.counts.queued.Load(), Returned: e.counts.returned.Load(),
		RedisErrors: e.counts.redisErrors.Load(), Reasserts: e.counts.reasserts.Load(), ReapedReplicas: e.counts.reaped.Load(),
		Renewals: e.counts.renewals.Load(), RenewFailures: e.counts.renewFailures.Load(),
		LedgerSessions: s, LedgerConnections: c, LedgerDirty: d, Healthy: e.healthy.Load(),
	}
}
