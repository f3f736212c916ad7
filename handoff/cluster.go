package handoff

// The deliverer of cluster mode: the outbox is Redis's per-session queues
// (store/redisstate), shared by every replica. A replica leases only queue
// heads, with a TTL and a fencing token, so a session's notifications go out
// one at a time, oldest first, and a dead replica's heads are taken over once
// its leases lapse (docs/ARCHITECTURE.md, "Cluster mode", "Outbox takeover
// without reordering"). Each attempt is the embedded deliverer's: the same
// request, signature, verdict rules, backoff, Retry-After, retry horizon,
// logs, span and Outcome; only where its result is recorded differs.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
	"github.com/presence-sidecar/presence-sidecar/tracectx"
)

const (
	// ClusterLeaseSlack is how much longer than one attempt (Timeout) a head's
	// lease must last: it covers the claim's and the acknowledgement's round
	// trips and a pause, so that a live deliverer never loses its lease
	// mid-attempt and a head is only ever sent twice when a deliverer died or
	// stalled (docs/ARCHITECTURE.md, "Delivery": at least once).
	ClusterLeaseSlack = 5 * time.Second
	// claimInterval is how often every shard is asked for due heads: Redis
	// has no way to wake a replica when another one queued a notification
	// or a retry became due.
	claimInterval = 200 * time.Millisecond
	// fullClaimEvery: with ShareShards, every shard is asked at every
	// fullClaimEvery-th round (1 s), the owned ones at every round; so a
	// head in a shard whose owner died waits at most that long.
	fullClaimEvery = 5
)

// ClusterDeliverer sends cluster mode's shared outbox. Create it with
// NewCluster and run it with Run; any number of replicas may run one each.
type ClusterDeliverer struct {
	d       *Deliverer // the attempt machinery; its Store is unused
	st      *redisstate.State
	owner   string
	lease   time.Duration
	wake    chan struct{}
	running atomic.Bool
	counts  clusterCounts
	owns    func(shard int) bool // ShareShards; nil: every shard every round

	statsMu  sync.Mutex // guards the last ClusterStats reading
	stats    ClusterStats
	statsAt  time.Time
	statsErr error
}

// ShareShards makes Run ask Redis at every round only for the shards owns
// reports, and for every shard once a second: the live replicas share the
// shards (presence/cluster's Engine.Owns), so an idle cluster's claims cost
// Redis one round per shard, not one per shard per replica. Call it before
// Run.
func (c *ClusterDeliverer) ShareShards(owns func(shard int) bool) { c.owns = owns }

// NewCluster returns a deliverer of st's outbox for owner (this replica's id,
// unique in the cluster). o is validated as by New, except that o.Store is not
// used. lease is how long a claimed head stays this deliverer's; zero takes
// Timeout + ClusterLeaseSlack, and a shorter one is refused.
func NewCluster(o Options, st *redisstate.State, owner string, lease time.Duration) (*ClusterDeliverer, error) {
	if st == nil {
		return nil, errors.New("handoff: no cluster state")
	}
	if owner == "" {
		return nil, errors.New("handoff: no owner: want this replica's id")
	}
	d, err := newDeliverer(o)
	if err != nil {
		return nil, err
	}
	least := d.o.Timeout + ClusterLeaseSlack
	if lease == 0 {
		lease = least
	}
	if lease < least {
		return nil, fmt.Errorf("handoff: lease %s: want at least Timeout (%s) + %s, so that a live deliverer never loses its lease mid-attempt",
			lease, d.o.Timeout, ClusterLeaseSlack)
	}
	return &ClusterDeliverer{d: d, st: st, owner: owner, lease: lease, wake: make(chan struct{}, 1)}, nil
}

// Wake tells Run that this replica queued notifications. It never blocks.
func (c *ClusterDeliverer) Wake() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// clusterDone is what an attempt hands back to Run.
type clusterDone struct {
	shard int
	sid   string
}

