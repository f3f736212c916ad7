package proxy

// Interoperability: real WebSocket libraries on both sides of the proxy
// (gorilla/websocket, coder/websocket, Python's websockets).

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// TestInteropGorilla: gorilla client and gorilla upstream through the
// proxy: subprotocol, end-to-end headers, text, binary, a 1 MiB message,
// a client ping answered by the upstream with its payload intact, and close
// codes in both directions.
func TestInteropGorilla(t *testing.T) {
	up, ends := gorillaUpstream(t, websocket.Upgrader{Subprotocols: []string{"chat.v2", "chat.v1"}})
	tp := startProxy(t, up, nil)

	t.Run("messages", func(t *testing.T) {
		h := http.Header{"Authorization": {"Bearer tok"}, "Cookie": {"a=1; b=2"}, "X-Custom": {"x"}}
		c, resp := gorillaDial(t, &websocket.Dialer{Subprotocols: []string{"chat.v1"}}, tp.ws("/ws?x=1"), h)
		if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "chat.v1" || c.Subprotocol() != "chat.v1" {
			t.Errorf("subprotocol: header %q, conn %q; want chat.v1", got, c.Subprotocol())
		}
		if sc := resp.Header.Values("Set-Cookie"); len(sc) != 2 || sc[0] != "ws1=a; Path=/" || sc[1] != "ws2=b; Path=/" {
			t.Errorf("Set-Cookie on the 101: %q", sc)
		}
		echo(t, c, websocket.TextMessage, []byte("hello"))
		echo(t, c, websocket.BinaryMessage, []byte{0, 1, 2, 0xff})
		echo(t, c, websocket.BinaryMessage, randomBytes(1<<20))
		echo(t, c, websocket.TextMessage, bytes.Repeat([]byte("é"), 70000)) // 64-bit length header
		echo(t, c, websocket.TextMessage, []byte{})

		// A client ping reaches the upstream, whose pong comes back intact.
		pongs := make(chan string, 1)
		c.SetPongHandler(func(s string) error { pongs <- s; return nil })
		if err := c.WriteControl(websocket.PingMessage, []byte("are-you-there?"), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		echo(t, c, websocket.TextMessage, []byte("after ping")) // runs the read loop
		select {
		case p := <-pongs:
			if p != "are-you-there?" {
				t.Errorf("pong payload %q", p)
			}
		default:
			t.Error("no pong before the echo that followed the ping")
		}

		ce := closeGorilla(t, c, 4001, "client bye")
		if ce.Code != 4001 { // gorilla echoes the code only
			t.Errorf("client got close %d %q back", ce.Code, ce.Text)
		}
		end := waitEnd(t, ends)
		if end.closeCode != 4001 || end.closeText != "client bye" {
			t.Errorf("upstream got close %d %q, want 4001 %q", end.closeCode, end.closeText, "client bye")
		}
		for k, want := range map[string]string{"Authorization": "Bearer tok", "Cookie": "a=1; b=2", "X-Custom": "x", "Sec-Websocket-Protocol": "chat.v1"} {
			if got := strings.Join(end.header[k], ","); got != want {
				t.Errorf("upstream got %s %q, want %q", k, got, want)
			}
		}
		tp.rec.wait(t, "ConnClosed close", func(e obsEvent) bool { return e.Kind == evClosed && e.Reason == event.CloseClean })
		// Without InspectServer the upstream's messages are counted, not read.
		for _, e := range tp.rec.snapshot() {
			if e.Kind == evMessage && e.Dir == event.FromServer && e.Msg.Prefix != nil {
				t.Errorf("upstream message inspected: %.20q", e.Msg.Prefix)
			}
		}
	})

	t.Run("upstream close code", func(t *testing.T) {
		c, _ := gorillaDial(t, nil, tp.ws("/ws"), nil)
		if err := c.WriteMessage(websocket.TextMessage, []byte("close:4003:server bye")); err != nil {
			t.Fatal(err)
		}
		ce := readUntilClose(t, c)
		if ce.Code != 4003 || ce.Text != "server bye" {
			t.Errorf("client got close %d %q, want 4003 %q", ce.Code, ce.Text, "server bye")
		}
		waitEnd(t, ends)
	})
}

// TestInteropCoderWithDeflate: coder/websocket on both sides with
// permessage-deflate and context takeover: the extension the client got is
// the upstream's, compressed messages round-trip and the tap inflates them.
func TestInteropCoderWithDeflate(t *testing.T) {
	upExt := make(chan string, 1)
	upClose := make(chan error, 1)
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := coder.Accept(w, r, &coder.AcceptOptions{
			Subprotocols:         []string{"chat.v1"},
			CompressionMode:      coder.CompressionContextTakeover,
			CompressionThreshold: 1,
		})
		if err != nil {
			return
		}
		defer c.CloseNow()
		upExt <- w.Header().Get("Sec-WebSocket-Extensions")
		c.SetReadLimit(-1)
		ctx := context.Background()
		for {
			mt, data, err := c.Read(ctx)
			if err != nil {
				upClose <- err
				return
			}
			if err := c.Write(ctx, mt, data); err != nil {
				upClose <- err
				return
			}
		}
	}))
	tp := startProxy(t, up, func(o *Options) { o.InspectClient, o.InspectServer = true, true })

	ctx, cancel := context.WithTimeout(context.Background(), 3*waitTime) // compression under -race is slow
	defer cancel()
	c, resp, err := coder.Dial(ctx, tp.ws("/ws"), &coder.DialOptions{
		Subprotocols:         []string{"chat.v1"},
		CompressionMode:      coder.CompressionContextTakeover,
		CompressionThreshold: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(-1)
	ext := resp.Header.Get("Sec-WebSocket-Extensions")
	if want := <-upExt; ext != want || !strings.Contains(ext, "permessage-deflate") {
		t.Errorf("client got Sec-WebSocket-Extensions %q, upstream sent %q", ext, want)
	}
	if c.Subprotocol() != "chat.v1" {
		t.Errorf("subprotocol %q", c.Subprotocol())
	}
	msgs := [][]byte{
		[]byte(`{"action":"message","data":{"text":"hello hello hello hello"}}`),
		[]byte(`{"action":"message","data":{"text":"hello hello hello hello again"}}`), // refers to the window
		randomBytes(256 << 10),
		bytes.Repeat([]byte("compressible "), 30000),
		[]byte(`{"action":"message","data":{"text":"hello hello hello hello, last"}}`),
	}
	for i, m := range msgs {
		mt := coder.MessageText
		if i == 2 {
			mt = coder.MessageBinary
		}
		if err := c.Write(ctx, mt, m); err != nil {
			t.Fatal(err)
		}
		gotType, got, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if gotType != mt || !bytes.Equal(got, m) {
			t.Fatalf("message %d: echo differs (%d bytes sent, %d got)", i, len(m), len(got))
		}
	}
	// The tap saw the compressed text messages inflated, both ways.
	for _, dir := range []event.Direction{event.FromClient, event.FromServer} {
		m := tp.rec.wait(t, "last message "+dir.String(), func(e obsEvent) bool {
			return e.Kind == evMessage && e.Dir == dir && bytes.HasSuffix(e.Msg.Prefix, []byte("last\"}}"))
		})
		if m.Msg.Size >= int64(len(msgs[4])) {
			t.Errorf("%s: message of %d bytes on the wire was not compressed (%d plain)", dir, m.Msg.Size, len(msgs[4]))
		}
	}
	big := tp.rec.wait(t, "the compressible message", func(e obsEvent) bool {
		return e.Kind == evMessage && e.Dir == event.FromClient && bytes.HasPrefix(e.Msg.Prefix, []byte("compressible compressible"))
	})
	if !big.Msg.Truncated || len(big.Msg.Prefix) != 4096 {
		t.Errorf("big message: prefix %d bytes, truncated %v; want 4096, true", len(big.Msg.Prefix), big.Msg.Truncated)
	}

	if err := c.Close(4005, "coder bye"); err != nil {
		t.Errorf("close: %v", err)
	}
	select {
	case err := <-upClose:
		var ce coder.CloseError
		if !errors.As(err, &ce) || ce.Code != 4005 || ce.Reason != "coder bye" {
			t.Errorf("upstream ended with %v, want close 4005", err)
		}
	case <-time.After(waitTime):
		t.Fatal("upstream did not see the close")
	}
}

// TestInteropPythonServer: the Python websockets server (permessage-deflate
// with a 12-bit window, subprotocols) behind the proxy, with gorilla and
// coder clients.
func TestInteropPythonServer(t *testing.T) {
	up, py := pythonServer(t)
	tp := startProxy(t, up, func(o *Options) { o.InspectServer = true })

	t.Run("gorilla", func(t *testing.T) {
		c, resp := gorillaDial(t, &websocket.Dialer{EnableCompression: true, Subprotocols: []string{"chat.v1", "chat.v2"}}, tp.ws("/py?sessionId=py1"), nil)
		open := py.next(t, "open")
		ext := resp.Header.Get("Sec-WebSocket-Extensions")
		if want, _ := open["extensions"].(string); ext != want || !strings.Contains(ext, "permessage-deflate") {
			t.Errorf("client got Sec-WebSocket-Extensions %q, upstream sent %q", ext, want)
		}
		if c.Subprotocol() != open["subprotocol"] || c.Subprotocol() == "" {
			t.Errorf("subprotocol: client %q, upstream %v", c.Subprotocol(), open["subprotocol"])
		}
		for i := 0; i < 3; i++ {
			echo(t, c, websocket.TextMessage, []byte(strings.Repeat(`{"action":"message","data":{"text":"olá"}}`, 10)))
		}
		random := randomBytes(1 << 20) // sent compressed in many frames
		echo(t, c, websocket.BinaryMessage, random)
		echo(t, c, websocket.TextMessage, bytes.Repeat([]byte("zip "), 300000))

		// gorilla sends a big compressed message in several frames; the
		// tap inflates across them.
		zip := tp.rec.wait(t, "inflated client message", func(e obsEvent) bool {
			return e.Kind == evMessage && e.Dir == event.FromClient && bytes.HasPrefix(e.Msg.Prefix, []byte("zip zip"))
		})
		if !bytes.Equal(zip.Msg.Prefix, bytes.Repeat([]byte("zip "), 1024)) || !zip.Msg.Truncated || zip.Msg.Size > 100000 {
			t.Errorf("compressed fragmented message: %d bytes on the wire, prefix %d bytes, truncated %v", zip.Msg.Size, len(zip.Msg.Prefix), zip.Msg.Truncated)
		}
		bin := tp.rec.wait(t, "inflated binary message", func(e obsEvent) bool {
			return e.Kind == evMessage && e.Dir == event.FromClient && !e.Msg.Text
		})
		if !bytes.Equal(bin.Msg.Prefix, random[:4096]) || bin.Msg.Size < 1<<20 {
			t.Errorf("compressed binary message: %d bytes on the wire, prefix differs: %v", bin.Msg.Size, !bytes.Equal(bin.Msg.Prefix, random[:4096]))
		}
		// Upstream messages reach the observer inflated.
		tp.rec.wait(t, "inflated server message", func(e obsEvent) bool {
			return e.Kind == evMessage && e.Dir == event.FromServer && e.Msg.Size < 400 &&
				bytes.HasPrefix(e.Msg.Prefix, []byte(`{"action":"message","data":{"text":"olá"}}{"action"`))
		})

		ce := closeGorilla(t, c, 4002, "gorilla bye")
		if ce.Code != 4002 {
			t.Errorf("client got close %d back", ce.Code)
		}
		if closed := py.next(t, "closed"); closed["code"] != float64(4002) || closed["reason"] != "gorilla bye" {
			t.Errorf("upstream got close %v %v, want 4002 %q", closed["code"], closed["reason"], "gorilla bye")
		}
	})

	t.Run("upstream close code", func(t *testing.T) {
		c, _ := gorillaDial(t, &websocket.Dialer{EnableCompression: true}, tp.ws("/py"), nil)
		py.next(t, "open")
		if err := c.WriteMessage(websocket.TextMessage, []byte("close:4004:python bye")); err != nil {
			t.Fatal(err)
		}
		ce := readUntilClose(t, c)
		if ce.Code != 4004 || ce.Text != "python bye" {
			t.Errorf("client got close %d %q, want 4004 %q", ce.Code, ce.Text, "python bye")
		}
		py.next(t, "closed")
	})

	t.Run("coder", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), waitTime)
		defer cancel()
		c, resp, err := coder.Dial(ctx, tp.ws("/py"), &coder.DialOptions{
			CompressionMode: coder.CompressionContextTakeover, CompressionThreshold: 1,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		c.SetReadLimit(-1)
		open := py.next(t, "open")
		if ext, want := resp.Header.Get("Sec-WebSocket-Extensions"), open["extensions"]; ext != want {
			t.Errorf("client got Sec-WebSocket-Extensions %q, upstream sent %v", ext, want)
		}
		for i := 0; i < 5; i++ {
			m := bytes.Repeat([]byte("coder and python "), 50*(i+1))
			if err := c.Write(ctx, coder.MessageText, m); err != nil {
				t.Fatal(err)
			}
			_, got, err := c.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, m) {
				t.Fatalf("echo %d differs", i)
			}
		}
		c.Close(coder.StatusNormalClosure, "")
		if closed := py.next(t, "closed"); closed["code"] != float64(1000) {
			t.Errorf("upstream got close %v", closed["code"])
		}
	})
}

