package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

const (
	probeInterval = 50 * time.Millisecond
	probeTimeout  = 150 * time.Millisecond
	probeSlack    = 800 * time.Millisecond // scheduling under -race on a small, busy machine
)

func withProbe(o *Options) { o.ProbeInterval, o.ProbeTimeout = probeInterval, probeTimeout }

// floodUpstream writes 64 KiB binary messages to each connection until a
// write fails, then reports the end.
func floodUpstream(t *testing.T) (string, <-chan error) {
	ends := make(chan error, 4)
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		msg := randomBytes(64 << 10)
		for {
			if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				ends <- err
				return
			}
		}
	}))
	return addr, ends
}

// TestProbeDeadClient: a client whose socket goes silent (it neither reads
// nor answers) is found within ProbeInterval+ProbeTimeout and both sides
// are closed, while idle and while the upstream streams to it (its socket
// buffers full, the relay blocked in the middle of a frame).
func TestProbeDeadClient(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		up, ends := gorillaUpstream(t, websocket.Upgrader{})
		tp := startProxy(t, up, withProbe)
		start := time.Now() // before the probe starts
		c, br := rawDial(t, tp.addr, "/ws?sessionId=dead", nil)
		end := waitEnd(t, ends)
		e := tp.rec.wait(t, "ConnClosed", isKind(evClosed))
		took := e.At.Sub(start)
		t.Logf("dead idle client found after %v", took)
		if e.Reason != event.CloseProbeTimeout {
			t.Errorf("reason %q, want %q", e.Reason, event.CloseProbeTimeout)
		}
		if took < probeInterval+probeTimeout || took > probeInterval+probeTimeout+probeSlack {
			t.Errorf("closed after %v, want about %v", took, probeInterval+probeTimeout)
		}
		if end.closeCode != 0 || end.pongs != 0 {
			t.Errorf("upstream saw close %d, %d pongs", end.closeCode, end.pongs)
		}
		// The client's socket was closed too, after exactly one probe Ping.
		c.SetReadDeadline(time.Now().Add(waitTime))
		got, err := io.ReadAll(br)
		if err != nil {
			t.Errorf("client socket: %v", err)
		}
		frames, rest := parseFrames(got)
		if len(frames) != 1 || !isProbePing(frames[0]) || len(rest) != 0 {
			t.Errorf("client got %d frames (%+v), %d more bytes; want one probe Ping", len(frames), frames, len(rest))
		}
		if n := tp.p.Stats().ProbeTimeouts.Load(); n != 1 {
			t.Errorf("ProbeTimeouts %d", n)
		}
	})
	t.Run("upstream streaming", func(t *testing.T) {
		up, ends := floodUpstream(t)
		tp := startProxy(t, up, withProbe)
		start := time.Now()
		rawDial(t, tp.addr, "/ws?sessionId=dead2", nil)
		select {
		case <-ends:
		case <-time.After(waitTime):
			t.Fatal("the upstream's connection was not closed")
		}
		e := tp.rec.wait(t, "ConnClosed", isKind(evClosed))
		took := e.At.Sub(start)
		t.Logf("dead busy client found after %v", took)
		if e.Reason != event.CloseProbeTimeout {
			t.Errorf("reason %q, want %q", e.Reason, event.CloseProbeTimeout)
		}
		if took < probeInterval+probeTimeout || took > probeInterval+probeTimeout+probeSlack {
			t.Errorf("closed after %v, want about %v", took, probeInterval+probeTimeout)
		}
	})
}

