package proxy

// Tests of ident.go and identify (tap.go): where the ids come from.

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// linkFrame is the seed platform's first client frame.
const linkFrame = `{"action":"link","data":{"sessionId":"s1","botId":"b1"}}`

func openedWith(who event.Identity) func(obsEvent) bool {
	return func(e obsEvent) bool { return e.Kind == evOpened && e.Who == who }
}

func identifiedAs(who event.Identity) func(obsEvent) bool {
	return func(e obsEvent) bool { return e.Kind == evIdentified && e.Who == who }
}

// TestIDsFromEverySource: every SESSION_ID_FROM / BOT_ID_FROM source, for
// WebSockets and plain requests.
func TestIDsFromEverySource(t *testing.T) {
	up, _ := gorillaUpstream(t, websocket.Upgrader{EnableCompression: true})
	tp := startProxy(t, up, func(o *Options) {
		o.SessionFrom = mustSources(t, "query:sessionId,header:X-Session-Id,cookie:sid,frame:data.sessionId,body:sessionId")
	})

	t.Run("query", func(t *testing.T) {
		c, _ := gorillaDial(t, nil, tp.ws("/ws?sessionId=q1&botId=qb1"), nil)
		e := tp.rec.wait(t, "ConnOpened q1", openedWith(event.Identity{SessionID: "q1", BotID: "qb1"}))
		// The ids are known: a link frame with others does not change them.
		echo(t, c, websocket.TextMessage, []byte(linkFrame))
		closeGorilla(t, c, 1000, "")
		tp.rec.wait(t, "ConnClosed", func(x obsEvent) bool { return x.Kind == evClosed && x.ID == e.ID })
		for _, x := range tp.rec.snapshot() {
			if x.Kind == evIdentified && x.ID == e.ID {
				t.Errorf("ConnIdentified %+v for a connection whose ids came with the request", x.Who)
			}
		}
	})
	t.Run("header", func(t *testing.T) {
		c, _ := gorillaDial(t, nil, tp.ws("/ws"), http.Header{"X-Session-Id": {"h1"}})
		tp.rec.wait(t, "ConnOpened h1", openedWith(event.Identity{SessionID: "h1"}))
		closeGorilla(t, c, 1000, "")
	})
	t.Run("cookie", func(t *testing.T) {
		c, _ := gorillaDial(t, nil, tp.ws("/ws"), http.Header{"Cookie": {"theme=dark; sid=c1"}})
		tp.rec.wait(t, "ConnOpened c1", openedWith(event.Identity{SessionID: "c1"}))
		closeGorilla(t, c, 1000, "")
	})
	t.Run("frame", func(t *testing.T) {
		from := tp.rec.mark()
		c, _ := gorillaDial(t, nil, tp.ws("/ws"), nil)
		e := tp.rec.waitFrom(t, from, "ConnOpened without ids", openedWith(event.Identity{}))
		echo(t, c, websocket.TextMessage, []byte(`{"action":"hello"}`)) // no ids yet
		echo(t, c, websocket.TextMessage, []byte(linkFrame))
		got := tp.rec.wait(t, "ConnIdentified s1", identifiedAs(event.Identity{SessionID: "s1", BotID: "b1"}))
		if got.ID != e.ID {
			t.Errorf("identified connection %d, opened %d", got.ID, e.ID)
		}
		closeGorilla(t, c, 1000, "")
	})
	t.Run("frame compressed", func(t *testing.T) {
		c, resp := gorillaDial(t, &websocket.Dialer{EnableCompression: true}, tp.ws("/ws"), nil)
		if !strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
			t.Fatal("compression not negotiated")
		}
		// Padded so that its compressed size tells it was compressed.
		echo(t, c, websocket.TextMessage, []byte(`{"action":"link","data":{"sessionId":"gz1","botId":"gzb1","pad":"`+strings.Repeat("ab", 100)+`"}}`))
		tp.rec.wait(t, "ConnIdentified gz1", identifiedAs(event.Identity{SessionID: "gz1", BotID: "gzb1"}))
		m := tp.rec.wait(t, "compressed link message", func(e obsEvent) bool {
			return e.Kind == evMessage && e.Dir == event.FromClient && bytes.Contains(e.Msg.Prefix, []byte("gz1"))
		})
		if m.Msg.Size >= int64(len(m.Msg.Prefix)) {
			t.Errorf("the link frame went uncompressed (%d bytes)", m.Msg.Size)
		}
		closeGorilla(t, c, 1000, "")
	})
	t.Run("http query", func(t *testing.T) {
		resp, err := http.Get(tp.http("/poll?sessionId=q2&botId=qb2"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		tp.rec.wait(t, "HTTPRequest q2", func(e obsEvent) bool {
			return e.Kind == evHTTP && e.Who == event.Identity{SessionID: "q2", BotID: "qb2"}
		})
	})
	t.Run("http body", func(t *testing.T) {
		body := `{"sessionId":"s2","botId":"b2","text":"hi"}`
		resp, err := http.Post(tp.http("/webchat/message"), "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		e := tp.rec.wait(t, "HTTPRequest s2", func(e obsEvent) bool {
			return e.Kind == evHTTP && e.Who == event.Identity{SessionID: "s2", BotID: "b2"}
		})
		if string(e.Body) != body {
			t.Errorf("body prefix %q", e.Body)
		}
	})
	t.Run("http no id", func(t *testing.T) {
		before := tp.p.Stats().Untracked.Load()
		resp, err := http.Post(tp.http("/webchat/message"), "application/json", strings.NewReader(`{"text":"anonymous"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		tp.rec.wait(t, "anonymous HTTPRequest", func(e obsEvent) bool {
			return e.Kind == evHTTP && string(e.Body) == `{"text":"anonymous"}`
		})
		if tp.p.Stats().Untracked.Load() != before+1 {
			t.Error("a request without a session id was not counted as untracked")
		}
	})
	tp.rec.check(t)
}

// TestIDsFromCompressedFramePython: the link frame sent compressed by the
// Python client (context takeover, 12-bit windows, after other messages
// that fill the window) still yields the ids; upstream messages reach the
// observer inflated when InspectServer is set.
func TestIDsFromCompressedFramePython(t *testing.T) {
	up, _ := pythonServer(t)
	tp := startProxy(t, up, func(o *Options) { o.InspectServer = true })
	py := startPython(t, "client", tp.ws("/ws"))
	open := py.next(t, "open")
	if !strings.Contains(open["extensions"].(string), "permessage-deflate") {
		t.Fatalf("no compression: %v", open["extensions"])
	}
	warm := `{"action":"typing","data":{"state":"on","session":"x"}}`
	for _, s := range []string{warm, strings.Repeat("filler text to move the window ", 300), linkFrame} {
		py.send(t, map[string]any{"send": s})
		if got := py.next(t, "recv"); got["data"] != s {
			t.Fatalf("echo differs")
		}
	}
	tp.rec.wait(t, "ConnIdentified s1", identifiedAs(event.Identity{SessionID: "s1", BotID: "b1"}))
	for _, dir := range []event.Direction{event.FromClient, event.FromServer} {
		m := tp.rec.wait(t, "link message "+dir.String(), func(e obsEvent) bool {
			return e.Kind == evMessage && e.Dir == dir && string(e.Msg.Prefix) == linkFrame
		})
		if m.Msg.Size >= int64(len(linkFrame)) {
			t.Errorf("%s: link frame of %d bytes on the wire: not compressed", dir, m.Msg.Size)
		}
	}
	py.send(t, map[string]any{"close": 1000})
	py.next(t, "closed")
	tp.rec.wait(t, "ConnClosed close", func(e obsEvent) bool { return e.Kind == evClosed && e.Reason == event.CloseClean })
	tp.rec.check(t)
}

// TestIDsFromCompressedFrameCoder: the same with coder/websocket and context
// takeover against a coder upstream.
func TestIDsFromCompressedFrameCoder(t *testing.T) {
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := coder.Accept(w, r, &coder.AcceptOptions{CompressionMode: coder.CompressionContextTakeover, CompressionThreshold: 1})
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			mt, b, err := c.Read(context.Background())
			if err != nil {
				return
			}
			c.Write(context.Background(), mt, b)
		}
	}))
	tp := startProxy(t, up, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	c, _, err := coder.Dial(ctx, tp.ws("/ws"), &coder.DialOptions{CompressionMode: coder.CompressionContextTakeover, CompressionThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	for _, s := range []string{`{"action":"link","data":{"x":1}}`, linkFrame} {
		if err := c.Write(ctx, coder.MessageText, []byte(s)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatal(err)
		}
	}
	tp.rec.wait(t, "ConnIdentified s1", identifiedAs(event.Identity{SessionID: "s1", BotID: "b1"}))
	c.Close(coder.StatusNormalClosure, "")
}
