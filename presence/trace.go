package presence

import (
	"context"
	"time"

	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/presence-sidecar/presence-sidecar/tracectx"
)

// Span names of the transitions.
const (
	spanAbsent     = "presence.absent"
	spanReturned   = "presence.returned"
	spanHandoffOn  = "presence.handoff_started"
	spanHandoffOff = "presence.handoff_ended"
)

// traceRef is a W3C trace context kept inline in a session (25 bytes, no
// pointer): the context of the session's latest connection (or HTTP request
// while none is open), so that its transitions, minutes or hours later,
// belong to the trace of the client's visit.
type traceRef struct {
	tid   trace.TraceID
	sid   trace.SpanID
	flags trace.TraceFlags
}

func parseTrace(traceparent string) (traceRef, bool) {
	sc, ok := tracectx.Parse(traceparent)
	if !ok {
		return traceRef{}, false
	}
	return traceRef{tid: sc.TraceID(), sid: sc.SpanID(), flags: sc.TraceFlags()}, true
}

func (t traceRef) valid() bool { return t.tid.IsValid() && t.sid.IsValid() }

// setTrace remembers traceparent, when valid, as s's trace.
func (s *sess) setTrace(traceparent string) {
	if traceparent == "" {
		return
	}
	if t, ok := parseTrace(traceparent); ok {
		s.trace = t
	}
}

// span records a transition of s at now as a span (without duration) in
// s's trace, and returns the traceparent the notification it causes carries.
// Called under the shard lock: with telemetry off it costs the formatting
// of one string.
func (e *Engine) span(name string, s *sess, now int64, set *Settings) string {
	ctx := context.Background()
	if s.trace.valid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: s.trace.tid, SpanID: s.trace.sid, TraceFlags: s.trace.flags, Remote: true,
		}))
	}
	at := time.Unix(0, now)
	ctx, span := tracectx.Start(ctx, e.tracer, name, trace.WithTimestamp(at))
	if span.IsRecording() {
		span.SetAttributes(
			semconv.SessionID(s.id), tracectx.AttrBotID.String(s.bot), tracectx.AttrEpisode.Int64(int64(s.episode)),
			tracectx.AttrReason.String(reasonText[s.reason]), tracectx.AttrMode.String(string(set.Mode)), tracectx.AttrHandedOver.Bool(e.isHandedOver(s)),
		)
	}
	span.End(trace.WithTimestamp(at))
	return tracectx.Format(trace.SpanContextFromContext(ctx))
}

// traceID is the trace id part of a traceparent, for log lines.
func traceID(traceparent string) string {
	if len(traceparent) < 35 {
		return ""
	}
	return traceparent[3:35]
}
