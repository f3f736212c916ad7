package app

import (
	"fmt"
	"net/http"
	"strings"
)

// metricsHandler serves the counters in the Prometheus text format.
func (a *App) metricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		m := promWriter{&b}
		s := a.proxy.Stats()
		m.gauge("presence_sidecar_open_connections", "Open proxied WebSocket connections.", float64(s.OpenWebSockets.Load()))
		m.counter("presence_sidecar_http_requests_total", "Plain HTTP requests proxied.", float64(s.HTTPRequests.Load()))
		m.counter("presence_sidecar_upgrades_total", "WebSocket upgrade requests.", float64(s.Upgrades.Load()))
		m.counter("presence_sidecar_rejected_total", "Requests refused over MAX_CONNECTIONS.", float64(s.Rejected.Load()))
		m.counter("presence_sidecar_upstream_errors_total", "Requests answered 502 because the upstream was unreachable.", float64(s.UpstreamErrors.Load()))
		m.counter("presence_sidecar_probe_timeouts_total", "Connections closed because the client stopped answering the liveness probe.", float64(s.ProbeTimeouts.Load()))
		m.counter("presence_sidecar_untracked_total", "Connections and requests without a session id.", float64(s.Untracked.Load()))
		m.header("presence_sidecar_frames_total", "counter", "WebSocket frames relayed, by direction.")
		m.sample("presence_sidecar_frames_total", `direction="client"`, float64(s.Frames[0].Load()))
		m.sample("presence_sidecar_frames_total", `direction="server"`, float64(s.Frames[1].Load()))
		m.header("presence_sidecar_bytes_total", "counter", "WebSocket bytes relayed, by direction.")
		m.sample("presence_sidecar_bytes_total", `direction="client"`, float64(s.Bytes[0].Load()))
		m.sample("presence_sidecar_bytes_total", `direction="server"`, float64(s.Bytes[1].Load()))
		a.presenceMetrics(m)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write([]byte(b.String()))
	})
}

type promWriter struct{ b *strings.Builder }

func (m promWriter) header(name, kind, help string) {
	fmt.Fprintf(m.b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, kind)
}

func (m promWriter) sample(name, labels string, v float64) {
	if labels != "" {
		fmt.Fprintf(m.b, "%s{%s} %g\n", name, labels, v)
	} else {
		fmt.Fprintf(m.b, "%s %g\n", name, v)
	}
}

func (m promWriter) counter(name, help string, v float64) {
	m.header(name, "counter", help)
	m.sample(name, "", v)
}

func (m promWriter) gauge(name, help string, v float64) {
	m.header(name, "gauge", help)
	m.sample(name, "", v)
}

// presenceMetrics adds the presence engine's and the deliverer's figures.
func (a *App) presenceMetrics(m promWriter) {
	if a.engine == nil {
		return
	}
	m.gauge("presence_sidecar_outbox_depth", "Notifications waiting for delivery.", float64(a.deliverer.Depth()))
}
