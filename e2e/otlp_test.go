package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP/HTTP endpoint (what a collector listens on at
// :4318) that decodes the protobuf requests it gets.
type otlpReceiver struct {
	srv     *httptest.Server
	mu      sync.Mutex
	spans   []otlpSpan
	metrics map[string]bool
}

type otlpSpan struct {
	name, traceID string
	attrs, res    map[string]string
}

func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		switch v := kv.Value.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.Key] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.Key] = strconv.FormatInt(v.IntValue, 10)
		case *commonpb.AnyValue_BoolValue:
			m[kv.Key] = strconv.FormatBool(v.BoolValue)
		}
	}
	return m
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{metrics: map[string]bool{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
			t.Errorf("%s: Content-Type %q", req.URL.Path, ct)
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		switch req.URL.Path {
		case "/v1/traces":
			var m coltrace.ExportTraceServiceRequest
			if err := proto.Unmarshal(b, &m); err != nil {
				t.Errorf("decoding traces: %v", err)
			}
			for _, rs := range m.ResourceSpans {
				res := attrMap(rs.Resource.GetAttributes())
				for _, ss := range rs.ScopeSpans {
					for _, s := range ss.Spans {
						r.spans = append(r.spans, otlpSpan{name: s.Name, traceID: hexID(s.TraceId), attrs: attrMap(s.Attributes), res: res})
					}
				}
			}
		case "/v1/metrics":
			var m colmetrics.ExportMetricsServiceRequest
			if err := proto.Unmarshal(b, &m); err != nil {
				t.Errorf("decoding metrics: %v", err)
			}
			for _, rm := range m.ResourceMetrics {
				for _, sm := range rm.ScopeMetrics {
					for _, x := range sm.Metrics {
						r.metrics[x.Name] = true
					}
				}
			}
		default:
			t.Errorf("OTLP request to %s", req.URL.Path)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func hexID(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func (r *otlpReceiver) span(name string) (otlpSpan, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.spans {
		if s.name == name {
			return s, true
		}
	}
	return otlpSpan{}, false
}

// TestOTLPFromTheBinary runs the real binary with OTEL_EXPORTER_OTLP_ENDPOINT
// pointing at a test OTLP/HTTP receiver. Batching and the metric interval
// are set far beyond the test's length, so what arrives was flushed by the
// SIGTERM drain: the spans from the client's upgrade to the delivered
// /expire, in the client's trace, with the resource from the environment,
// and the metrics.
func TestOTLPFromTheBinary(t *testing.T) {
	rcv := newOTLPReceiver(t)
	up, plat := newUpstream(t), newPlatform(t)
	env := baseEnv(up.url(), plat.url(), t.TempDir())
	env["HANDOFF_DETECT"] = "always"
	env["OTEL_EXPORTER_OTLP_ENDPOINT"] = rcv.srv.URL
	env["OTEL_BSP_SCHEDULE_DELAY"] = "600000"
	env["OTEL_METRIC_EXPORT_INTERVAL"] = "600000"
	env["OTEL_SERVICE_NAME"] = "sidecar-e2e"
	env["OTEL_RESOURCE_ATTRIBUTES"] = "deployment.environment.name=e2e"
	env["POD_NAME"] = "chat-7d9f-x2"
	env["POD_NAMESPACE"] = "chat"
	sc := start(t, env)

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	c, _, err := websocket.DefaultDialer.Dial("ws://"+sc.addr+"/ws", http.Header{"Traceparent": {"00-" + traceID + "-00f067aa0ba902b7-01"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteJSON(map[string]any{"action": "link", "data": map[string]any{"sessionId": "otlp-1", "botId": "bot-otlp"}}); err != nil {
		t.Fatal(err)
	}
	<-up.links
	closeClean(c)
	h := plat.accepted(t, 10*time.Second)
	if h.Path != "/expire" || !strings.Contains(h.Header.Get("traceparent"), traceID) {
		t.Fatalf("webhook %s with traceparent %q, want the client's trace %s", h.Path, h.Header.Get("traceparent"), traceID)
	}
	if code := sc.stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}

	for _, name := range []string{"proxy.upgrade", "proxy.dial", "presence.absent", "handoff.deliver"} {
		s, ok := rcv.span(name)
		if !ok {
			t.Errorf("span %s did not arrive", name)
			continue
		}
		if s.traceID != traceID {
			t.Errorf("span %s in trace %s, want %s", name, s.traceID, traceID)
		}
		for k, v := range map[string]string{"service.name": "sidecar-e2e", "k8s.pod.name": "chat-7d9f-x2", "k8s.namespace.name": "chat", "deployment.environment.name": "e2e"} {
			if s.res[k] != v {
				t.Errorf("span %s: resource %s = %q, want %q", name, k, s.res[k], v)
			}
		}
		if s.res["service.version"] == "" {
			t.Errorf("span %s: no service.version", name)
		}
	}
	if s, _ := rcv.span("presence.absent"); s.attrs["session.id"] != "otlp-1" || s.attrs["bot.id"] != "bot-otlp" || s.attrs["presence.reason"] != "disconnected" {
		t.Errorf("presence.absent attributes %v", s.attrs)
	}
	if s, _ := rcv.span("handoff.deliver"); s.attrs["http.response.status_code"] != "200" || s.attrs["presence_sidecar.delivery.outcome"] != "delivered" {
		t.Errorf("handoff.deliver attributes %v", s.attrs)
	}
	for _, m := range []string{"presence_sidecar.open_connections", "presence_sidecar.upgrades", "presence_sidecar.frames",
		"presence_sidecar.sessions", "presence_sidecar.transitions", "presence_sidecar.notifications", "presence_sidecar.delivery_latency",
		"presence_sidecar.outbox_depth"} {
		if !rcv.metrics[m] {
			t.Errorf("metric %s did not arrive (got %v)", m, rcv.metrics)
		}
	}
}
