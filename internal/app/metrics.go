package app

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/presence-sidecar/presence-sidecar/handoff"
	"github.com/presence-sidecar/presence-sidecar/presence"
	"github.com/presence-sidecar/presence-sidecar/proxy"
	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// Metric names. OTLP gets them as they are; /metrics turns the dots into
// underscores and adds _total to counters and _seconds to the histogram
// (presence_sidecar_frames_total, presence_sidecar_delivery_latency_seconds).
const (
	mOpenConnections     = "presence_sidecar.open_connections"
	mHTTPRequests        = "presence_sidecar.http_requests"
	mUpgrades            = "presence_sidecar.upgrades"
	mRejected            = "presence_sidecar.rejected"
	mUpstreamErrors      = "presence_sidecar.upstream_errors"
	mClientErrors        = "presence_sidecar.client_errors"
	mInspectionStopped   = "presence_sidecar.inspection_stopped"
	mUnparsed            = "presence_sidecar.unparsed"
	mProbeTimeouts       = "presence_sidecar.probe_timeouts"
	mUntracked           = "presence_sidecar.untracked"
	mFrames              = "presence_sidecar.frames"
	mBytes               = "presence_sidecar.bytes"
	mSessions            = "presence_sidecar.sessions"
	mHandedOver          = "presence_sidecar.sessions_handed_over"
	mUntrackedConns      = "presence_sidecar.untracked_connections"
	mTransitions         = "presence_sidecar.transitions"
	mNotificationsQueued = "presence_sidecar.notifications_queued"
	mStoreErrors         = "presence_sidecar.store_errors"
	mIDsRefused          = "presence_sidecar.ids_refused"
	mSessionsShed        = "presence_sidecar.sessions_shed"
	mSessionsRefused     = "presence_sidecar.sessions_refused"
	mOutboxDepth         = "presence_sidecar.outbox_depth"
	mNotifications       = "presence_sidecar.notifications"
	mDeliveryLatency     = "presence_sidecar.delivery_latency"
)

// meterName is the instrumentation scope of every instrument.
const meterName = "github.com/presence-sidecar/presence-sidecar"

// latencyBuckets suit a webhook: a fast platform answers in milliseconds,
// HANDOFF_TIMEOUT (10 s by default) ends the slowest.
var latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// metrics are the sidecar's OpenTelemetry instruments. What the proxy and
// the engine already count in atomics is read by observable instruments
// when a reader collects (a scrape of /metrics, an OTLP export), so nothing
// is added to the data path; only delivery outcomes, one per webhook
// attempt, are recorded as they happen.
type metrics struct {
	notifications metric.Int64Counter
	latency       metric.Float64Histogram
	cluster       clusterInstruments
}

func newMetrics(m metric.MeterProvider) (*metrics, error) {
	meter := m.Meter(meterName)
	notifications, errN := meter.Int64Counter(mNotifications, metric.WithUnit("{notification}"),
		metric.WithDescription("Delivery attempts of notifications, by kind (client.offline, client.online) and outcome (delivered, retry, dead)."))
	latency, errL := meter.Float64Histogram(mDeliveryLatency, metric.WithUnit("s"),
		metric.WithDescription("Time of a webhook's HTTP exchange with the human-service platform, by kind and outcome."),
		metric.WithExplicitBucketBoundaries(latencyBuckets...))
	cluster, errC := newClusterInstruments(meter)
	return &metrics{notifications: notifications, latency: latency, cluster: cluster}, errors.Join(errN, errL, errC)
}

// delivery is handoff.Options.Observe.
func (x *metrics) delivery(o handoff.Outcome) {
	kindOutcome := metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", string(o.Kind)), attribute.String("outcome", string(o.Result))))
	ctx := context.Background()
	x.notifications.Add(ctx, 1, kindOutcome)
	if o.Status != 0 || o.Latency > 0 { // an HTTP exchange took place
		x.latency.Record(ctx, o.Latency.Seconds(), kindOutcome)
	}
}

var (
	dirClient = attrs("direction", event.FromClient.String())
	dirServer = attrs("direction", event.FromServer.String())
)

func attrs(k, v string) metric.MeasurementOption {
	return metric.WithAttributeSet(attribute.NewSet(attribute.String(k, v)))
}

// builder makes observable instruments, collecting their errors.
type builder struct {
	meter metric.Meter
	errs  []error
}

func (b *builder) gauge(name, unit, desc string) metric.Int64ObservableGauge {
	g, err := b.meter.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
	b.errs = append(b.errs, err)
	return g
}

func (b *builder) counter(name, unit, desc string) metric.Int64ObservableCounter {
	c, err := b.meter.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
	b.errs = append(b.errs, err)
	return c
}

