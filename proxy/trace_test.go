package proxy

// Tests of the spans and traceparents of proxy.go and upgrade.go.

import (
	"net/http"
	"regexp"
	"testing"

	"github.com/gorilla/websocket"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
	"github.com/presence-sidecar/presence-sidecar/tracectx"
)

var traceparentRE = regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)

const clientTrace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func tracedProxy(t *testing.T, up string) (*testProxy, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	return startProxy(t, up, func(o *Options) { o.Tracer = tp }), exp
}

// spanNamed waits for the span called name: a handler's span ends when its
// goroutine returns, which may come after what the test waited for.
func spanNamed(t *testing.T, exp *tracetest.InMemoryExporter, name string) tracetest.SpanStub {
	t.Helper()
	var found tracetest.SpanStub
	testutil.Eventually(t, waitTime, "span "+name, func() bool {
		for _, s := range exp.GetSpans() {
			if s.Name == name {
				found = s
				return true
			}
		}
		return false
	})
	return found
}

// TestUpgradeSpanContinuesClientTrace: with a tracer, an upgrade is a server
// span continuing the client's trace, the dial is its child, and the
// handshake goes upstream with the upgrade span as its parent; the observer
// gets that same context.
func TestUpgradeSpanContinuesClientTrace(t *testing.T) {
	up, ends := gorillaUpstream(t, websocket.Upgrader{})
	tp, exp := tracedProxy(t, up)
	c, _ := gorillaDial(t, nil, tp.ws("/ws?sessionId=s1&botId=b1"), http.Header{"Traceparent": {clientTrace}})
	opened := tp.rec.wait(t, "ConnOpened", isKind(evOpened))
	closeGorilla(t, c, 1000, "")
	end := waitEnd(t, ends)

	upgrade := spanNamed(t, exp, "proxy.upgrade")
	dial := spanNamed(t, exp, "proxy.dial")
	client, _ := tracectx.Parse(clientTrace)
	if upgrade.SpanKind != trace.SpanKindServer || upgrade.SpanContext.TraceID() != client.TraceID() || upgrade.Parent.SpanID() != client.SpanID() {
		t.Errorf("upgrade span %v kind %v parent %v: want a server span, child of the client's %s", upgrade.SpanContext, upgrade.SpanKind, upgrade.Parent, clientTrace)
	}
	if dial.Parent.SpanID() != upgrade.SpanContext.SpanID() || dial.SpanContext.TraceID() != client.TraceID() {
		t.Errorf("dial span's parent %v, want the upgrade span %v", dial.Parent.SpanID(), upgrade.SpanContext.SpanID())
	}
	want := tracectx.Format(upgrade.SpanContext)
	if got := end.header.Get("Traceparent"); got != want {
		t.Errorf("upstream got traceparent %q, want the upgrade span's %q", got, want)
	}
	if opened.Trace != want {
		t.Errorf("ConnOpened trace %q, want %q", opened.Trace, want)
	}
	attrs := map[string]string{}
	for _, kv := range upgrade.Attributes {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	for k, v := range map[string]string{"session.id": "s1", "bot.id": "b1", "http.response.status_code": "101", "url.path": "/ws"} {
		if attrs[k] != v {
			t.Errorf("upgrade span attribute %s = %q, want %q (all: %v)", k, attrs[k], v, attrs)
		}
	}
}

// TestUpgradeSpanRecordsDialFailure: the dial span and the upgrade span record
// the failure that became a 502.
func TestUpgradeSpanRecordsDialFailure(t *testing.T) {
	tp, exp := tracedProxy(t, "127.0.0.1:1")
	_, resp, err := websocket.DefaultDialer.Dial(tp.ws("/ws"), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("dial: %v %v", err, resp)
	}
	if s := spanNamed(t, exp, "proxy.dial"); s.Status.Code.String() != "Error" {
		t.Errorf("dial span status %v", s.Status)
	}
	if s := spanNamed(t, exp, "proxy.upgrade"); s.Status.Code.String() != "Error" {
		t.Errorf("upgrade span status %v", s.Status)
	}
}

// TestHTTPTraceparentSentUpstream: a plain request goes upstream with its
// server span's context; without a tracer the client's traceparent passes
// unchanged, and without either a new valid one is made. The observer gets
// what went upstream.
func TestHTTPTraceparentSentUpstream(t *testing.T) {
	got := make(chan string, 4)
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Traceparent")
	}))
	get := func(tp *testProxy, parent string) (sent string, observed string) {
		t.Helper()
		from := tp.rec.mark()
		req, _ := http.NewRequest("GET", tp.http("/poll?sessionId=h1"), nil)
		if parent != "" {
			req.Header.Set("Traceparent", parent)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		e := tp.rec.waitFrom(t, from, "HTTPRequest", isKind(evHTTP))
		return <-got, e.Trace
	}

	traced, exp := tracedProxy(t, up)
	sent, observed := get(traced, clientTrace)
	span := spanNamed(t, exp, "proxy.http")
	if want := tracectx.Format(span.SpanContext); sent != want || observed != want {
		t.Errorf("upstream got %q, observer %q; want the span's %q", sent, observed, want)
	}
	if span.Parent.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("span's parent %v", span.Parent)
	}

	plain := startProxy(t, up, nil)
	if sent, observed := get(plain, clientTrace); sent != clientTrace || observed != clientTrace {
		t.Errorf("no tracer: upstream got %q, observer %q; want the client's unchanged", sent, observed)
	}
	sent, observed = get(plain, "")
	if !traceparentRE.MatchString(sent) || sent != observed {
		t.Errorf("no tracer, no client trace: upstream got %q, observer %q", sent, observed)
	}
}
