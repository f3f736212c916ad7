package proxy

// Tests of probe.go: the liveness probe.

import (
	"io"
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

// Upstream pings use 5-byte payloads; the probe's are 8 bytes long.
func isProbePing(f rawFrame) bool { return f.op == 0x9 && len(f.payload) == probeLen }

// pingIsPending reports whether a probe Ping waits for a frame boundary of
// the upstream's stream.
func (c *wsConn) pingIsPending() bool {
	c.toClient.mu.Lock()
	defer c.toClient.mu.Unlock()
	return c.toClient.pingPending
}

// TestProbeClosesSilentClient: a client whose socket goes silent (it neither
// reads nor answers) is found within ProbeInterval+ProbeTimeout and both
// sides are closed, while idle and while the upstream streams to it (its
// socket buffers full, the relay blocked in the middle of a frame).
func TestProbeClosesSilentClient(t *testing.T) {
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

// TestProbeKeepsAnsweringClientAndHidesPongs: a gorilla client that sends
// nothing but answers Pings (its read loop runs) stays connected over many
// probe intervals, and the upstream never sees the probe's Pongs.
func TestProbeKeepsAnsweringClientAndHidesPongs(t *testing.T) {
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

// TestProbeOffSendsNothing: with ProbeInterval 0 nothing is ever sent to the
// client.
func TestProbeOffSendsNothing(t *testing.T) {
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

// TestProbeStopsOnUnparsableStream: when a direction is not RFC 6455 as the tap
// knows it (here a frame with RSV2 set, from an extension the tap does not
// know), the relay goes on copying bytes and the probe stops: it can no
// longer place Pings or recognise Pongs, and must not close a live
// connection for that.
func TestProbeStopsOnUnparsableStream(t *testing.T) {
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

// TestProbePingWaitsForEndOfLongFrame: the upstream streams one frame for
// much longer than ProbeTimeout while the client takes it all. The probe's
// Ping can only follow the frame, and a client that keeps taking the frame
// is alive: it is not closed before the frame has reached it. (This client
// never answers Pings, so the probe does close it once its Ping went out
// unanswered.)
func TestProbePingWaitsForEndOfLongFrame(t *testing.T) {
	up, conns := rawUpstream(t)
	// The first Ping falls due while the frame passes: the interval leaves
	// the set-up below (two goroutines, a first write) time to start the
	// frame even on a loaded machine, and is still far shorter than it.
	tp := startProxy(t, up, func(o *Options) {
		o.ProbeInterval = 250 * time.Millisecond
		o.ProbeTimeout = 300 * time.Millisecond
	})
	c, cbr := rawDial(t, tp.addr, "/ws?sessionId=alive", nil)
	u := acceptRaw(t, conns)
	go streamReader(u.br, func(rawFrame) {})
	// Client: reads everything, answers nothing.
	got := make(chan int, 1)
	go func() {
		total := 0
		buf := make([]byte, 64<<10)
		for {
			n, err := cbr.Read(buf)
			total += n
			if err != nil {
				got <- total
				return
			}
		}
	}()
	// Upstream: one 1 MiB binary frame, 4 KiB every 5 ms (~1.3 s in all).
	payload := randomBytes(1 << 20)
	f := frame(true, 0x2, false, payload)
	go func() {
		for i := 0; i < len(f); i += 4096 {
			if _, err := u.Write(f[i:min(i+4096, len(f))]); err != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	e := tp.rec.wait(t, "ConnClosed", isKind(evClosed))
	c.Close()
	received := <-got
	if received < len(f) {
		t.Errorf("closed (%s) after the client received %d of the frame's %d bytes: it was alive", e.Reason, received, len(f))
	}
	if e.Reason != event.CloseProbeTimeout {
		t.Errorf("close reason %s: the unanswered Ping after the frame should end it", e.Reason)
	}
}
