package proxy

// Tests of conn.go and pump.go: how a connection ends and what it costs.

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// TestCloseReasonSaysWhoLeft: a clean close, a client that vanishes without
// a Close frame, and an upstream that does.
func TestCloseReasonSaysWhoLeft(t *testing.T) {
	t.Run("clean", func(t *testing.T) {
		up, _ := gorillaUpstream(t, websocket.Upgrader{})
		tp := startProxy(t, up, nil)
		c, _ := gorillaDial(t, nil, tp.ws("/ws"), nil)
		closeGorilla(t, c, 1000, "")
		if e := tp.rec.wait(t, "ConnClosed", isKind(evClosed)); e.Reason != event.CloseClean {
			t.Errorf("reason %q, want %q", e.Reason, event.CloseClean)
		}
	})
	t.Run("client vanished", func(t *testing.T) {
		up, ends := gorillaUpstream(t, websocket.Upgrader{})
		tp := startProxy(t, up, nil)
		c, _ := rawDial(t, tp.addr, "/ws?sessionId=v1", nil)
		c.Write(frame(true, 0x1, true, []byte("hi")))
		c.Close()
		waitEnd(t, ends)
		if e := tp.rec.wait(t, "ConnClosed", isKind(evClosed)); e.Reason != event.CloseClientGone {
			t.Errorf("reason %q, want %q", e.Reason, event.CloseClientGone)
		}
	})
	t.Run("upstream vanished", func(t *testing.T) {
		up, conns := rawUpstream(t)
		tp := startProxy(t, up, nil)
		c, _ := gorillaDial(t, nil, tp.ws("/ws"), nil)
		u := acceptRaw(t, conns)
		u.Close()
		c.SetReadDeadline(time.Now().Add(waitTime))
		if _, _, err := c.ReadMessage(); err == nil {
			t.Error("client read a message from a closed upstream")
		}
		c.Close()
		if e := tp.rec.wait(t, "ConnClosed", isKind(evClosed)); e.Reason != event.CloseUpstreamGone {
			t.Errorf("reason %q, want %q", e.Reason, event.CloseUpstreamGone)
		}
	})
}

// TestUpstreamCloseThenDropIsCleanClose: an upstream that sends its Close
// and drops the TCP connection at once (without waiting for the client's
// answer) still gives a clean close, and the client gets the Close.
func TestUpstreamCloseThenDropIsCleanClose(t *testing.T) {
	up, conns := rawUpstream(t)
	tp := startProxy(t, up, nil)
	c, _ := gorillaDial(t, nil, tp.ws("/ws"), nil)
	u := acceptRaw(t, conns)
	u.Write(frame(true, 0x8, false, closePayload(4010, "gone now")))
	u.Close()
	ce := readUntilClose(t, c)
	if ce.Code != 4010 || ce.Text != "gone now" {
		t.Errorf("client got %d %q", ce.Code, ce.Text)
	}
	if e := tp.rec.wait(t, "ConnClosed", isKind(evClosed)); e.Reason != event.CloseClean {
		t.Errorf("reason %q, want %q", e.Reason, event.CloseClean)
	}
}

// onlyConn returns the proxy's one open WebSocket.
func onlyConn(t *testing.T, p *Proxy) *wsConn {
	t.Helper()
	p.connsMu.Lock()
	defer p.connsMu.Unlock()
	if len(p.conns) != 1 {
		t.Fatalf("%d connections open, want 1", len(p.conns))
	}
	for c := range p.conns {
		return c
	}
	return nil
}
