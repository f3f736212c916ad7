package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
)

// restart starts a new sidecar on the same data directory and addresses.
func restart(t *testing.T, old *sidecar, env map[string]string) *sidecar {
	env["LISTEN_ADDR"], env["ADMIN_ADDR"] = old.addr, old.admin
	return start(t, env)
}

// settle gives the engine time to write non-decision changes (connections)
// to the store; decisions themselves are written before they are acted on.
func settle() { time.Sleep(600 * time.Millisecond) }

// (a) kill -9 while a handed-over client is connected; it never comes back:
// the /expire arrives after the restart, once.
func TestKill9WhileConnectedClientNeverReturns(t *testing.T) {
	up, pf := newUpstream(t), newPlatform(t)
	env := baseEnv(up.url(), pf.url(), t.TempDir())
	sc := start(t, env)
	c := client(t, sc, "k-a", "b")
	<-up.links
	sc.api("PUT", "/v1/sessions/k-a/handoff", nil)
	settle()
	sc.kill9()
	c.Close()

	sc2 := restart(t, sc, env)
	h := pf.accepted(t, 5*time.Second)
	if h.event() != "client.offline" || h.session() != "k-a" {
		t.Fatalf("got %s", h.Raw)
	}
	pf.quiet(t, 2*time.Second)
	if n := len(pf.all()); n != 1 {
		t.Fatalf("%d requests, want exactly one /expire", n)
	}
	_ = sc2
}

// (b) kill -9 while connected; the client comes back right after the
// restart: nothing is sent.
func TestKill9ClientReturnsAtOnce(t *testing.T) {
	up, pf := newUpstream(t), newPlatform(t)
	env := baseEnv(up.url(), pf.url(), t.TempDir())
	env["PRESENCE_CHECK_INTERVAL"] = "2s"
	sc := start(t, env)
	c := client(t, sc, "k-b", "b")
	<-up.links
	sc.api("PUT", "/v1/sessions/k-b/handoff", nil)
	settle()
	sc.kill9()
	c.Close()

	sc2 := restart(t, sc, env)
	c2 := client(t, sc2, "k-b", "b")
	defer c2.Close()
	pf.quiet(t, 3500*time.Millisecond)
	code, body := sc2.api("GET", "/v1/sessions/k-b", nil)
	if code != 200 || !strings.Contains(string(body), `"handedOver": true`) || !strings.Contains(string(body), `"present"`) {
		t.Fatalf("the hand-over must survive the crash and the session be present: %s", body)
	}
}

// (c) kill -9 while an /expire is undelivered (the platform answers 503):
// after the restart it is delivered with the same webhook-id.
func TestKill9WhileUndeliveredSameWebhookID(t *testing.T) {
	up, pf := newUpstream(t), newPlatform(t)
	pf.setStatus(func(hook, int) int { return http.StatusServiceUnavailable })
	env := baseEnv(up.url(), pf.url(), t.TempDir())
	sc := start(t, env)
	c := client(t, sc, "k-c", "b")
	<-up.links
	sc.api("PUT", "/v1/sessions/k-c/handoff", nil)
	closeClean(c)
	testutil.Eventually(t, 5*time.Second, "a refused delivery attempt", func() bool { return len(pf.all()) >= 2 })
	first := pf.all()[0].id()
	sc.kill9()

	pf.setStatus(func(hook, int) int { return http.StatusOK })
	restart(t, sc, env)
	h := pf.accepted(t, 5*time.Second)
	if h.id() != first || h.session() != "k-c" {
		t.Fatalf("after restart: id %s (want %s), body %s", h.id(), first, h.Raw)
	}
	pf.quiet(t, 1500*time.Millisecond)
}

// (d) a burst of 1,000 absences, with kill -9 in the middle of delivery:
// every one is delivered, and no session's notification changes its id.
func TestKill9DuringBurstOf1000Absences(t *testing.T) {
	const n = 1000
	up, pf := newUpstream(t), newPlatform(t)
	env := baseEnv(up.url(), pf.url(), t.TempDir())
	env["HANDOFF_DETECT"] = "always"
	env["PROBE_INTERVAL"] = "0"
	env["LOG_LEVEL"] = "warn"
	sc := start(t, env)

	conns := make([]*websocket.Conn, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conns[i] = client(t, sc, fmt.Sprintf("burst-%04d", i), "b")
		}()
	}
	wg.Wait()
	for range n {
		<-up.links
	}
	// Slow the platform a little so the kill lands mid-delivery.
	pf.setStatus(func(hook, int) int { time.Sleep(2 * time.Millisecond); return http.StatusOK })
	for _, c := range conns {
		c.Close()
	}
	testutil.Eventually(t, 20*time.Second, "some deliveries", func() bool { return len(pf.all()) >= n/5 })
	sc.kill9()
	before := len(pf.all())
	restart(t, sc, env)

	ids := map[string]map[string]bool{}
	testutil.Eventually(t, 60*time.Second, "every session's /expire", func() bool {
		for _, h := range pf.all() {
			if ids[h.session()] == nil {
				ids[h.session()] = map[string]bool{}
			}
			ids[h.session()][h.id()] = true
		}
		return len(ids) == n
	})
	for s, set := range ids {
		if len(set) != 1 {
			t.Fatalf("session %s was notified under %d ids", s, len(set))
		}
	}
	t.Logf("%d delivered before the kill, %d requests in all for %d absences", before, len(pf.all()), n)
}

