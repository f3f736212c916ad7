package handoff

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/tracectx"
)

// The words of this file:
//
//   - an attempt is one try at delivering one notification: at most one HTTP
//     exchange, then the store write of what came of it (Deliverer.attempt);
//   - its Result is the verdict: Delivered, Retry or Dead;
//   - its Outcome is the attempt as Options.Observe sees it (metrics, status page);
//   - an exchange is what the HTTP exchange gave (or why there was none), before
//     the retry horizon is applied (Deliverer.post, in http.go);
//   - an attemptReport is what the attempt hands back to the scheduler, which
//     folds it into its view of the outbox (scheduler.apply).

// jitter spreads retries uniformly within ±20% of the backoff.
const jitter = 0.2

// Result is the verdict of one attempt.
type Result string

const (
	Delivered Result = "delivered" // 2xx: removed from the outbox
	Retry     Result = "retry"     // will be attempted again at NextAttemptAt
	Dead      Result = "dead"      // dead-lettered: permanent 4xx, or retry horizon reached
)

// Outcome describes one attempt, for metrics and the status page.
type Outcome struct {
	ID            string // webhook-id
	SessionID     string
	BotID         string
	Kind          store.Kind
	Result        Result
	Status        int           // HTTP status; 0 when there was no response
	Error         string        // short reason, without the platform's body; empty when delivered
	Latency       time.Duration // of the HTTP exchange
	Attempts      int           // including this one
	NextAttemptAt time.Time     // set when Result is Retry
	Delay         time.Duration // the wait chosen before NextAttemptAt (backoff or Retry-After), when Result is Retry
}

// exchange is what one HTTP exchange gave.
type exchange struct {
	status     int
	reason     string // short, safe to log: never the platform's body
	excerpt    string // short excerpt of the platform's error body, stored only
	retryAfter time.Duration
	latency    time.Duration
	verdict    Result // Delivered, Retry or Dead (before the horizon check)
}

// attemptReport is what an attempt hands back to the scheduler.
type attemptReport struct {
	n           store.Notification // as written to the store
	removed     bool               // it left the outbox (delivered or dead)
	storeFailed bool               // the store write failed: the store and the scheduler's view disagree
	holdUntil   time.Time          // with storeFailed: do not attempt n again before this
}

// attempt makes one attempt for n, records what came of it in the store,
// logs it, reports it to Observe, and returns the report for the scheduler.
func (d *Deliverer) attempt(n store.Notification) attemptReport {
	ctx, span := tracectx.Start(tracectx.WithRemote(context.Background(), n.TraceParent), d.tracer,
		"handoff.deliver", trace.WithSpanKind(trace.SpanKindClient))
	defer span.End()
	var x exchange
	if offID, dead := d.dead.offlineOf(n); dead {
		x = deadEpisodeExchange(offID)
	} else {
		x = d.post(ctx, n)
	}
	now := d.now()
	verdict, delay := d.settle(&n, &x, now)
	var err error
	switch verdict {
	case Delivered:
		err = d.o.Store.Delivered(n)
	case Retry:
		err = d.o.Store.Attempted(n)
	case Dead:
		n.DeadAt, n.NextAttemptAt = now, time.Time{}
		// Remembered only once it is a dead letter: if the write failed, n
		// stays in the outbox and may yet be delivered.
		if err = d.o.Store.DeadLetter(n); err == nil {
			d.dead.remember(n)
		}
	}

	d.record(ctx, span, n, x, verdict)

	report := attemptReport{n: n, removed: verdict != Retry}
	if err != nil {
		// The scheduler's view and the store now disagree; it re-reads the
		// outbox, and the hold keeps a failing store from turning into a
		// resend loop.
		report.storeFailed, report.holdUntil = true, now.Add(d.backoff(max(n.Attempts, 1)))
		d.log.Error("handoff: recording the delivery outcome failed", zap.String("webhook_id", n.ID),
			zap.String("outcome", string(verdict)), zap.Error(err))
	}
	d.observe(n, x, verdict, delay)
	return report
}

// deadEpisodeExchange is the verdict on a return message whose episode's
// /expire (webhook id offID) was dead-lettered: it follows it into the dead
// letters unsent (docs/ARCHITECTURE.md, "Presence invariants" 3).
func deadEpisodeExchange(offID string) exchange {
	return exchange{verdict: Dead, reason: "its client.offline " + offID + " was dead-lettered; replay that one first, then this one"}
}

