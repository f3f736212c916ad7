package app

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
	"github.com/presence-sidecar/presence-sidecar/tracectx"
)

const clientTrace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func (s *stack) span(name string) tracetest.SpanStub {
	s.t.Helper()
	var found tracetest.SpanStub
	testutil.Eventually(s.t, waitTime, "span "+name, func() bool {
		for _, sp := range s.spans.GetSpans() {
			if sp.Name == name {
				found = sp
				return true
			}
		}
		return false
	})
	return found
}

func childOf(t *testing.T, child, parent tracetest.SpanStub) {
	t.Helper()
	if child.Parent.SpanID() != parent.SpanContext.SpanID() || child.SpanContext.TraceID() != parent.SpanContext.TraceID() {
		t.Errorf("span %s has parent %s, want %s (%s)", child.Name, child.Parent.SpanID(), parent.Name, parent.SpanContext.SpanID())
	}
}

// TestTraceFromUpgradeToExpire: one trace goes from the client's upgrade
// (continuing the client's traceparent) through the hand-over and the
// absence to the delivered /expire, and the request the platform received
// carries that trace in its traceparent.
func TestTraceFromUpgradeToExpire(t *testing.T) {
	s := startStack(t, newPlatform(t, nil), nil)
	c := s.dial("?sessionId=s1&botId=b1", http.Header{"Traceparent": {clientTrace}})
	s.echo(c, handover)
	s.close(c)
	reqs := s.waitRequests(1)

	client, _ := tracectx.Parse(clientTrace)
	upgrade, dial := s.span("proxy.upgrade"), s.span("proxy.dial")
	started, absent, deliver := s.span("presence.handoff_started"), s.span("presence.absent"), s.span("handoff.deliver")
	if upgrade.Parent.SpanID() != client.SpanID() || upgrade.SpanKind != trace.SpanKindServer {
		t.Errorf("upgrade span's parent %s, want the client's %s", upgrade.Parent.SpanID(), client.SpanID())
	}
	childOf(t, dial, upgrade)
	childOf(t, started, upgrade)
	childOf(t, absent, upgrade)
	childOf(t, deliver, absent)
	for _, sp := range []tracetest.SpanStub{upgrade, dial, started, absent, deliver} {
		if sp.SpanContext.TraceID() != client.TraceID() {
			t.Errorf("span %s in trace %s, want the client's %s", sp.Name, sp.SpanContext.TraceID(), client.TraceID())
		}
	}
	r := reqs[0]
	if r.Path != "/expire" {
		t.Fatalf("first webhook went to %s", r.Path)
	}
	got, ok := tracectx.Parse(r.Header.Get("traceparent"))
	if !ok || got.TraceID() != client.TraceID() || got.SpanID() != deliver.SpanContext.SpanID() {
		t.Errorf("the platform got traceparent %q; want trace %s, parent the delivery span %s",
			r.Header.Get("traceparent"), client.TraceID(), deliver.SpanContext.SpanID())
	}
}

// TestMetricsAfterScenario scrapes /metrics after connections, a close, an
// absence, a 503 answered with a retry and a delivered /expire, and checks
// the values.
func TestMetricsAfterScenario(t *testing.T) {
	p := newPlatform(t, func(i int) int {
		if i == 0 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	s := startStack(t, p, nil)
	const msg = `{"action":"message","data":{"text":"oi"}}`
	s1 := s.dial("?sessionId=s1&botId=b1", nil)
	s.echo(s1, handover)
	s.echo(s1, msg)
	s2 := s.dial("?sessionId=s2&botId=b1", nil) // stays open: present
	anon := s.dial("", nil)                     // never names a session
	s.close(anon)
	// Plain requests without a session id: a page or a health check is not
	// counted as untracked, a POST is (it could be chat traffic).
	resp, err := http.Get("http://" + s.proxy + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = http.Post("http://"+s.proxy+"/api/messages", "application/json", strings.NewReader(`{"text":"oi"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s.close(s1)
	s.waitRequests(2) // the /expire: 503, then 200

	// Frames on the wire: masked client frames carry 2+4 bytes of header,
	// the upstream's 2; a Close carries its 2-byte code.
	clientBytes := (6 + len(handover)) + (6 + len(msg)) + (6 + 2) + (6 + 2)
	serverBytes := (2 + len(handover)) + (2 + len(msg)) + (2 + 2) + (2 + 2)
	want := map[string]string{
		`presence_sidecar_open_connections`:                                                                     "1",
		`presence_sidecar_upgrades_total`:                                                                       "3",
		`presence_sidecar_http_requests_total`:                                                                  "2",
		`presence_sidecar_untracked_total`:                                                                      "2", // anon and the POST
		`presence_sidecar_untracked_connections`:                                                                "0",
		`presence_sidecar_upstream_errors_total`:                                                                "0",
		`presence_sidecar_frames_total{direction="client"}`:                                                     "4",
		`presence_sidecar_frames_total{direction="server"}`:                                                     "4",
		`presence_sidecar_bytes_total{direction="client"}`:                                                      fmt.Sprint(clientBytes),
		`presence_sidecar_bytes_total{direction="server"}`:                                                      fmt.Sprint(serverBytes),
		`presence_sidecar_sessions{state="present"}`:                                                            "1",
		`presence_sidecar_sessions{state="absent"}`:                                                             "1",
		`presence_sidecar_sessions_handed_over`:                                                                 "1",
		`presence_sidecar_transitions_total{kind="handoff_started"}`:                                            "1",
		`presence_sidecar_transitions_total{kind="absent"}`:                                                     "1",
		`presence_sidecar_transitions_total{kind="returned"}`:                                                   "0",
		`presence_sidecar_notifications_queued_total{kind="client.offline"}`:                                    "1",
		`presence_sidecar_notifications_total{kind="client.offline",outcome="retry"}`:                           "1",
		`presence_sidecar_notifications_total{kind="client.offline",outcome="delivered"}`:                       "1",
		`presence_sidecar_delivery_latency_seconds_count{kind="client.offline",outcome="retry"}`:                "1",
		`presence_sidecar_delivery_latency_seconds_count{kind="client.offline",outcome="delivered"}`:            "1",
		`presence_sidecar_delivery_latency_seconds_bucket{kind="client.offline",outcome="delivered",le="+Inf"}`: "1",
		`presence_sidecar_outbox_depth`:                                                                         "0",
		`presence_sidecar_probe_timeouts_total`:                                                                 "0",
		`presence_sidecar_rejected_total`:                                                                       "0",
	}
	// The counters settle once the relays and the deliverer are done.
	got := s.waitMetrics(want)
	found := false
	for k := range got {
		found = found || strings.HasPrefix(k, "target_info{") && strings.Contains(k, `service_name="presence-sidecar"`)
	}
	if !found {
		t.Errorf("no target_info with service_name=\"presence-sidecar\"")
	}
	s.close(s2)
}