// TestInteropPythonClient: the Python websockets client through the
// proxy to a gorilla upstream with compression, and to the Python server.
func TestInteropPythonClient(t *testing.T) {
	t.Run("gorilla upstream", func(t *testing.T) {
		up, ends := gorillaUpstream(t, websocket.Upgrader{EnableCompression: true, Subprotocols: []string{"chat.v1"}})
		tp := startProxy(t, up, nil)
		py := startPython(t, "client", tp.ws("/ws"), "chat.v1")
		open := py.next(t, "open")
		if open["extensions"] != "permessage-deflate; server_no_context_takeover; client_no_context_takeover" {
			t.Errorf("client got Sec-WebSocket-Extensions %v", open["extensions"])
		}
		if open["subprotocol"] != "chat.v1" {
			t.Errorf("subprotocol %v", open["subprotocol"])
		}
		for _, s := range []string{"short", strings.Repeat("python to gorilla ", 1000)} {
			py.send(t, map[string]any{"send": s})
			if got := py.next(t, "recv"); got["data"] != s {
				t.Fatalf("echo differs: %.40v", got["data"])
			}
		}
		py.send(t, map[string]any{"close": 4006, "reason": "python bye"})
		if closed := py.next(t, "closed"); closed["code"] != float64(4006) {
			t.Errorf("client got close %v", closed["code"])
		}
		if end := waitEnd(t, ends); end.closeCode != 4006 || end.closeText != "python bye" {
			t.Errorf("upstream got close %d %q", end.closeCode, end.closeText)
		}
	})

	t.Run("python upstream", func(t *testing.T) {
		up, srv := pythonServer(t)
		tp := startProxy(t, up, nil)
		py := startPython(t, "client", tp.ws("/ws"), "chat.v2")
		open, srvOpen := py.next(t, "open"), srv.next(t, "open")
		if open["extensions"] != srvOpen["extensions"] || open["extensions"] == nil {
			t.Errorf("client got Sec-WebSocket-Extensions %v, upstream sent %v", open["extensions"], srvOpen["extensions"])
		}
		if open["subprotocol"] != "chat.v2" {
			t.Errorf("subprotocol %v", open["subprotocol"])
		}
		py.send(t, map[string]any{"send": "close:4007:server says bye"})
		if closed := py.next(t, "closed"); closed["code"] != float64(4007) || closed["reason"] != "server says bye" {
			t.Errorf("client got close %v %v", closed["code"], closed["reason"])
		}
	})
}
