package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// TestBytesRightAfterHandshake: frames that a peer sends in the same write
// as its handshake (so they sit in a handshake buffer) are relayed first and
// intact; Firefox's "Connection: keep-alive, Upgrade" is an upgrade.
func TestBytesRightAfterHandshake(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fromUp := frame(true, 0x1, false, []byte("hello from the upstream"))
	upGot := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		// 101 and a first frame in one write.
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n%s",
			acceptKey(req.Header.Get("Sec-WebSocket-Key")), fromUp)
		b := make([]byte, 64)
		c.SetReadDeadline(time.Now().Add(waitTime))
		n, _ := io.ReadAtLeast(br, b, 6+len("hello from the client"))
		upGot <- b[:n]
	}()
	tp := startProxy(t, ln.Addr().String(), withProbe)

	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fromClient := frame(true, 0x1, true, []byte("hello from the client"))
	// The request and a first frame in one write.
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n%s", fromClient)
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(waitTime))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", err, resp)
	}
	got := make([]byte, len(fromUp))
	if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, fromUp) {
		t.Errorf("client got %q, %v", got, err)
	}
	select {
	case b := <-upGot:
		if !bytes.Equal(b, fromClient) {
			t.Errorf("upstream got %q, want %q", b, fromClient)
		}
	case <-time.After(waitTime):
		t.Fatal("upstream got nothing")
	}
}

// TestUpgradeOtherProtocol: an upgrade to something else than WebSocket is
// relayed as plain bytes, with no probe.
func TestUpgradeOtherProtocol(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-echo\r\nConnection: Upgrade\r\n\r\n")
		io.Copy(c, br) // echo until the client ends
	}()
	tp := startProxy(t, ln.Addr().String(), withProbe)
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: x\r\nUpgrade: x-echo\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(waitTime))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", err, resp)
	}
	// Not WebSocket frames: a probe would corrupt them.
	time.Sleep(2 * (probeInterval + probeTimeout))
	msg := []byte("\x81\x05not a frame, just bytes")
	c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, msg) {
		t.Errorf("echo %q, %v", got, err)
	}
	c.(*net.TCPConn).CloseWrite()
	if rest, _ := io.ReadAll(br); len(rest) > 0 {
		t.Errorf("extra bytes %q", rest)
	}
	tp.rec.wait(t, "ConnClosed", isKind(evClosed))
}

// TestHTTPEarlyResponse: an upstream that answers before reading a large
// request body; each request is still reported, once, with the session id
// from the part of the body that went by, if any did.
func TestHTTPEarlyResponse(t *testing.T) {
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}))
	tp := startProxy(t, up, nil)
	const n = 5
	for i := 0; i < n; i++ {
		body := bytes.NewReader(append([]byte(`{"sessionId":"big","x":"`), bytes.Repeat([]byte("x"), 1<<20)...))
		resp, err := http.Post(tp.http("/upload"), "application/json", body)
		if err != nil {
			continue // the proxy may close while we still write; fine
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("status %s", resp.Status)
		}
	}
	deadline := time.Now().Add(waitTime)
	for {
		got := 0
		for _, e := range tp.rec.snapshot() {
			if e.Kind == evHTTP {
				got++
				// The upstream may answer before any of the body went by.
				if len(e.Body) >= len(`{"sessionId":"big"`) && e.Who.SessionID != "big" {
					t.Fatalf("request reported as %+v (body prefix %d bytes: %.40q)", e.Who, len(e.Body), e.Body)
				}
			}
		}
		if got == n {
			break
		}
		if got > n || time.Now().After(deadline) {
			t.Fatalf("%d HTTPRequest events for %d requests", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDialTimeoutUnset: Options without a DialTimeout still proxy upgrades.
func TestDialTimeoutUnset(t *testing.T) {
	up, _ := gorillaUpstream(t, websocket.Upgrader{})
	tp := startProxy(t, up, func(o *Options) { o.DialTimeout = 0 })
	c, _ := gorillaDial(t, nil, tp.ws("/ws"), nil)
	echo(t, c, websocket.TextMessage, []byte("no dial timeout set"))
	closeGorilla(t, c, 1000, "")
}

// TestUpstreamClosesFirst: an upstream that sends its Close and drops the
// TCP connection at once (without waiting for the client's answer) still
// gives a clean close, and the client gets the Close.
func TestUpstreamClosesFirst(t *testing.T) {
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
