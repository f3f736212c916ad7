package proxy

// Tests of the taps' bound on inflation (tap.go, wsframe.Options.LimitInflate).

import (
	"bytes"
	"context"
	"net/http"
	"testing"

	coder "github.com/coder/websocket"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/proxy/wsframe"
)

// TestCompressedBombStopsClientInspectionOnly: coder/websocket on both sides
// with context takeover. The client links its session, then sends a message
// that inflates far past wsframe.MaxInflate (4 MiB of zeros, a few KiB on the
// wire), then a chat message. The bytes reach the upstream unchanged (its
// echoes match); the bomb is still reported with its right prefix; the
// client's later compressed messages are no longer inspected (counted once);
// the upstream's direction, which is not bounded, is still inspected, its
// echo of the bomb included.
func TestCompressedBombStopsClientInspectionOnly(t *testing.T) {
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := coder.Accept(w, r, &coder.AcceptOptions{CompressionMode: coder.CompressionContextTakeover, CompressionThreshold: 1})
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(-1)
		ctx := context.Background()
		for {
			mt, data, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := c.Write(ctx, mt, data); err != nil {
				return
			}
		}
	}))
	tp := startProxy(t, up, func(o *Options) { o.InspectClient, o.InspectServer = true, true })
	ctx, cancel := context.WithTimeout(context.Background(), 3*waitTime) // compression under -race is slow
	defer cancel()
	c, _, err := coder.Dial(ctx, tp.ws("/ws"), &coder.DialOptions{CompressionMode: coder.CompressionContextTakeover, CompressionThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(-1)
	bomb := make([]byte, 4*wsframe.MaxInflate)
	msgs := [][]byte{
		[]byte(`{"action":"link","data":{"sessionId":"s-bomb"}}`),
		bomb,
		[]byte(`{"action":"message","data":{"text":"after the bomb"}}`),
	}
	for i, m := range msgs {
		if err := c.Write(ctx, coder.MessageText, m); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, m) {
			t.Fatalf("message %d: echo differs (%d bytes sent, %d got)", i, len(m), len(got))
		}
	}
	tp.rec.wait(t, "the session id", func(e obsEvent) bool { return e.Kind == evIdentified && e.Who.SessionID == "s-bomb" })
	clientMsgs := func() (ms []obsEvent) {
		for _, e := range tp.rec.snapshot() {
			if e.Kind == evMessage && e.Dir == event.FromClient {
				ms = append(ms, e)
			}
		}
		return ms
	}
	tp.rec.wait(t, "the server's echo of the last message", func(e obsEvent) bool {
		return e.Kind == evMessage && e.Dir == event.FromServer && bytes.Contains(e.Msg.Prefix, []byte("after the bomb"))
	})
	ms := clientMsgs()
	if len(ms) != 3 {
		t.Fatalf("%d client messages reported; events: %s", len(ms), tp.rec.dump())
	}
	if b := ms[1]; len(b.Msg.Prefix) != 4096 || !bytes.Equal(b.Msg.Prefix, bomb[:4096]) || !b.Msg.Truncated || b.Msg.Size > 64<<10 {
		t.Errorf("bomb: prefix %d bytes, truncated %v, %d bytes on the wire", len(b.Msg.Prefix), b.Msg.Truncated, b.Msg.Size)
	}
	if a := ms[2]; a.Msg.Prefix != nil {
		t.Errorf("client message after the bomb inspected: %q", a.Msg.Prefix)
	}
	if n := tp.p.Stats().InspectionStopped[event.FromClient].Load(); n != 1 {
		t.Errorf("InspectionStopped[client] = %d, want 1", n)
	}
	if n := tp.p.Stats().InspectionStopped[event.FromServer].Load(); n != 0 {
		t.Errorf("InspectionStopped[server] = %d, want 0", n)
	}
	c.Close(coder.StatusNormalClosure, "")
}