// A 4xx other than 408/429 is dead-lettered at once; the operator sees it
// and replays it through the admin API; it is delivered with its id.
func TestDeadLetterAndReplay(t *testing.T) {
	up, pf := newUpstream(t), newPlatform(t)
	pf.setStatus(func(hook, int) int { return http.StatusBadRequest })
	sc := start(t, baseEnv(up.url(), pf.url(), t.TempDir()))
	c := client(t, sc, "dl-1", "b")
	<-up.links
	sc.api("PUT", "/v1/sessions/dl-1/handoff", nil)
	closeClean(c)
	var dead struct {
		Notifications []struct {
			ID        string `json:"id"`
			SessionID string `json:"sessionId"`
		} `json:"notifications"`
	}
	testutil.Eventually(t, 5*time.Second, "a dead letter", func() bool {
		_, body := sc.api("GET", "/v1/notifications/dead", nil)
		json.Unmarshal(body, &dead)
		return len(dead.Notifications) == 1
	})
	if n := len(pf.all()); n != 1 {
		t.Fatalf("a 400 must not be retried: %d requests", n)
	}
	pf.setStatus(func(hook, int) int { return http.StatusOK })
	if code, body := sc.api("POST", "/v1/notifications/dead/"+dead.Notifications[0].ID+"/replay", nil); code != 200 {
		t.Fatalf("replay: %d %s", code, body)
	}
	h := pf.accepted(t, 5*time.Second)
	if h.id() != dead.Notifications[0].ID || h.session() != "dl-1" {
		t.Fatalf("replayed: %s %s", h.id(), h.Raw)
	}
}

// SIGTERM: /readyz fails, open WebSockets are closed with 1001 after the
// grace, state is flushed, exit 0 — and after the restart, the session's
// deadline resumes.
func TestSIGTERMDrainsAndExitsZero(t *testing.T) {
	up, pf := newUpstream(t), newPlatform(t)
	env := baseEnv(up.url(), pf.url(), t.TempDir())
	env["SHUTDOWN_GRACE"] = "1s"
	sc := start(t, env)
	c, _, err := websocket.DefaultDialer.Dial("ws://"+sc.addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.WriteJSON(map[string]any{"action": "link", "data": map[string]any{"sessionId": "term-1", "botId": "b"}})
	<-up.links
	sc.api("PUT", "/v1/sessions/term-1/handoff", nil)
	code := make(chan int, 1)
	go func() { code <- sc.stop() }()
	closeCode := make(chan int, 1)
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				if ce, ok := err.(*websocket.CloseError); ok {
					closeCode <- ce.Code
				} else {
					closeCode <- -1
				}
				return
			}
		}
	}()
	if got := <-closeCode; got != websocket.CloseGoingAway {
		t.Fatalf("client saw close code %d, want 1001", got)
	}
	if got := <-code; got != 0 {
		t.Fatalf("exit code %d\n%s", got, sc.logs.String())
	}
	restart(t, sc, env)
	if h := pf.accepted(t, 5*time.Second); h.session() != "term-1" || h.event() != "client.offline" {
		t.Fatalf("after a graceful restart: %s", h.Raw)
	}
}

// A bad value stops start-up with a message naming it; a dead upstream gives 502.
func TestBadConfigAndDeadUpstream(t *testing.T) {
	cmd := exec.Command(binary)
	cmd.Env = []string{"UPSTREAM_URL=http://127.0.0.1:1", "PRESENCE_ENABLED=true", "HANDOFF_URL=http://127.0.0.1:2", "PRESENCE_CHECK_INTERVAL=30s"}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("want exit code 2, got %v: %s", err, out)
	}
	if !strings.Contains(string(out), `PRESENCE_CHECK_INTERVAL="30s"`) || !strings.Contains(string(out), "1m0s to 10m0s") {
		t.Fatalf("message: %s", out)
	}

	dead := boundNotListening(t) // refuses, and no listener of the sidecar's can take the port
	sc := start(t, map[string]string{"UPSTREAM_URL": "http://" + dead})
	resp, err := http.Get("http://" + sc.addr + "/anything")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 512)
	k, _ := resp.Body.Read(buf)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(buf[:k]), "upstream unavailable") {
		t.Fatalf("dead upstream: %d %q", resp.StatusCode, buf[:k])
	}
	_, wsResp, err := websocket.DefaultDialer.Dial("ws://"+sc.addr+"/ws", nil)
	if err == nil || wsResp == nil || wsResp.StatusCode != http.StatusBadGateway {
		t.Fatalf("upgrade to a dead upstream: %v %v", err, wsResp)
	}
}

// A graceful restart that lasts longer than the interval: the clients the
// sidecar itself closed get a whole interval after the start to come back,
// as after a crash, and a client that does produces nothing.
func TestSIGTERMRestartClientReturnsNothing(t *testing.T) {
	up, pf := newUpstream(t), newPlatform(t)
	env := baseEnv(up.url(), pf.url(), t.TempDir())
	env["PRESENCE_CHECK_INTERVAL"] = "2s"
	env["SHUTDOWN_GRACE"] = "200ms"
	sc := start(t, env)
	c := client(t, sc, "term-2", "b")
	<-up.links
	sc.api("PUT", "/v1/sessions/term-2/handoff", nil)
	if code := sc.stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	c.Close()
	time.Sleep(2500 * time.Millisecond) // down for longer than the interval
	sc2 := restart(t, sc, env)
	c2 := client(t, sc2, "term-2", "b")
	defer c2.Close()
	pf.quiet(t, 3*time.Second)
}

// boundNotListening is an address whose port is bound but not listening: a
// connection to it is refused, and, unlike a freed port, it cannot be handed
// to the sidecar's own ADMIN_ADDR=127.0.0.1:0 meanwhile.
func boundNotListening(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}