// settle applies the verdict rules to what the exchange x gave for n, for
// both deliverers (embedded and cluster mode): it counts the attempt, stamps
// n's status, error and next attempt time, chooses the delay (backoff with
// jitter, or a longer Retry-After) and turns a retry past the retry horizon
// into a dead letter (docs/ARCHITECTURE.md, "Delivery"). x.reason then says
// why, as logged and observed.
func (d *Deliverer) settle(n *store.Notification, x *exchange, now time.Time) (Result, time.Duration) {
	n.Attempts++
	lastErr := x.reason
	if x.excerpt != "" {
		lastErr += ": " + x.excerpt
	}
	verdict := x.verdict
	var delay time.Duration
	switch verdict {
	case Delivered:
		n.DeliveredAt, n.LastStatus, n.LastError, n.NextAttemptAt = now, x.status, "", time.Time{}
	case Retry:
		delay = d.backoff(n.Attempts)
		if x.retryAfter > delay {
			delay = min(x.retryAfter, d.o.RetryMaxDelay)
		}
		n.NextAttemptAt, n.LastStatus, n.LastError = now.Add(delay), x.status, lastErr
		if start := horizonStart(*n); !start.IsZero() && n.NextAttemptAt.After(start.Add(d.o.RetryFor)) {
			verdict = Dead
			gaveUp := fmt.Sprintf("retry horizon %s reached after %d attempts; last: ", d.o.RetryFor, n.Attempts)
			x.reason, n.LastError = gaveUp+x.reason, gaveUp+lastErr
		}
	case Dead:
		n.LastStatus, n.LastError = x.status, lastErr
	}
	return verdict, delay
}

// record ends the attempt's span and logs the attempt.
func (d *Deliverer) record(ctx context.Context, span trace.Span, n store.Notification, x exchange, verdict Result) {
	d.endSpan(span, n, x, verdict)
	fields := []zap.Field{
		zap.String("session", n.SessionID), zap.String("bot", n.BotID), zap.String("kind", string(n.Kind)),
		zap.String("webhook_id", n.ID), zap.Int("attempt", n.Attempts), zap.Int("status", x.status),
		zap.Duration("latency", x.latency), zap.String("outcome", string(verdict)),
		zap.String("trace_id", trace.SpanContextFromContext(ctx).TraceID().String()),
	}
	switch verdict {
	case Delivered:
		d.log.Info("handoff: notification delivered", fields...)
	case Retry:
		d.log.Warn("handoff: delivery failed, will retry", append(fields, zap.String("error", x.reason),
			zap.Time("next_attempt_at", n.NextAttemptAt))...)
	case Dead:
		d.log.Error("handoff: notification dead-lettered", append(fields, zap.String("error", x.reason))...)
	}
}

// observe reports the attempt to Options.Observe.
func (d *Deliverer) observe(n store.Notification, x exchange, verdict Result, delay time.Duration) {
	if d.o.Observe != nil {
		o := Outcome{ID: n.ID, SessionID: n.SessionID, BotID: n.BotID, Kind: n.Kind, Result: verdict,
			Status: x.status, Latency: x.latency, Attempts: n.Attempts}
		if verdict != Delivered {
			o.Error = x.reason
		}
		if verdict == Retry {
			o.NextAttemptAt, o.Delay = n.NextAttemptAt, delay
		}
		d.o.Observe(o)
	}
}

// endSpan records an attempt's verdict on its span.
func (d *Deliverer) endSpan(span trace.Span, n store.Notification, x exchange, verdict Result) {
	if !span.IsRecording() {
		return
	}
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodPost, semconv.SessionID(n.SessionID), tracectx.AttrBotID.String(n.BotID),
		tracectx.AttrWebhookID.String(n.ID), tracectx.AttrKind.String(string(n.Kind)), tracectx.AttrAttempt.Int(n.Attempts), tracectx.AttrOutcome.String(string(verdict)),
	}
	// Host and path only: the configured URL may carry credentials.
	if u, err := url.Parse(d.Endpoint(n)); err == nil {
		attrs = append(attrs, semconv.ServerAddress(u.Hostname()), semconv.URLPath(u.Path))
		if p, err := strconv.Atoi(u.Port()); err == nil {
			attrs = append(attrs, semconv.ServerPort(p))
		}
	}
	if x.status != 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(x.status))
	}
	span.SetAttributes(attrs...)
	if verdict != Delivered {
		span.SetStatus(codes.Error, x.reason)
	}
}

// horizonStart is when n's retry horizon (RetryFor) started: its creation or
// its last replay, whichever is later; DetectedAt when neither is set.
func horizonStart(n store.Notification) time.Time {
	s := n.CreatedAt
	if n.ReplayedAt.After(s) {
		s = n.ReplayedAt
	}
	if s.IsZero() {
		s = n.DetectedAt
	}
	return s
}

// backoff is the delay after the attempts-th failed attempt: FirstRetry
// doubling each time, ±20% jitter, never above RetryMaxDelay.
func (d *Deliverer) backoff(attempts int) time.Duration {
	b := d.o.FirstRetry
	for i := 1; i < attempts && b < d.o.RetryMaxDelay; i++ {
		b *= 2
	}
	b = min(b, d.o.RetryMaxDelay)
	j := time.Duration(float64(b) * jitter * (2*rand.Float64() - 1))
	return min(b+j, d.o.RetryMaxDelay)
}

// parseRetryAfter reads Retry-After (RFC 9110 §10.2.3) as delay-seconds or an
// HTTP date; 0 if absent or invalid.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, int64(365*24*3600))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
