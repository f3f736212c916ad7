package proxy

// Tests of goaway.go: Shutdown and the 1001 (going away) close.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// TestShutdownClosesWith1001BothWays: Shutdown closes open WebSockets with
// 1001 towards both peers once its context ends, and returns.
func TestShutdownClosesWith1001BothWays(t *testing.T) {
	up, ends := gorillaUpstream(t, websocket.Upgrader{})
	tp := startProxy(t, up, nil)
	c, _ := gorillaDial(t, nil, tp.ws("/ws"), nil)
	echo(t, c, websocket.TextMessage, []byte("before"))
	readErr := make(chan error, 1)
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				c.Close() // as a browser does after the close handshake
				readErr <- err
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	tp.p.Shutdown(ctx)
	took := time.Since(start)
	t.Logf("Shutdown took %v", took)
	select {
	case err := <-readErr:
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
			t.Errorf("client read ended with %v, want close 1001", err)
		}
	case <-time.After(waitTime):
		t.Fatal("the client got no close")
	}
	if end := waitEnd(t, ends); end.closeCode != websocket.CloseGoingAway {
		t.Errorf("upstream got close %d, want 1001", end.closeCode)
	}
	if e := tp.rec.wait(t, "ConnClosed", isKind(evClosed)); e.Reason != event.CloseShutdown {
		t.Errorf("reason %q, want %q", e.Reason, event.CloseShutdown)
	}
	if took >= 3*time.Second { // about 100ms when the machine is quiet
		t.Errorf("Shutdown took %v though both peers answered the Close at once", took)
	}
	if n := tp.p.Stats().OpenWebSockets.Load(); n != 0 {
		t.Errorf("%d WebSockets open after Shutdown", n)
	}
}

// TestShutdownReturnsWhileClientNotReading: Shutdown returns in bounded time
// even when a client stopped reading while the upstream streams to it (the
// relay is blocked writing to the client).
func TestShutdownReturnsWhileClientNotReading(t *testing.T) {
	up, ends := floodUpstream(t)
	tp := startProxy(t, up, nil)
	rawDial(t, tp.addr, "/ws", nil)
	// Wait until the relay is stuck: the client's socket buffers are full
	// and the bytes relayed to it stop growing.
	deadline := time.Now().Add(waitTime)
	for last, still := int64(-1), 0; still < 3; {
		if time.Now().After(deadline) {
			t.Fatal("the relay to a client that does not read never stalled")
		}
		time.Sleep(20 * time.Millisecond)
		n := tp.p.Stats().Bytes[event.FromServer].Load()
		if n == last && n > 0 {
			still++
		} else {
			still = 0
		}
		last = n
	}
	done := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		tp.p.Shutdown(ctx)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitTime):
		t.Fatal("Shutdown hangs on a client that does not read")
	}
	select {
	case <-ends:
	case <-time.After(waitTime):
		t.Fatal("the upstream connection was not closed")
	}
}

// rawDialStatus sends an upgrade request and returns the connection, its
// reader positioned at the status line.
func rawDialStatus(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", addr)
	return c, bufio.NewReader(c)
}

// TestShutdownSendsAwayUpgradeInFlight: an upgrade whose upstream handshake
// is still running when Shutdown starts is waited for and then sent away
// too: no WebSocket outlives Shutdown.
func TestShutdownSendsAwayUpgradeInFlight(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					c.Close()
					return
				}
				time.Sleep(300 * time.Millisecond) // a slow upstream handshake
				fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
					acceptKey(req.Header.Get("Sec-WebSocket-Key")))
				buf := make([]byte, 1024)
				for {
					if _, err := c.Read(buf); err != nil {
						c.Close()
						return
					}
				}
			}()
		}
	}()
	tp := startProxy(t, ln.Addr().String(), nil)
	dialed := make(chan *bufio.Reader, 1)
	go func() {
		c, br := rawDial(t, tp.addr, "/ws", nil)
		c.SetReadDeadline(time.Now().Add(5 * time.Second)) // fail, not hang
		dialed <- br
	}()
	time.Sleep(100 * time.Millisecond) // the upgrade is in flight
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	tp.p.Shutdown(ctx)
	if n := tp.p.Stats().OpenWebSockets.Load(); n != 0 {
		t.Errorf("%d WebSocket(s) still open when Shutdown returned", n)
	}
	br := <-dialed
	// The client got its 101 and then the 1001.
	var got []byte
	buf := make([]byte, 64)
	for len(got) < 4 {
		n, err := br.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	f, _, ok := parseFrame(got)
	if !ok || f.op != 0x8 || len(f.payload) < 2 || int(f.payload[0])<<8|int(f.payload[1]) != 1001 {
		t.Fatalf("after the 101 the client read %q; want a Close 1001", got)
	}
	// A new upgrade during the shutdown is refused.
	c, br2 := rawDialStatus(t, tp.addr)
	defer c.Close()
	if line, _ := br2.ReadString('\n'); !strings.Contains(line, " 503 ") {
		t.Fatalf("an upgrade during the shutdown got %q, want 503", line)
	}
}

// A peer that answers the shutdown's 1001 by resetting its socket does not
// change why the connection ended: the sidecar ended it (CloseShutdown, so
// presence keeps counting the session as connected across the restart),
// not the client leaving.
func TestShutdownReasonSurvivesAPeerReset(t *testing.T) {
	up, _ := gorillaUpstream(t, websocket.Upgrader{})
	tp := startProxy(t, up, nil)
	c, br := rawDial(t, tp.addr, "/ws?sessionId=s1", nil)
	go func() {
		buf := make([]byte, 64)
		br.Read(buf) // the 1001
		c.(*net.TCPConn).SetLinger(0)
		c.Close() // RST, not FIN
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	tp.p.Shutdown(ctx)
	if e := tp.rec.wait(t, "ConnClosed", isKind(evClosed)); e.Reason != event.CloseShutdown {
		t.Errorf("reason %q, want %q", e.Reason, event.CloseShutdown)
	}
}