// observe registers the observable instruments over the proxy and, when
// presence is on, the engine and the deliverer.
func (x *metrics) observe(m metric.MeterProvider, p *proxy.Proxy, stats func() presence.Stats, depth func() (int64, error)) error {
	meter := m.Meter(meterName)
	b := &builder{meter: meter}
	gauge, counter := b.gauge, b.counter

	open := gauge(mOpenConnections, "{connection}", "Open proxied WebSocket connections.")
	httpReqs := counter(mHTTPRequests, "{request}", "Plain HTTP requests proxied.")
	upgrades := counter(mUpgrades, "{request}", "WebSocket upgrade requests.")
	rejected := counter(mRejected, "{request}", "Requests refused (503) over MAX_CONNECTIONS.")
	upErrs := counter(mUpstreamErrors, "{request}", "Requests answered 502 because the upstream was unreachable, or 504 because it sent no response within UPSTREAM_RESPONSE_TIMEOUT.")
	inspStopped := counter(mInspectionStopped, "{connection}", "Connections whose compressed messages in a direction (client, server) are no longer inspected: one inflated past the bound or could not be inflated, losing the deflate window.")
	unparsed := counter(mUnparsed, "{message}", "Messages, by direction (client, server), that PRESET's framing could not decode: passed on untouched, and not looked at for ids, rules or activity.")
	clientErrs := counter(mClientErrors, "{request}", "Requests that failed through the client's own fault (a malformed request body, a client gone mid-body), answered 4xx.")
	probes := counter(mProbeTimeouts, "{connection}", "Connections closed because the client stopped answering the liveness probe.")
	untracked := counter(mUntracked, "{request}", "Connections (counted when they end) without a session id, and plain requests without one that name a bot or are not GET, HEAD or OPTIONS.")
	frames := counter(mFrames, "{frame}", "WebSocket frames relayed, by direction (client, server).")
	bytes := counter(mBytes, "By", "WebSocket bytes relayed, by direction (client, server).")
	_, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := p.Stats()
		o.ObserveInt64(open, s.OpenWebSockets.Load())
		o.ObserveInt64(httpReqs, s.HTTPRequests.Load())
		o.ObserveInt64(upgrades, s.Upgrades.Load())
		o.ObserveInt64(rejected, s.Rejected.Load())
		o.ObserveInt64(upErrs, s.UpstreamErrors.Load())
		o.ObserveInt64(clientErrs, s.ClientErrors.Load())
		o.ObserveInt64(probes, s.ProbeTimeouts.Load())
		o.ObserveInt64(untracked, s.Untracked.Load())
		o.ObserveInt64(frames, s.Frames[event.FromClient].Load(), dirClient)
		o.ObserveInt64(frames, s.Frames[event.FromServer].Load(), dirServer)
		o.ObserveInt64(bytes, s.Bytes[event.FromClient].Load(), dirClient)
		o.ObserveInt64(bytes, s.Bytes[event.FromServer].Load(), dirServer)
		o.ObserveInt64(inspStopped, s.InspectionStopped[event.FromClient].Load(), dirClient)
		o.ObserveInt64(inspStopped, s.InspectionStopped[event.FromServer].Load(), dirServer)
		o.ObserveInt64(unparsed, s.Unparsed[event.FromClient].Load(), dirClient)
		o.ObserveInt64(unparsed, s.Unparsed[event.FromServer].Load(), dirServer)
		return nil
	}, open, httpReqs, upgrades, rejected, upErrs, clientErrs, probes, untracked, frames, bytes, inspStopped, unparsed)
	b.errs = append(b.errs, err)
	if stats == nil {
		return errors.Join(b.errs...)
	}

	sessions := gauge(mSessions, "{session}", "Tracked sessions by presence state (present, absent). In cluster mode: the sessions with connections on this replica, as present; the cluster's are listed by /v1/sessions.")
	handed := gauge(mHandedOver, "{session}", "Tracked sessions handed over to a human.")
	untrackedConns := gauge(mUntrackedConns, "{connection}", "Open connections not tracked: their session id is not known (yet), or the session cap refused it.")
	transitions := counter(mTransitions, "{transition}", "Presence transitions by kind (absent, returned, handoff_started, handoff_ended).")
	queued := counter(mNotificationsQueued, "{notification}", "Notifications written to the outbox, by kind.")
	storeErrs := counter(mStoreErrors, "{error}", "Failed writes of presence decisions to the store, or in cluster mode failed calls to Redis (retried).")
	idsRefused := counter(mIDsRefused, "{id}", "Session or bot ids longer than the bound (512 bytes), not tracked.")
	shed := counter(mSessionsShed, "{session}", "Sessions dropped, oldest idle first, to make room under PRESENCE_MAX_SESSIONS.")
	refused := counter(mSessionsRefused, "{session}", "New sessions not tracked: PRESENCE_MAX_SESSIONS reached and every session connected, handed over or awaiting a notification.")
	outboxDepth := gauge(mOutboxDepth, "{notification}", "Notifications waiting for delivery (in cluster mode, all replicas').")
	// One callback: Stats walks every session once per collection.
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := stats()
		o.ObserveInt64(sessions, int64(s.Present), attrs("state", "present"))
		o.ObserveInt64(sessions, int64(s.Absent), attrs("state", "absent"))
		o.ObserveInt64(handed, int64(s.HandedOver))
		o.ObserveInt64(untrackedConns, s.UntrackedConnections)
		o.ObserveInt64(transitions, int64(s.Transitions.Absent), attrs("kind", "absent"))
		o.ObserveInt64(transitions, int64(s.Transitions.Present), attrs("kind", "returned"))
		o.ObserveInt64(transitions, int64(s.Transitions.HandoffOn), attrs("kind", "handoff_started"))
		o.ObserveInt64(transitions, int64(s.Transitions.HandoffOff), attrs("kind", "handoff_ended"))
		o.ObserveInt64(queued, int64(s.OfflineCommitted), attrs("kind", "client.offline"))
		o.ObserveInt64(queued, int64(s.OnlineCommitted), attrs("kind", "client.online"))
		o.ObserveInt64(storeErrs, int64(s.CommitErrors))
		o.ObserveInt64(idsRefused, int64(s.IDsRefused))
		o.ObserveInt64(shed, int64(s.SessionsShed))
		o.ObserveInt64(refused, int64(s.SessionsRefused))
		if n, err := depth(); err == nil {
			o.ObserveInt64(outboxDepth, n)
		}
		return nil
	}, sessions, handed, untrackedConns, transitions, queued, storeErrs, idsRefused, shed, refused, outboxDepth)
	b.errs = append(b.errs, err)
	return errors.Join(b.errs...)
}
