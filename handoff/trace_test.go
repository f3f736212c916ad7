package handoff

import (
	"net/http"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/tracectx"
)

// TestAttemptSpans: every attempt is a client span, a child of the
// transition span in the notification's TraceParent, and the webhook's
// traceparent is that attempt's span (same trace as the transition).
func TestAttemptSpans(t *testing.T) {
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		if i == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	st := store.NewMemory()
	obs := &outcomes{}
	o := baseOptions(st, p.URL+"/api", obs)
	o.Tracer = tp
	d := run(t, o)
	n := offline("sess-tr", "msg_tr")
	n.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	transition, _ := tracectx.Parse(n.TraceParent)
	commit(t, st, d, n)
	testutil.Eventually(t, 10*time.Second, "delivery", func() bool { return obs.count(Delivered) == 1 })
	testutil.Eventually(t, 10*time.Second, "two spans", func() bool { return len(exp.GetSpans()) == 2 })

	reqs := p.requests()
	for i, s := range exp.GetSpans() {
		if s.Name != "handoff.deliver" || s.SpanKind != trace.SpanKindClient {
			t.Errorf("span %d: %s kind %v", i, s.Name, s.SpanKind)
		}
		if s.Parent.TraceID() != transition.TraceID() || s.Parent.SpanID() != transition.SpanID() {
			t.Errorf("span %d: parent %v, want the transition %s", i, s.Parent, n.TraceParent)
		}
		if got, want := reqs[i].Header.Get("traceparent"), tracectx.Format(s.SpanContext); got != want {
			t.Errorf("attempt %d sent traceparent %q, want its span's %q", i, got, want)
		}
		attrs := map[string]string{}
		for _, kv := range s.Attributes {
			attrs[string(kv.Key)] = kv.Value.Emit()
		}
		wantStatus, wantOutcome, wantCode := "503", "retry", "Error"
		if i == 1 {
			wantStatus, wantOutcome, wantCode = "200", "delivered", "Unset"
		}
		if attrs["http.response.status_code"] != wantStatus || attrs["presence_sidecar.delivery.outcome"] != wantOutcome ||
			attrs["session.id"] != "sess-tr" || attrs["url.path"] != "/api/expire" || s.Status.Code.String() != wantCode {
			t.Errorf("span %d: status %v attributes %v", i, s.Status, attrs)
		}
	}
}
