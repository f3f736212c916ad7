package app

// A whole sidecar (App.Build + Serve, as cmd/presence-sidecar runs it)
// between a real WebSocket upstream and a real HTTP platform, with an
// in-memory span exporter and an observed zap logger.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/presence-sidecar/presence-sidecar/internal/config"
	"github.com/presence-sidecar/presence-sidecar/internal/telemetry"
	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
)

const waitTime = 10 * time.Second

// received is one webhook as the platform got it.
type received struct {
	Path   string
	Header http.Header
	Body   string
}

// platform stands in for the human-service platform. status, when set,
// answers the i-th request (from 0); otherwise 200.
type platform struct {
	*httptest.Server
	mu     sync.Mutex
	reqs   []received
	status func(i int) int
}

func newPlatform(t *testing.T, status func(i int) int) *platform {
	p := &platform{status: status}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		p.mu.Lock()
		i := len(p.reqs)
		p.reqs = append(p.reqs, received{Path: r.URL.Path, Header: r.Header.Clone(), Body: string(b)})
		p.mu.Unlock()
		code := http.StatusOK
		if p.status != nil {
			code = p.status(i)
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *platform) requests() []received {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]received(nil), p.reqs...)
}

// echoUpstream is a conversation service that echoes every WebSocket
// message (so a client can make the "server" send the hand-over frame) and
// answers plain requests with 200.
func echoUpstream(t *testing.T) string {
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !websocket.IsWebSocketUpgrade(r) {
			_, _ = io.Copy(io.Discard, r.Body)
			_, _ = io.WriteString(w, "ok")
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, b, err := c.ReadMessage()
			if err != nil {
				return // gorilla has answered a Close already
			}
			if err := c.WriteMessage(mt, b); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

type stack struct {
	t        *testing.T
	proxy    string // host:port
	admin    string
	platform *platform
	spans    *tracetest.InMemoryExporter
	logs     *observer.ObservedLogs
}

// startStack runs the sidecar with presence on (a 300 ms interval, no
// probe, fast retries); env overrides those settings.
func startStack(t *testing.T, p *platform, env map[string]string) *stack {
	t.Helper()
	vars := map[string]string{
		"UPSTREAM_URL":                echoUpstream(t),
		"HANDOFF_URL":                 p.URL,
		"LISTEN_ADDR":                 "127.0.0.1:0",
		"ADMIN_ADDR":                  "127.0.0.1:0",
		"DATA_DIR":                    t.TempDir(),
		"PRESENCE_ENABLED":            "true",
		"PRESENCE_ALLOW_ANY_INTERVAL": "true",
		"PRESENCE_CHECK_INTERVAL":     "300ms",
		"PROBE_INTERVAL":              "0",
		"HANDOFF_RETRY_MAX_DELAY":     "100ms",
		"SHUTDOWN_GRACE":              "1s",
	}
	for k, v := range env {
		vars[k] = v
	}
	var environ []string
	for k, v := range vars {
		environ = append(environ, k+"="+v)
	}
	cfg, err := config.Load(environ)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, platform: p, spans: tracetest.NewInMemoryExporter()}
	core, logs := observer.New(zapcore.DebugLevel)
	s.logs = logs
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(s.spans))
	tel, err := telemetry.New(tp, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Build(cfg, zap.New(core), tel)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, func(p, ad string) { started <- [2]string{p, ad} }) }()
	select {
	case addrs := <-started:
		s.proxy, s.admin = addrs[0], addrs[1]
	case err := <-done:
		t.Fatalf("Serve: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(waitTime):
			t.Error("Serve did not return")
		}
	})
	return s
}

// dial opens a WebSocket through the sidecar.
func (s *stack) dial(query string, h http.Header) *websocket.Conn {
	s.t.Helper()
	d := websocket.Dialer{HandshakeTimeout: waitTime}
	c, _, err := d.Dial("ws://"+s.proxy+"/ws"+query, h)
	if err != nil {
		s.t.Fatalf("dial: %v", err)
	}
	s.t.Cleanup(func() { c.Close() })
	return c
}

// echo sends a text message and reads its echo.
func (s *stack) echo(c *websocket.Conn, msg string) {
	s.t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTime))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		s.t.Fatal(err)
	}
	if _, got, err := c.ReadMessage(); err != nil || string(got) != msg {
		s.t.Fatalf("echo: %q %v", got, err)
	}
}

// close ends c with a Close handshake.
func (s *stack) close(c *websocket.Conn) {
	s.t.Helper()
	_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	c.SetReadDeadline(time.Now().Add(waitTime))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			break
		}
	}
	c.Close()
}

// handover is a frame the upstream echoes and the default
// HANDOFF_START_MATCH (server:data.isTransfer=true) recognises.
const handover = `{"action":"end_conversation","data":{"isTransfer":true}}`

// waitRequests waits until the platform got n webhooks.
func (s *stack) waitRequests(n int) []received {
	s.t.Helper()
	testutil.Eventually(s.t, waitTime, "webhooks", func() bool { return len(s.platform.requests()) >= n })
	return s.platform.requests()
}

// scrape reads /metrics into "name{labels}" -> value.
func (s *stack) scrape() map[string]string {
	s.t.Helper()
	resp, err := http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			out[line[:i]] = line[i+1:]
		}
	}
	return out
}

// waitMetrics scrapes /metrics until every series in want has its value
// (the counters settle once the relays and the deliverer are done), and
// returns the last scrape; it fails the test with the differences if they
// do not within waitTime.
func (s *stack) waitMetrics(want map[string]string) map[string]string {
	s.t.Helper()
	for deadline := time.Now().Add(waitTime); ; time.Sleep(20 * time.Millisecond) {
		got := s.scrape()
		var diff []string
		for k, v := range want {
			if got[k] != v {
				diff = append(diff, fmt.Sprintf("%s = %q, want %s", k, got[k], v))
			}
		}
		if len(diff) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			sort.Strings(diff)
			s.t.Fatalf("/metrics:\n%s", strings.Join(diff, "\n"))
		}
	}
}
