package tracectx

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

func TestFormatParse(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	sc, ok := Parse(tp)
	if !ok || !sc.IsRemote() || !sc.IsSampled() || Format(sc) != tp {
		t.Fatalf("Parse(%q) = %v %v; Format gives %q", tp, sc, ok, Format(sc))
	}
	for _, bad := range []string{"", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
		"00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01", tp + "-extra"} {
		if _, ok := Parse(bad); ok {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if Format(trace.SpanContext{}) != "" {
		t.Error("an invalid span context formats")
	}
}

// TestStartWithoutTracer: the no-op tracer keeps the parent; with no parent
// a fresh sampled context is made, so a traceparent can always be sent.
func TestStartWithoutTracer(t *testing.T) {
	tr := noop.NewTracerProvider().Tracer("t")
	parent := WithRemote(context.Background(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	ctx, _ := Start(parent, tr, "x")
	if got := Format(trace.SpanContextFromContext(ctx)); got != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Errorf("with a parent: %q", got)
	}
	ctx, span := Start(context.Background(), tr, "x")
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() || !sc.IsSampled() || span.IsRecording() {
		t.Errorf("without a parent: %v recording %v", sc, span.IsRecording())
	}
}
