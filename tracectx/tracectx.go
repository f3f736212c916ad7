// Package tracectx holds the few trace-context helpers the proxy, the
// presence engine and the deliverer share. They depend only on the
// OpenTelemetry API, never on the SDK: which tracer runs (a recording one, or
// the no-op one when telemetry is off) is decided once, in internal/telemetry.
package tracectx

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Propagator reads and writes W3C traceparent/tracestate headers. The
// sidecar always speaks W3C trace context (the README: traceparent on the
// upstream handshake and on every webhook), whatever OTEL_PROPAGATORS says.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Start starts a span and returns a context whose span context is always
// valid. With a recording tracer that is the new span's. Without one
// (telemetry off: the no-op tracer returns its parent unchanged) it is the
// parent's, so a client's traceparent passes on untouched; and with no
// parent either it is a new random one, so that the traceparent sent
// upstream and to the platform still joins their logs with ours.
func Start(ctx context.Context, tr trace.Tracer, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	ctx, span := tr.Start(ctx, name, opts...)
	if trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, span
	}
	ctx = trace.ContextWithSpanContext(ctx, Random())
	return ctx, trace.SpanFromContext(ctx)
}

// Random is a new sampled span context with random ids: the fallback
// "trace" of a sidecar whose telemetry is off (the sampled flag invites the
// next hop to record it, as a client-started trace would).
func Random() trace.SpanContext {
	var b [24]byte
	_, _ = rand.Read(b[:]) // never fails (Go 1.24+)
	var tid trace.TraceID
	var sid trace.SpanID
	copy(tid[:], b[:16])
	copy(sid[:], b[16:])
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
}

// Format renders sc as a W3C traceparent ("" when sc is not valid).
func Format(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	var b [55]byte
	copy(b[:], "00-")
	tid, sid := sc.TraceID(), sc.SpanID()
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{byte(sc.TraceFlags())})
	return string(b[:])
}

// Parse reads a W3C traceparent into a remote span context; ok is false for
// anything that is not a valid version-00 traceparent.
func Parse(s string) (sc trace.SpanContext, ok bool) {
	if len(s) != 55 || s[:3] != "00-" || s[35] != '-' || s[52] != '-' {
		return sc, false
	}
	var tid trace.TraceID
	var sid trace.SpanID
	var flags [1]byte
	if _, err := hex.Decode(tid[:], []byte(s[3:35])); err != nil {
		return sc, false
	}
	if _, err := hex.Decode(sid[:], []byte(s[36:52])); err != nil {
		return sc, false
	}
	if _, err := hex.Decode(flags[:], []byte(s[53:55])); err != nil {
		return sc, false
	}
	sc = trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.TraceFlags(flags[0]), Remote: true})
	return sc, sc.IsValid()
}

// WithRemote returns ctx carrying traceparent as its remote parent, or ctx
// unchanged when traceparent is empty or invalid.
func WithRemote(ctx context.Context, traceparent string) context.Context {
	if sc, ok := Parse(traceparent); ok {
		return trace.ContextWithRemoteSpanContext(ctx, sc)
	}
	return ctx
}
