// Package e2e runs the real presence-sidecar binary between real peers: a
// WebSocket upstream speaking the seed platform's protocol, WebSocket
// clients, and an HTTP receiver standing in for the human-service platform.
package e2e

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
)

var binary string

func TestMain(m *testing.M) {
	if role := os.Getenv(helperEnv); role != "" {
		os.Exit(runHelper(role)) // a child process of a test (faults_test.go), not the suite
	}
	dir, err := os.MkdirTemp("", "presence-sidecar-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "presence-sidecar")
	build := exec.Command("go", "build", "-race", "-o", binary, "../cmd/presence-sidecar")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the sidecar:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// sidecar is one run of the binary.
type sidecar struct {
	t     testing.TB
	cmd   *exec.Cmd
	addr  string // proxy
	admin string
	env   []string
	logs  *testutil.Buffer
	done  chan struct{}
	err   error
}

const adminToken = "e2e-admin-token"

// baseEnv is what every test sidecar gets; tests add or override.
func baseEnv(upstream, platform, dataDir string) map[string]string {
	return map[string]string{
		"UPSTREAM_URL":                upstream,
		"HANDOFF_URL":                 platform,
		"DATA_DIR":                    dataDir,
		"PRESENCE_ENABLED":            "true",
		"PRESENCE_ALLOW_ANY_INTERVAL": "true",
		"PRESENCE_CHECK_INTERVAL":     "1s",
		"PROBE_INTERVAL":              "500ms",
		"PROBE_TIMEOUT":               "500ms",
		"HANDOFF_RETRY_MAX_DELAY":     "1s",
		"ADMIN_TOKEN":                 adminToken,
		"LOG_LEVEL":                   "debug",
		"SHUTDOWN_GRACE":              "2s",
	}
}

// start runs the binary with env (LISTEN_ADDR and ADMIN_ADDR are chosen
// here unless given) and waits until /healthz answers.
func start(t testing.TB, env map[string]string) *sidecar {
	t.Helper()
	return startWrapped(t, env, nil)
}

// startWrapped is start with the binary run by a wrapper command (wrap, then
// the binary's path as its last argument), e.g. unshare(1) giving it a mount
// namespace of its own. The wrapper must exec the binary, so that the
// process is the sidecar's.
func startWrapped(t testing.TB, env map[string]string, wrap []string) *sidecar {
	t.Helper()
	s := &sidecar{t: t, logs: &testutil.Buffer{}, done: make(chan struct{})}
	if env["LISTEN_ADDR"] == "" {
		env["LISTEN_ADDR"] = freeAddr(t)
	}
	if env["ADMIN_ADDR"] == "" {
		env["ADMIN_ADDR"] = freeAddr(t)
	}
	s.addr, s.admin = env["LISTEN_ADDR"], env["ADMIN_ADDR"]
	s.env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		s.env = append(s.env, k+"="+v)
	}
	s.cmd = exec.Command(binary)
	if len(wrap) > 0 {
		s.cmd = exec.Command(wrap[0], append(wrap[1:len(wrap):len(wrap)], binary)...)
	}
	s.cmd.Env = s.env
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.done
		if t.Failed() {
			t.Logf("sidecar logs:\n%s", s.logs.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + s.admin + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s
			}
		}
		select {
		case <-s.done:
			t.Fatalf("sidecar exited at start: %v\n%s", s.err, s.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("sidecar did not become healthy:\n%s", s.logs.String())
		}
	}
}

// kill9 ends the process the hard way: no flush, no drain.
func (s *sidecar) kill9() {
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
}

// stop sends SIGTERM and returns the exit code.
func (s *sidecar) stop() int {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		s.t.Fatalf("sidecar did not stop after SIGTERM:\n%s", s.logs.String())
	}
	return s.cmd.ProcessState.ExitCode()
}

