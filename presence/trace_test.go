package presence

import (
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/tracectx"
)

const (
	upgradeA = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	upgradeB = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
)

func tracedRig(t *testing.T) (*rig, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	return newRig(t, nil, nil, func(o *Options) { o.Tracer = tp }), exp
}

// TestTransitionSpans: each transition is a span in the trace of the
// connection that caused it (the absence: the last connection's upgrade;
// the return: the new connection's), and each notification carries its
// transition span's context. A session whose ids came in a frame keeps its
// upgrade's trace until the frame names it.
func TestTransitionSpans(t *testing.T) {
	r, exp := tracedRig(t)
	r.e.ConnOpened(1, event.Open{Trace: upgradeA}) // ids come later, from a frame
	r.e.ConnIdentified(1, event.Identity{SessionID: "s1", BotID: "bot"})
	r.server(1, transferFrame)
	r.close(1)
	r.advance(interval + 1)
	r.e.ConnOpened(2, event.Open{Who: event.Identity{SessionID: "s1", BotID: "bot"}, Trace: upgradeB})
	notes := r.wantNotes(store.KindOffline, store.KindOnline)

	spans := map[string]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		spans[s.Name] = s
	}
	a, _ := tracectx.Parse(upgradeA)
	b, _ := tracectx.Parse(upgradeB)
	for name, parent := range map[string]string{spanHandoffOn: upgradeA, spanAbsent: upgradeA, spanReturned: upgradeB} {
		s, ok := spans[name]
		if !ok {
			t.Fatalf("no span %s among %v", name, exp.GetSpans().Snapshots())
		}
		p, _ := tracectx.Parse(parent)
		if s.Parent.TraceID() != p.TraceID() || s.Parent.SpanID() != p.SpanID() {
			t.Errorf("%s: parent %s/%s, want the upgrade %s", name, s.Parent.TraceID(), s.Parent.SpanID(), parent)
		}
	}
	if got, want := notes[0].TraceParent, tracectx.Format(spans[spanAbsent].SpanContext); got != want || spans[spanAbsent].SpanContext.TraceID() != a.TraceID() {
		t.Errorf("offline note traceparent %q, want the absence span's %q", got, want)
	}
	if got, want := notes[1].TraceParent, tracectx.Format(spans[spanReturned].SpanContext); got != want || spans[spanReturned].SpanContext.TraceID() != b.TraceID() {
		t.Errorf("online note traceparent %q, want the return span's %q", got, want)
	}
	attrs := map[string]string{}
	for _, kv := range spans[spanAbsent].Attributes {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	for k, v := range map[string]string{"session.id": "s1", "bot.id": "bot", "presence.episode": "1", "presence.reason": "disconnected"} {
		if attrs[k] != v {
			t.Errorf("absence span %s = %q, want %q", k, attrs[k], v)
		}
	}
}

// TestTraceWithoutTracer: with telemetry off there are no spans, but a
// notification still carries the trace of the visit that caused it (the
// upgrade's or the HTTP request's traceparent as it came), and a session
// without any gets a fresh valid one. A request while a connection is open
// leaves the connection's trace in place.
func TestTraceWithoutTracer(t *testing.T) {
	r := newRig(t, nil, nil, nil)
	r.e.ConnOpened(1, event.Open{Who: event.Identity{SessionID: "s1", BotID: "bot"}, Trace: upgradeA})
	r.server(1, transferFrame)
	r.close(1)
	r.e.HTTPRequest(event.Request{Who: event.Identity{SessionID: "s1"}, Trace: upgradeB}) // the latest visit
	if err := r.e.SetHandoff("s2", "bot", true); err != nil {                             // no trace at all
		t.Fatal(err)
	}
	r.e.ConnOpened(3, event.Open{Who: event.Identity{SessionID: "s3", BotID: "bot"}, Trace: upgradeA})
	r.server(3, transferFrame)
	r.e.HTTPRequest(event.Request{Who: event.Identity{SessionID: "s3"}, Trace: upgradeB}) // a message posted beside the socket
	r.close(3)
	r.advance(interval + 1)
	notes := r.wantNotes(store.KindOffline, store.KindOffline, store.KindOffline)
	bySession := map[string]string{}
	for _, n := range notes {
		bySession[n.SessionID] = n.TraceParent
	}
	if bySession["s1"] != upgradeB {
		t.Errorf("s1's notification carries %q, want the latest request's %q", bySession["s1"], upgradeB)
	}
	if bySession["s3"] != upgradeA {
		t.Errorf("s3's notification carries %q, want its connection's %q", bySession["s3"], upgradeA)
	}
	if _, ok := tracectx.Parse(bySession["s2"]); !ok {
		t.Errorf("s2's notification carries %q, want a valid traceparent", bySession["s2"])
	}
}