// Run claims and delivers due heads until ctx ends, then waits for the
// attempts it started (each bounded by Timeout, and acknowledged) and returns
// nil. At most Concurrency attempts run at once.
func (c *ClusterDeliverer) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("handoff: Run is already running")
	}
	defer c.running.Store(false)
	d := c.d
	if d.ownClient {
		defer d.client.CloseIdleConnections()
	}
	done := make(chan clusterDone, d.o.Concurrency) // never blocks: at most Concurrency attempts run
	inflight := map[string]struct{}{}               // session ids with an attempt running here
	var attempts sync.WaitGroup
	var failBO time.Duration // backoff between failing claims
	var retryAt time.Time
	first := 0 // the shard a sweep starts at, rotated so none is favoured when slots are few

	// deferred are leases this deliverer won for a session whose attempt
	// here had not reported back yet: its head was acknowledged and the next
	// one became due before Run heard so (or our earlier lease lapsed while
	// the attempt still ran). Each starts when that attempt is done, so the
	// session's notifications still go out one at a time, in order, and none
	// waits for its lease to lapse.
	deferred := map[string]redisstate.Lease{}
	startAttempt := func(l redisstate.Lease) {
		sid := l.Note.SessionID
		inflight[sid] = struct{}{}
		if l.TakenOver {
			c.counts.takeovers.Add(1)
			d.log.Info("handoff: taking over a notification whose deliverer's lease lapsed", zap.String("session", sid),
				zap.String("webhook_id", l.Note.ID), zap.Int("attempts", l.Note.Attempts))
		}
		attempts.Go(func() {
			c.attempt(l)
			done <- clusterDone{shard: l.Shard, sid: sid}
		})
	}
	finished := func(r clusterDone) {
		delete(inflight, r.sid)
		if l, ok := deferred[r.sid]; ok {
			delete(deferred, r.sid)
			startAttempt(l)
		}
	}

	// more marks the shards that may hold more due heads: their last claim
	// filled every slot it asked for, or a sweep passed them by because
	// every slot was taken. A slot that frees up claims from them at once
	// instead of waiting for the next round. A shard whose claim came back
	// short had none left then (claim.lua's window looks past every leased
	// head), and is asked again only when one of its attempts here finishes
	// (the session's next head is due), at a round, or on Wake: so a burst
	// is drained at the rate attempts finish, not one shard per round.
	var more [redisstate.Shards]bool
	full := func() bool { return len(inflight) >= d.o.Concurrency }

	// claim leases due heads of shard for the free slots and starts their
	// attempts; false when Redis failed.
	claim := func(shard int) bool {
		free := d.o.Concurrency - len(inflight)
		if free <= 0 {
			return true
		}
		leases, err := c.st.Claim(ctx, shard, c.owner, c.lease, free)
		more[shard] = err == nil && len(leases) >= free
		for _, l := range leases {
			sid := l.Note.SessionID
			if _, busy := inflight[sid]; busy {
				d.log.Debug("handoff: a head was claimed while its session's attempt still runs; it starts after", zap.String("session", sid),
					zap.String("webhook_id", l.Note.ID))
				deferred[sid] = l
				continue
			}
			startAttempt(l)
		}
		if err != nil && ctx.Err() == nil {
			failBO = min(max(2*failBO, d.o.FirstRetry), min(d.o.RetryMaxDelay, 30*time.Second))
			retryAt = time.Now().Add(failBO)
			d.log.Error("handoff: claiming due notifications failed", zap.Int("shard", shard), zap.Error(err),
				zap.Duration("retry_in", failBO))
			return false
		}
		return true
	}
	// backlog claims from the shards known to hold more due heads while
	// slots are free, round-robin from where the last pass stopped: each
	// shard's oldest heads go first, so a burst across shards drains about
	// oldest first overall rather than one shard after another. false when
	// Redis failed.
	next := 0
	backlog := func() bool {
		for i := range redisstate.Shards {
			n := (next + i) % redisstate.Shards
			if full() {
				return true
			}
			if more[n] {
				next = (n + 1) % redisstate.Shards
				if !claim(n) {
					return false
				}
			}
		}
		return true
	}
	rounds := 0
	sweep := func(all bool) {
		if ctx.Err() != nil || time.Now().Before(retryAt) {
			return
		}
		ok := true
		for i := range redisstate.Shards {
			n := (first + i) % redisstate.Shards
			if !all && c.owns != nil && !c.owns(n) {
				continue
			}
			if full() {
				// Not asked, for want of a slot: a slot that frees up asks it
				// before the next round does.
				more[n] = true
				continue
			}
			if ok = claim(n); !ok {
				break
			}
		}
		if ok {
			backlog() // shards not asked this round (not ours) found with more at an earlier one
		}
		first = (first + 1) % redisstate.Shards
		if time.Now().After(retryAt) {
			failBO = 0
		}
	}

	ticker := time.NewTicker(claimInterval)
	defer ticker.Stop()
	sweep(true)
	for {
		select {
		case <-ctx.Done():
			attempts.Wait()
			return nil
		case r := <-done:
			// A delivered head makes the session's next one due at once: look
			// at the shards that just finished, then at those known to hold
			// more, before the next sweep.
			var shards [redisstate.Shards]bool
			shards[r.shard] = true
			finished(r)
			for drained := false; !drained; {
				select {
				case r := <-done:
					finished(r)
					shards[r.shard] = true
				default:
					drained = true
				}
			}
			if ctx.Err() != nil || time.Now().Before(retryAt) {
				continue
			}
			ok := true
			for shard, fin := range shards {
				if full() {
					break
				}
				if fin {
					if ok = claim(shard); !ok {
						break
					}
				}
			}
			if ok {
				backlog()
			}
		case <-c.wake:
			sweep(true) // this replica queued something: wherever it is, now
		case <-ticker.C:
			rounds++
			sweep(rounds%fullClaimEvery == 0)
		}
	}
}

