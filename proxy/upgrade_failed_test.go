package proxy

// Tests of what the observer learns of handshakes that do not become
// connections (invariant 7, docs/ARCHITECTURE.md, "Presence invariants").

import (
	"io"
	"net/http"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// failedDial dials u and expects the handshake to be answered with status.
func failedDial(t *testing.T, u string, status int) {
	t.Helper()
	_, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err == nil || resp == nil || resp.StatusCode != status {
		t.Fatalf("dial %s: %v, response %v; want %d", u, err, resp, status)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// waitFailed waits for the UpgradeFailed event after position from and
// checks its ids and trace.
func waitFailed(t *testing.T, tp *testProxy, from int, want event.Identity) {
	t.Helper()
	e := tp.rec.waitFrom(t, from, "UpgradeFailed", isKind(evFailed))
	if e.Who != want {
		t.Errorf("UpgradeFailed for %+v, want %+v", e.Who, want)
	}
	if want.SessionID != "" && len(e.Trace) != 55 {
		t.Errorf("UpgradeFailed trace %q, want the upgrade's traceparent", e.Trace)
	}
}

// TestFailedUpgradeIsReportedAsPresence: a handshake answered 502 (the
// upstream unreachable), one the upstream refuses, and one refused over
// MaxConnections each tell the observer UpgradeFailed with the request's
// ids, so that a client retrying through an outage is seen as present; a
// successful one tells ConnOpened only.
func TestFailedUpgradeIsReportedAsPresence(t *testing.T) {
	who := event.Identity{SessionID: "s-7", BotID: "b-1"}
	t.Run("upstream unreachable", func(t *testing.T) {
		tp := startProxy(t, deadAddr(t), nil)
		failedDial(t, tp.ws("/ws?sessionId=s-7&botId=b-1"), http.StatusBadGateway)
		waitFailed(t, tp, 0, who)
		from := tp.rec.mark()
		failedDial(t, tp.ws("/ws"), http.StatusBadGateway) // no ids: reported all the same
		waitFailed(t, tp, from, event.Identity{})
	})
	t.Run("upstream refuses", func(t *testing.T) {
		up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
		}))
		tp := startProxy(t, up, nil)
		failedDial(t, tp.ws("/ws?sessionId=s-7&botId=b-1"), http.StatusServiceUnavailable)
		waitFailed(t, tp, 0, who)
	})
	t.Run("over MaxConnections", func(t *testing.T) {
		up, ends := gorillaUpstream(t, websocket.Upgrader{})
		tp := startProxy(t, up, func(o *Options) { o.MaxConnections = 1 })
		c, _ := gorillaDial(t, nil, tp.ws("/ws?sessionId=holder"), nil)
		echo(t, c, websocket.TextMessage, []byte("holding the only slot"))
		from := tp.rec.mark()
		_, resp, err := websocket.DefaultDialer.Dial(tp.ws("/ws?sessionId=s-7&botId=b-1"), nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("dial over the cap: %v %v", err, resp)
		}
		resp.Body.Close()
		e := tp.rec.waitFrom(t, from, "UpgradeFailed", isKind(evFailed))
		if e.Who != who {
			t.Errorf("UpgradeFailed for %+v, want %+v", e.Who, who)
		}
		closeGorilla(t, c, websocket.CloseNormalClosure, "")
		waitEnd(t, ends)
	})
	t.Run("success", func(t *testing.T) {
		up, ends := gorillaUpstream(t, websocket.Upgrader{})
		tp := startProxy(t, up, nil)
		c, _ := gorillaDial(t, nil, tp.ws("/ws?sessionId=s-7&botId=b-1"), nil)
		echo(t, c, websocket.TextMessage, []byte("hi"))
		closeGorilla(t, c, websocket.CloseNormalClosure, "")
		waitEnd(t, ends)
		tp.rec.wait(t, "ConnClosed", isKind(evClosed))
		for _, e := range tp.rec.snapshot() {
			if e.Kind == evFailed {
				t.Fatalf("UpgradeFailed for a successful upgrade; events: %s", tp.rec.dump())
			}
		}
	})
}