// TestProbeHealthyIdleClient: a gorilla client that sends nothing but
// answers Pings (its read loop runs) stays connected over many probe
// intervals, and the upstream never sees the probe's Pongs.
func TestProbeHealthyIdleClient(t *testing.T) {
	up, ends := gorillaUpstream(t, websocket.Upgrader{})
	tp := startProxy(t, up, func(o *Options) { o.ProbeInterval, o.ProbeTimeout = 30*time.Millisecond, 3*time.Second })
	c, _ := gorillaDial(t, nil, tp.ws("/ws?sessionId=idle"), nil)
	pings := make(chan string, 100)
	c.SetPingHandler(func(s string) error {
		pings <- s
		return c.WriteControl(websocket.PongMessage, []byte(s), time.Now().Add(time.Second))
	})
	msgs := make(chan []byte, 1)
	readErr := make(chan error, 1)
	go func() {
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				readErr <- err
				return
			}
			msgs <- b
		}
	}()
	seen := map[string]bool{}
	for len(seen) < 8 {
		select {
		case p := <-pings:
			if len(p) != probeLen || seen[p] {
				t.Errorf("probe Ping payload %q", p)
			}
			seen[p] = true
		case err := <-readErr:
			t.Fatalf("healthy client disconnected after %d probes: %v", len(seen), err)
		case <-time.After(waitTime):
			t.Fatalf("only %d probes", len(seen))
		}
	}
	for _, e := range tp.rec.snapshot() {
		if e.Kind == evClosed {
			t.Fatalf("connection closed: %s", e.Reason)
		}
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-msgs:
		if string(b) != "still here" {
			t.Errorf("echo %q", b)
		}
	case <-time.After(waitTime):
		t.Fatal("no echo")
	}
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	select {
	case err := <-readErr:
		if !websocket.IsCloseError(err, 1000) {
			t.Errorf("read ended with %v", err)
		}
	case <-time.After(waitTime):
		t.Fatal("no close")
	}
	c.Close()
	if end := waitEnd(t, ends); end.pongs != 0 {
		t.Errorf("upstream got %d of the probe's Pongs", end.pongs)
	}
	if e := tp.rec.wait(t, "ConnClosed", isKind(evClosed)); e.Reason != event.CloseClean {
		t.Errorf("reason %q", e.Reason)
	}
	if n := tp.p.Stats().ProbeTimeouts.Load(); n != 0 {
		t.Errorf("ProbeTimeouts %d", n)
	}
}

// TestProbeOff: with ProbeInterval 0 nothing is ever sent to the client.
func TestProbeOff(t *testing.T) {
	up, ends := gorillaUpstream(t, websocket.Upgrader{})
	tp := startProxy(t, up, nil)
	c, br := rawDial(t, tp.addr, "/ws", nil)
	c.Write(frame(true, 0x1, true, []byte("one")))
	c.SetReadDeadline(time.Now().Add(waitTime))
	var got []byte
	for len(got) < 5 {
		b := make([]byte, 64)
		n, err := br.Read(b)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b[:n]...)
	}
	if frames, rest := parseFrames(got); len(frames) != 1 || string(frames[0].payload) != "one" || len(rest) > 0 {
		t.Errorf("client got %q", got)
	}
	c.Write(frame(true, 0x8, true, closePayload(1000, "")))
	waitEnd(t, ends)
}

// TestShutdown: Shutdown closes open WebSockets with 1001 towards both
// peers once its context ends, and returns.
func TestShutdown(t *testing.T) {
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

// TestShutdownDeadClient: Shutdown returns in bounded time even when a
// client stopped reading while the upstream streams to it (the relay is
// blocked writing to the client).
func TestShutdownDeadClient(t *testing.T) {
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

// TestProbeUnparsableStream: when a direction is not RFC 6455 as the tap
// knows it (here a frame with RSV2 set, from an extension the tap does not
// know), the relay goes on copying bytes and the probe stops: it can no
// longer place Pings or recognise Pongs, and must not close a live
// connection for that.
func TestProbeUnparsableStream(t *testing.T) {
	for _, dir := range []event.Direction{event.FromServer, event.FromClient} {
		t.Run(dir.String(), func(t *testing.T) {
			up, conns := rawUpstream(t)
			tp := startProxy(t, up, withProbe)
			c, _ := rawDial(t, tp.addr, "/ws", nil)
			u := acceptRaw(t, conns)
			odd := frame(true, 0x1, dir == event.FromClient, []byte("rsv2"))
			odd[0] |= 0x20 // RSV2
			if dir == event.FromServer {
				u.Write(odd)
			} else {
				c.Write(odd)
			}
			// Longer than the probe needs to find a dead client.
			time.Sleep(2 * (probeInterval + probeTimeout))
			for _, e := range tp.rec.snapshot() {
				if e.Kind == evClosed {
					t.Fatalf("connection closed (%s) though both peers are there", e.Reason)
				}
			}
			// Both directions still relay, untouched.
			msg := frame(true, 0x1, true, []byte("still relayed"))
			c.Write(msg)
			want := msg
			if dir == event.FromClient {
				want = append(odd, msg...)
			}
			got := make([]byte, len(want))
			u.SetReadDeadline(time.Now().Add(waitTime))
			if _, err := io.ReadFull(u.br, got); err != nil || string(got) != string(want) {
				t.Errorf("upstream got %q, %v; want %q", got, err, want)
			}
			c.Close()
			u.Close()
		})
	}
}
