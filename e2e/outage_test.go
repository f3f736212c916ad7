package e2e

// Invariant 7 (docs/ARCHITECTURE.md, "Presence invariants") with the real
// binary: an upstream outage is not the client leaving.

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// outageUpstream is a conversation service that can be stopped for good:
// its listener and every WebSocket it accepted are closed, as when its
// process dies.
type outageUpstream struct {
	srv   *httptest.Server
	mu    sync.Mutex
	conns []*websocket.Conn
}

func newOutageUpstream(t *testing.T) *outageUpstream {
	u := &outageUpstream{}
	up := websocket.Upgrader{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		u.mu.Lock()
		u.conns = append(u.conns, c)
		u.mu.Unlock()
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}))
	t.Cleanup(u.stop)
	return u
}

func (u *outageUpstream) stop() {
	u.srv.Listener.Close()
	u.mu.Lock()
	for _, c := range u.conns {
		c.Close()
	}
	u.conns = nil
	u.mu.Unlock()
	u.srv.Close()
}

// TestUpstreamOutageWithClientRetryingGivesNoExpire: a handed-over client
// loses its socket because the upstream dies, and retries its handshake
// every 200 ms (each answered 502) for four intervals: no /expire. Once it
// stops retrying, exactly one /expire, an interval after its last attempt.
// The session id is in the handshake's query, where a failed attempt can
// name it (no frame ever passes).
func TestUpstreamOutageWithClientRetryingGivesNoExpire(t *testing.T) {
	const interval = 2 * time.Second
	up, pf := newOutageUpstream(t), newPlatform(t)
	env := baseEnv(up.srv.URL, pf.url(), t.TempDir())
	env["PRESENCE_CHECK_INTERVAL"] = interval.String()
	sc := start(t, env)
	wsURL := "ws://" + sc.addr + "/ws?sessionId=out-1&botId=b"

	c, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if code, body := sc.api("PUT", "/v1/sessions/out-1/handoff", nil); code/100 != 2 {
		t.Fatalf("hand-over: %d %s", code, body)
	}

	up.stop()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err = c.ReadMessage()
	if ne, ok := err.(interface{ Timeout() bool }); err == nil || ok && ne.Timeout() {
		t.Fatalf("the client's socket outlived the upstream: %v", err)
	}
	c.Close() // as a browser does once its socket ended
	// The client retries, as the seed's WebChat does, until the test says stop.
	var last time.Time
	retryUntil := time.Now().Add(4 * interval)
	attempts := 0
	for time.Now().Before(retryUntil) {
		_, resp, err := websocket.DefaultDialer.Dial(wsURL, nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("handshake during the outage: %v %v, want 502", err, resp)
		}
		resp.Body.Close()
		last = time.Now()
		attempts++
		select {
		case h := <-pf.notify:
			t.Fatalf("%s %s for %s after %d attempts, while the client was still retrying", h.event(), h.Path, h.session(), attempts)
		case <-time.After(200 * time.Millisecond):
		}
	}
	h := pf.accepted(t, 5*interval)
	if h.Path != "/expire" || h.session() != "out-1" {
		t.Fatalf("after the retries stopped: %s for %s", h.Path, h.session())
	}
	// The sidecar saw the last attempt a little before the client got its
	// 502: a few milliseconds of slack.
	if waited := h.At.Sub(last); waited < interval-100*time.Millisecond {
		t.Fatalf("/expire %v after the last attempt, before the %v interval", waited, interval)
	}
	pf.quiet(t, 2*interval)
}