// attempt makes one attempt for the leased head l and acknowledges what came
// of it. A refused acknowledgement means the lease lapsed and another
// deliverer owns the head: what this attempt did is then dropped, the head
// stays theirs (docs/ARCHITECTURE.md, "Cluster mode").
func (c *ClusterDeliverer) attempt(l redisstate.Lease) {
	d := c.d
	n := clusterNotification(l.Note)
	ctx, span := tracectx.Start(tracectx.WithRemote(context.Background(), n.TraceParent), d.tracer,
		"handoff.deliver", trace.WithSpanKind(trace.SpanKindClient))
	defer span.End()
	var x exchange
	if l.DeadEpisode {
		lctx, cancel := context.WithTimeout(ctx, redisstate.CallTimeout)
		offID, err := c.st.DeadExpire(lctx, l)
		cancel()
		if err != nil {
			offID = "(id unknown)"
		}
		x = deadEpisodeExchange(offID)
	} else {
		x = d.post(ctx, n)
	}
	verdict, delay := d.settle(&n, &x, d.now())

	note := l.Note
	note.Attempts, note.LastError, note.LastStatus = n.Attempts, n.LastError, n.LastStatus
	outcome, next := redisstate.Delivered, time.Time{}
	switch verdict {
	case Retry:
		outcome, next = redisstate.Retry, n.NextAttemptAt
	case Dead:
		outcome = redisstate.Dead
	}
	actx, cancel := context.WithTimeout(context.Background(), redisstate.CallTimeout)
	ok, err := c.st.Ack(actx, l, outcome, note, next)
	cancel()

	d.record(ctx, span, n, x, verdict)
	switch {
	case err != nil:
		// The lease lapses and the head is attempted again, with the same
		// webhook-id: at least once.
		d.log.Error("handoff: recording the delivery outcome failed", zap.String("webhook_id", n.ID),
			zap.String("outcome", string(verdict)), zap.Error(err))
	case !ok:
		c.counts.lostAcks.Add(1)
		d.log.Warn("handoff: lease lost before the outcome was recorded; another deliverer owns the head now",
			zap.String("webhook_id", n.ID), zap.String("session", n.SessionID), zap.String("outcome", string(verdict)))
	}
	d.observe(n, x, verdict, delay)
}

// clusterNotification is n as the embedded outbox holds a notification, so
// that rendering and signing are the same in both modes. Its decision time is
// also its creation, where the retry horizon starts.
func clusterNotification(n redisstate.Note) store.Notification {
	at := unixMilli(n.At)
	return store.Notification{ID: n.ID, Kind: store.Kind(n.Kind), SessionID: n.SessionID, BotID: n.BotID,
		Episode: n.Episode, Reason: n.Reason, Text: n.Text, LastSeenAt: unixMilli(n.LastSeen),
		OfflineSince: unixMilli(n.Since), DetectedAt: at, TraceParent: n.Trace, CreatedAt: at,
		Attempts: n.Attempts, LastError: n.LastError, LastStatus: n.LastStatus, ReplayedAt: unixMilli(n.Replayed)}
}

// unixMilli is ms as a time; zero stays the zero time.
func unixMilli(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}
