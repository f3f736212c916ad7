package proxy

import (
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// TestProbeWaitsForALongFrame: the upstream streams one frame for much longer
// than PROBE_TIMEOUT while the client takes it all. The probe's Ping can only
// follow the frame, and a client that keeps taking the frame is alive: it is
// not closed before the frame has reached it. (This client never answers
// Pings, so the probe does close it once its Ping went out unanswered.)
func TestProbeWaitsForALongFrame(t *testing.T) {
	up, conns := rawUpstream(t)
	tp := startProxy(t, up, func(o *Options) {
		o.ProbeInterval = 50 * time.Millisecond
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
