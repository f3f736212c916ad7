package proxy

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

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

// TestShutdownUpgradeInFlight: an upgrade whose upstream handshake is still
// running when Shutdown starts is waited for and then sent away too: no
// WebSocket outlives Shutdown.
func TestShutdownUpgradeInFlight(t *testing.T) {
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
