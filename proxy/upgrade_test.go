package proxy

// Tests of upgrade.go: the handshake's forwarding and what follows it.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"
)

// TestUpgradeForwardsHeadersLikeHTTP: the upgrade request gets the same
// treatment as plain HTTP: end-to-end headers kept, X-Forwarded-*,
// traceparent added, hop-by-hop headers removed.
func TestUpgradeForwardsHeadersLikeHTTP(t *testing.T) {
	up, ends := gorillaUpstream(t, websocket.Upgrader{})
	tp := startProxy(t, up, nil)
	c, _ := rawDial(t, tp.addr, "/ws", http.Header{
		"Authorization":       {"Bearer ws-token"},
		"X-Forwarded-For":     {"203.0.113.7"},
		"X-Forwarded-Proto":   {"https"}, // the TLS ingress in front of us
		"Connection":          {"X-Hop-Request"},
		"X-Hop-Request":       {"must go"},
		"Proxy-Authorization": {"Basic Zm9vOmJhcg=="},
	})
	c.Write(frame(true, 0x8, true, closePayload(1000, "")))
	end := waitEnd(t, ends)
	c.Close()
	for k, want := range map[string]string{
		"Authorization":     "Bearer ws-token",
		"X-Forwarded-For":   "203.0.113.7, 127.0.0.1",
		"X-Forwarded-Proto": "https", // an ingress's scheme is kept
		"Upgrade":           "websocket",
	} {
		if got := strings.Join(end.header[k], ", "); got != want {
			t.Errorf("upstream got %s %q, want %q", k, got, want)
		}
	}
	for _, k := range []string{"X-Hop-Request", "Proxy-Authorization"} {
		if v, ok := end.header[k]; ok {
			t.Errorf("hop-by-hop header %s: %q reached the upstream", k, v)
		}
	}
	if tp := end.header.Get("Traceparent"); !traceparentRE.MatchString(tp) {
		t.Errorf("traceparent %q", tp)
	}
}

