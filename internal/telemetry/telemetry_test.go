package telemetry

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// TestPlan: what the OTEL_* variables turn on, and the errors that name
// the variable and what it allows.
func TestPlan(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string // plan, or the start of the error
	}{
		{nil, "traces: off; metrics: /metrics"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "traces: otlp (http/protobuf); metrics: /metrics and otlp (http/protobuf)"},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "traces: otlp (http/protobuf); metrics: /metrics"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "traces: otlp (grpc); metrics: /metrics"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"},
			"traces: otlp (grpc); metrics: /metrics and otlp (http/protobuf)"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRICS_EXPORTER": "prometheus"}, "traces: otlp (http/protobuf); metrics: /metrics"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, "traces: off; metrics: /metrics and otlp (http/protobuf)"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, "traces: off; metrics: /metrics"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, `OTEL_TRACES_EXPORTER="zipkin": want otlp or none`},
		{map[string]string{"OTEL_METRICS_EXPORTER": "console"}, `OTEL_METRICS_EXPORTER="console": want otlp, prometheus`},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, `OTEL_EXPORTER_OTLP_PROTOCOL="http/json": want http/protobuf or grpc`},
	} {
		p, err := plan(env(c.env))
		got := p.String()
		if err != nil {
			got = err.Error()
		}
		if !strings.HasPrefix(got, c.want) {
			t.Errorf("%v: got %q, want %q", c.env, got, c.want)
		}
	}
}

// TestResource: service name and version, the pod from the downward API,
// and OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES winning over defaults.
func TestResource(t *testing.T) {
	attrs := func() map[string]string {
		res, err := Resource(context.Background(), env(map[string]string{"POD_NAME": "sidecar-7d9f", "POD_NAMESPACE": "chat"}))
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, kv := range res.Attributes() {
			m[string(kv.Key)] = kv.Value.String()
		}
		return m
	}
	t.Setenv("OTEL_SERVICE_NAME", "")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "")
	m := attrs()
	if m["service.name"] != DefaultServiceName || m["service.version"] == "" || m["k8s.pod.name"] != "sidecar-7d9f" || m["k8s.namespace.name"] != "chat" {
		t.Errorf("resource %v", m)
	}
	t.Setenv("OTEL_SERVICE_NAME", "chat-sidecar")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=staging,k8s.pod.name=override")
	m = attrs()
	if m["service.name"] != "chat-sidecar" || m["deployment.environment.name"] != "staging" || m["k8s.pod.name"] != "override" {
		t.Errorf("resource %v", m)
	}
}

// TestOffCostsNothing: with nothing configured the tracer records nothing
// and /metrics still answers.
func TestOffCostsNothing(t *testing.T) {
	tel, err := Setup(context.Background(), Options{Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	_, span := tel.Tracer.Tracer("t").Start(context.Background(), "x")
	if span.IsRecording() || span.SpanContext().IsValid() {
		t.Error("a span is recorded with telemetry off")
	}
	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "go_goroutines") {
		t.Errorf("/metrics: %d %.200s", rec.Code, rec.Body.String())
	}
}

// collector keeps the names of the spans and metrics an OTLP receiver got.
type collector struct {
	mu    sync.Mutex
	names []string
}

func (c *collector) traces(req *coltrace.ExportTraceServiceRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				c.names = append(c.names, "span:"+s.Name)
			}
		}
	}
}

func (c *collector) metrics(req *colmetrics.ExportMetricsServiceRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rm := range req.ResourceMetrics {
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				c.names = append(c.names, "metric:"+m.Name)
			}
		}
	}
}

func (c *collector) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.names...)
}

type grpcTraces struct {
	coltrace.UnimplementedTraceServiceServer
	c *collector
}

func (g grpcTraces) Export(_ context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	g.c.traces(req)
	return &coltrace.ExportTraceServiceResponse{}, nil
}

type grpcMetrics struct {
	colmetrics.UnimplementedMetricsServiceServer
	c *collector
}

func (g grpcMetrics) Export(_ context.Context, req *colmetrics.ExportMetricsServiceRequest) (*colmetrics.ExportMetricsServiceResponse, error) {
	g.c.metrics(req)
	return &colmetrics.ExportMetricsServiceResponse{}, nil
}

// TestOTLPExportBothProtocols: Setup's exporters reach a real OTLP
// receiver over HTTP (protobuf) and over gRPC; Shutdown flushes what is
// still batched.
func TestOTLPExportBothProtocols(t *testing.T) {
	for _, wire := range []string{"http/protobuf", "grpc"} {
		t.Run(wire, func(t *testing.T) {
			col := &collector{}
			var endpoint string
			if wire == "grpc" {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				srv := grpc.NewServer()
				coltrace.RegisterTraceServiceServer(srv, grpcTraces{c: col})
				colmetrics.RegisterMetricsServiceServer(srv, grpcMetrics{c: col})
				go srv.Serve(ln)
				t.Cleanup(srv.Stop)
				endpoint = "http://" + ln.Addr().String()
			} else {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					b, _ := io.ReadAll(r.Body)
					var err error
					switch r.URL.Path {
					case "/v1/traces":
						var req coltrace.ExportTraceServiceRequest
						if err = proto.Unmarshal(b, &req); err == nil {
							col.traces(&req)
						}
					case "/v1/metrics":
						var req colmetrics.ExportMetricsServiceRequest
						if err = proto.Unmarshal(b, &req); err == nil {
							col.metrics(&req)
						}
					}
					if err != nil || r.Header.Get("Content-Type") != "application/x-protobuf" {
						t.Errorf("%s %s: %v", r.URL.Path, r.Header.Get("Content-Type"), err)
					}
					w.Header().Set("Content-Type", "application/x-protobuf")
				}))
				t.Cleanup(srv.Close)
				endpoint = srv.URL
			}
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", wire)
			tel, err := Setup(context.Background(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			_, span := tel.Tracer.Tracer("t").Start(context.Background(), "exported-"+wire)
			span.End()
			c, _ := tel.Meter.Meter("t").Int64Counter("test.counter")
			c.Add(context.Background(), 1, metric.WithAttributes())
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tel.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			names := strings.Join(col.got(), " ")
			if !strings.Contains(names, "span:exported-"+wire) || !strings.Contains(names, "metric:test.counter") {
				t.Errorf("the receiver got %s", names)
			}
		})
	}
}
