package app

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/presence-sidecar/presence-sidecar/handoff"
	"github.com/presence-sidecar/presence-sidecar/presence/cluster"
)

// Cluster mode's metric names (Prometheus: presence_sidecar_redis_up,
// presence_sidecar_redis_call_duration_seconds, …).
const (
	mRedisUp        = "presence_sidecar.redis_up"
	mRedisCalls     = "presence_sidecar.redis_call_duration"
	mDecisionLag    = "presence_sidecar.decision_lag"
	mLeaseRenewals  = "presence_sidecar.lease_renewals"
	mTakeovers      = "presence_sidecar.takeovers"
	mReasserts      = "presence_sidecar.reasserts"
	mLedgerDirty    = "presence_sidecar.ledger_pending"
	mOutboxOldest   = "presence_sidecar.outbox_oldest_age"
	mLostAcks       = "presence_sidecar.delivery_leases_lost"
	mLedgerSessions = "presence_sidecar.replica_sessions"
	mLedgerConns    = "presence_sidecar.replica_connections"
)

// callBuckets suit a Redis script: tens of microseconds on loopback, a
// millisecond or two across a network, redisstate.CallTimeout at worst.
var callBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2}

// lagBuckets suit a decision's lag behind its due time: the sweep runs
// every 250 ms, so most land below 0.5 s.
var lagBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 1.5, 2.5, 5, 10, 30}

type clusterInstruments struct {
	calls metric.Float64Histogram
	lag   metric.Float64Histogram
}

func newClusterInstruments(meter metric.Meter) (clusterInstruments, error) {
	calls, errC := meter.Float64Histogram(mRedisCalls, metric.WithUnit("s"),
		metric.WithDescription("Round trips to Redis (a script run or a pipeline), by call and outcome (ok, error)."),
		metric.WithExplicitBucketBoundaries(callBuckets...))
	lag, errL := meter.Float64Histogram(mDecisionLag, metric.WithUnit("s"),
		metric.WithDescription("How long after its due time (Redis's clock) an absence was decided by this replica's sweep."),
		metric.WithExplicitBucketBoundaries(lagBuckets...))
	return clusterInstruments{calls: calls, lag: lag}, errors.Join(errC, errL)
}

// redisCall is redisstate.Options.Observe.
func (x *metrics) redisCall(call string, took time.Duration, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	x.cluster.calls.Record(context.Background(), took.Seconds(),
		metric.WithAttributeSet(attribute.NewSet(attribute.String("call", call), attribute.String("outcome", outcome))))
}

// decisionLag is cluster.EngineOptions.Lag.
func (x *metrics) decisionLag(d time.Duration) {
	x.cluster.lag.Record(context.Background(), d.Seconds())
}

// observeCluster registers cluster mode's observable instruments.
func (x *metrics) observeCluster(m metric.MeterProvider, e *cluster.Engine, d *handoff.ClusterDeliverer) error {
	meter := m.Meter(meterName)
	b := &builder{meter: meter}
	gauge, counter := b.gauge, b.counter
	// No unit: with "1" the Prometheus exporter would name it redis_up_ratio.
	up := gauge(mRedisUp, "", "1 while this replica's last call to Redis succeeded, else 0 (presence decisions pause).")
	renewals := counter(mLeaseRenewals, "{renewal}", "Renewals of this replica's lease in Redis, by outcome (ok, failed).")
	takeovers := counter(mTakeovers, "{takeover}", "Work taken over from dead replicas: their connections reaped (kind=replica), their undelivered notifications claimed (kind=notification).")
	reasserts := counter(mReasserts, "{reassert}", "Times this replica stated all its connections again because Redis had lost its lease (a pause past REDIS_LEASE_TTL, or Redis restarted empty).")
	dirty := gauge(mLedgerDirty, "{session}", "Sessions whose changes this replica has not yet written to Redis (grows while Redis is away).")
	sessions := gauge(mLedgerSessions, "{session}", "Sessions with connections on this replica.")
	conns := gauge(mLedgerConns, "{connection}", "Live connections of tracked sessions on this replica.")
	oldest := gauge(mOutboxOldest, "s", "How long the oldest due notification of the shared outbox has waited.")
	lost := counter(mLostAcks, "{lease}", "Delivery outcomes refused because this replica's lease of the notification had lapsed (another replica owns it).")
	_, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := e.ClusterStats()
		v := int64(0)
		if s.Healthy {
			v = 1
		}
		o.ObserveInt64(up, v)
		o.ObserveInt64(renewals, int64(s.Renewals), attrs("outcome", "ok"))
		o.ObserveInt64(renewals, int64(s.RenewFailures), attrs("outcome", "failed"))
		o.ObserveInt64(takeovers, int64(s.ReapedReplicas), attrs("kind", "replica"))
		o.ObserveInt64(reasserts, int64(s.Reasserts))
		o.ObserveInt64(dirty, int64(s.LedgerDirty))
		o.ObserveInt64(sessions, int64(s.LedgerSessions))
		o.ObserveInt64(conns, int64(s.LedgerConnections))
		ds, err := d.ClusterStats()
		o.ObserveInt64(takeovers, int64(ds.Takeovers), attrs("kind", "notification"))
		o.ObserveInt64(lost, int64(ds.LostAcks))
		if err == nil {
			o.ObserveInt64(oldest, int64(ds.OldestAge.Seconds()))
		}
		return nil
	}, up, renewals, takeovers, reasserts, dirty, sessions, conns, oldest, lost)
	b.errs = append(b.errs, err)
	return errors.Join(b.errs...)
}