func (s *sidecar) api(method, path string, body any) (int, []byte) {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+s.admin+path, rd)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// upstream is a conversation service speaking the seed platform's socket
// protocol: link is answered with a socketId; the test pushes server frames.
type upstream struct {
	srv   *httptest.Server
	mu    sync.Mutex
	conns map[string][]*websocket.Conn // by session id
	links chan string
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{conns: map[string][]*websocket.Conn{}, links: make(chan string, 4096)}
	up := websocket.Upgrader{}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		var sid string
		for {
			var m struct {
				Action string `json:"action"`
				Data   struct {
					SessionID string `json:"sessionId"`
				} `json:"data"`
			}
			if err := c.ReadJSON(&m); err != nil {
				return
			}
			if m.Action == "link" {
				sid = m.Data.SessionID
				u.mu.Lock()
				u.conns[sid] = append(u.conns[sid], c)
				u.mu.Unlock()
				u.mu.Lock()
				c.WriteJSON(map[string]any{"action": "link", "data": map[string]any{"socketId": "sock-" + sid}})
				u.mu.Unlock()
				u.links <- sid
			}
		}
	})
	mux.HandleFunc("POST /webchat/message", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	})
	u.srv = httptest.NewServer(mux)
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) url() string { return u.srv.URL }

// push sends a server frame to every connection of a session.
func (u *upstream) push(t testing.TB, sid string, v any) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.conns[sid]) == 0 {
		t.Fatalf("no upstream connection for session %s", sid)
	}
	for _, c := range u.conns[sid] {
		c.WriteJSON(v)
	}
}

// client opens a WebSocket through the sidecar and links session sid.
func client(t testing.TB, sc *sidecar, sid, bot string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+sc.addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteJSON(map[string]any{"action": "link", "data": map[string]any{"sessionId": sid, "botId": bot}}); err != nil {
		t.Fatal(err)
	}
	var reply map[string]any
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := c.ReadJSON(&reply); err != nil {
		t.Fatalf("link reply: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	// Keep reading so pings are answered (gorilla answers them from its read loop).
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	return c
}

func closeClean(c *websocket.Conn) {
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "tab closed"), time.Now().Add(time.Second))
	time.Sleep(20 * time.Millisecond)
	c.Close()
}

// platform is the human-service platform: it records every webhook and
// answers with whatever status the test sets.
type platform struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []hook
	status func(h hook, n int) int // n: how many requests came before
	notify chan hook
}

type hook struct {
	Path   string
	Query  string
	Header http.Header
	Body   map[string]any
	Raw    []byte
	At     time.Time
}

func (h hook) id() string    { return h.Header.Get("webhook-id") }
func (h hook) event() string { s, _ := h.Body["event"].(string); return s }
func (h hook) session() string {
	s, _ := h.Body["sessionId"].(string)
	return s
}

func newPlatform(t testing.TB) *platform {
	p := &platform{notify: make(chan hook, 10000), status: func(hook, int) int { return 200 }}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		h := hook{Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Raw: raw, At: time.Now()}
		json.Unmarshal(raw, &h.Body)
		p.mu.Lock()
		n := len(p.got)
		p.got = append(p.got, h)
		status := p.status
		p.mu.Unlock()
		code := status(h, n)
		w.WriteHeader(code)
		if code/100 == 2 {
			p.notify <- h
		}
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *platform) url() string { return p.srv.URL }

func (p *platform) setStatus(f func(h hook, n int) int) {
	p.mu.Lock()
	p.status = f
	p.mu.Unlock()
}

func (p *platform) all() []hook {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]hook(nil), p.got...)
}

// accepted waits for the next webhook the platform answered 2xx.
func (p *platform) accepted(t testing.TB, within time.Duration) hook {
	t.Helper()
	select {
	case h := <-p.notify:
		return h
	case <-time.After(within):
		t.Fatalf("no notification within %v (all requests: %d)", within, len(p.all()))
		return hook{}
	}
}

// quiet asserts nothing is accepted for d.
func (p *platform) quiet(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case h := <-p.notify:
		t.Fatalf("unexpected notification %s %s for %s", h.event(), h.Path, h.session())
	case <-time.After(d):
	}
}

// verifySignature checks a webhook with the Standard Webhooks algorithm,
// written here independently of the sidecar's code.
func verifySignature(t testing.TB, secret string, h hook) {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(h.Header.Get("webhook-id") + "." + h.Header.Get("webhook-timestamp") + "." + string(h.Raw)))
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, sig := range strings.Fields(h.Header.Get("webhook-signature")) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return
		}
	}
	t.Fatalf("signature %q does not verify (want %q)", h.Header.Get("webhook-signature"), want)
}

var _ = context.Background