// TestUpgradeRelaysBytesSentWithHandshake: frames that a peer sends in the
// same write as its handshake (so they sit in a handshake buffer) are
// relayed first and intact; Firefox's "Connection: keep-alive, Upgrade" is
// an upgrade.
func TestUpgradeRelaysBytesSentWithHandshake(t *testing.T) {
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

// TestUpgradeToOtherProtocolRelaysRawBytes: an upgrade to something else
// than WebSocket is relayed as plain bytes, with no probe.
func TestUpgradeToOtherProtocolRelaysRawBytes(t *testing.T) {
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

// TestUpgradeWithoutDialTimeout: Options without a DialTimeout still proxy
// upgrades.
func TestUpgradeWithoutDialTimeout(t *testing.T) {
	up, _ := gorillaUpstream(t, websocket.Upgrader{})
	tp := startProxy(t, up, func(o *Options) { o.DialTimeout = 0 })
	c, _ := gorillaDial(t, nil, tp.ws("/ws"), nil)
	echo(t, c, websocket.TextMessage, []byte("no dial timeout set"))
	closeGorilla(t, c, 1000, "")
}

// TestUpgradeRefusalRelayedAsIs: an upstream that refuses the upgrade has
// its answer (status, headers, body) relayed as it is.
func TestUpgradeRefusalRelayedAsIs(t *testing.T) {
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Reason", "bad token")
		w.Header().Set("Content-Type", "application/json")
		w.Header().Add("Set-Cookie", "tried=1")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"error":"forbidden"}`)
	}))
	tp := startProxy(t, up, nil)
	_, resp, err := websocket.DefaultDialer.Dial(tp.ws("/ws"), nil)
	if err != websocket.ErrBadHandshake || resp == nil {
		t.Fatalf("dial: %v, response %v", err, resp)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusForbidden || string(b) != `{"error":"forbidden"}` ||
		resp.Header.Get("X-Reason") != "bad token" || resp.Header.Get("Content-Type") != "application/json" ||
		resp.Header.Get("Set-Cookie") != "tried=1" {
		t.Errorf("client got %s %v %q", resp.Status, resp.Header, b)
	}
	// The connection can be used again afterwards.
	resp2, err := http.Get(tp.http("/after"))
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
}

// TestUpgradeKeepsHostForOriginChecks: a browser's same-origin WebSocket is
// accepted by upstreams that check Origin against Host (gorilla's and
// coder's defaults) as it is without the proxy: the Host header is passed
// on.
func TestUpgradeKeepsHostForOriginChecks(t *testing.T) {
	t.Run("gorilla", func(t *testing.T) {
		up, ends := gorillaUpstream(t, websocket.Upgrader{}) // default CheckOrigin
		tp := startProxy(t, up, nil)
		c, _ := gorillaDial(t, nil, tp.ws("/ws"), http.Header{"Origin": {"http://" + tp.addr}})
		if end := closeAndEnd(t, c, ends); end.header.Get("X-Forwarded-Host") != tp.addr {
			t.Errorf("X-Forwarded-Host %q", end.header.Get("X-Forwarded-Host"))
		}
	})
	t.Run("coder", func(t *testing.T) {
		up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := coder.Accept(w, r, nil) // default origin check
			if err != nil {
				return
			}
			c.Close(coder.StatusNormalClosure, "")
		}))
		tp := startProxy(t, up, nil)
		ctx, cancel := context.WithTimeout(context.Background(), waitTime)
		defer cancel()
		c, resp, err := coder.Dial(ctx, tp.ws("/ws"), &coder.DialOptions{HTTPHeader: http.Header{"Origin": {"http://" + tp.addr}}})
		if err != nil {
			status := ""
			if resp != nil {
				status = resp.Status
			}
			t.Fatalf("dial: %v %s", err, status)
		}
		c.CloseNow()
	})
}

func closeAndEnd(t *testing.T, c *websocket.Conn, ends <-chan upstreamEnd) upstreamEnd {
	t.Helper()
	closeGorilla(t, c, websocket.CloseNormalClosure, "")
	return waitEnd(t, ends)
}

// TestUpgradeHeaderTokens: an upgrade is recognised by "upgrade" among the
// Connection options, in any case, in any of its lines, and WebSocket by
// its token among the Upgrade protocols; the headers the Connection header
// names are removed with the fixed hop-by-hop list, end-to-end ones stay.
func TestUpgradeHeaderTokens(t *testing.T) {
	for _, tc := range []struct {
		upgrade    string
		connection []string
		want       bool
	}{
		{"websocket", []string{"Upgrade"}, true},
		{"websocket", []string{"keep-alive, Upgrade"}, true}, // Firefox
		{"websocket", []string{"keep-alive", "upgrade"}, true},
		{"websocket", []string{"  UPGRADE\t,close"}, true},
		{"websocket", []string{"keep-alive"}, false},
		{"websocket", []string{"upgraded"}, false},
		{"websocket", nil, false},
		{"", []string{"Upgrade"}, false},
	} {
		r := httptest.NewRequest("GET", "/ws", nil)
		if tc.upgrade != "" {
			r.Header.Set("Upgrade", tc.upgrade)
		}
		r.Header["Connection"] = tc.connection
		if got := isUpgrade(r); got != tc.want {
			t.Errorf("Upgrade %q, Connection %q: isUpgrade %v, want %v", tc.upgrade, tc.connection, got, tc.want)
		}
	}
	for upgrade, want := range map[string]bool{
		"websocket": true, "WebSocket": true, "h2c, websocket": true, " websocket ": true,
		"websocket/13": false, "websockets": false, "x-echo": false, "": false,
	} {
		if got := isWebSocket(upgrade); got != want {
			t.Errorf("isWebSocket(%q) = %v, want %v", upgrade, got, want)
		}
	}
	h := http.Header{
		"Connection":    {"keep-alive, X-Hop-One", " x-hop-two "},
		"X-Hop-One":     {"1"},
		"X-Hop-Two":     {"2"},
		"Keep-Alive":    {"timeout=5"},
		"Upgrade":       {"websocket"},
		"Te":            {"trailers"},
		"Authorization": {"Bearer tok"},
		"X-Custom":      {"kept"},
	}
	removeHopByHop(h)
	if len(h) != 2 || h.Get("Authorization") != "Bearer tok" || h.Get("X-Custom") != "kept" {
		t.Errorf("after removeHopByHop: %v; want only Authorization and X-Custom", h)
	}
}
