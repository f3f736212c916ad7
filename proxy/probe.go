package proxy

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/proxy/wsframe"
)

// The liveness probe: every ProbeInterval it sends the client a Ping with a
// random payload, at a frame boundary of the upstream's stream, and closes
// the connection when no Pong with that payload came within ProbeTimeout.
// The client's answer is removed from its stream (relayFromClient): the
// upstream never sees the probe.

// probeLen is the length of the probe's Ping payload.
const probeLen = 8

// probeState is the probe's state. timer is set by startProbe before the
// pumps start (nil: no probe) and disabled is atomic; mu guards the fields
// below it, and the timer's re-arming.
type probeState struct {
	timer    *time.Timer
	disabled atomic.Bool // a tap stopped on a protocol error: Pings cannot be placed nor Pongs recognised

	mu               sync.Mutex
	outstanding      bool  // a probe is due: its Ping waits or was sent
	pingSent         bool  // the outstanding probe's Ping went out
	due              int64 // monoNow when the timer's current phase ends; an earlier fire is stale
	clientBytesAtDue int64 // toClient.written when the Ping became due or last progressed
	payload          [probeLen]byte
}

// startProbe arms the probe's first interval.
func (c *wsConn) startProbe() {
	c.probe.mu.Lock() // probeTimerFired reads the timer under mu
	c.probe.due = monoNow() + int64(c.p.o.ProbeInterval)
	c.probe.timer = time.AfterFunc(c.p.o.ProbeInterval, c.probeTimerFired)
	c.probe.mu.Unlock()
}

// writeProbePingLocked sends the probe's Ping; toClient.mu is held.
func (c *wsConn) writeProbePingLocked() error {
	c.toClient.pingPending = false
	if c.ending.closeSeen.Load() {
		return nil
	}
	var frame [2 + probeLen]byte
	c.probe.mu.Lock()
	wsframe.AppendPing(frame[:0], c.probe.payload[:], nil) // to the client: unmasked
	c.probe.pingSent = true
	c.probe.armLocked(c.p.o.ProbeTimeout) // the Pong has ProbeTimeout from now
	c.probe.mu.Unlock()
	c.p.stats.Frames[event.FromServer].Add(1)
	_, err := c.client.Write(frame[:])
	return err
}

// probeTimerFired runs on the probe timer: it sends a Ping, or declares the
// connection dead when the previous one went unanswered.
func (c *wsConn) probeTimerFired() {
	s := &c.probe
	s.mu.Lock()
	if c.ending.closeSeen.Load() || c.ending.killed.Load() != nil {
		s.mu.Unlock()
		return // closing anyway; a Ping now would break the close handshake
	}
	if s.disabled.Load() {
		// A Ping cannot be placed at a frame boundary, or its Pong cannot
		// be told apart: the probe stops and TCP keep-alive remains.
		s.mu.Unlock()
		return
	}
	if monoNow() < s.due {
		s.mu.Unlock()
		return // the timer was re-armed while this fire waited for the lock
	}
	if s.outstanding {
		if n := c.toClient.written.Load(); !s.pingSent && n != s.clientBytesAtDue {
			// The Ping still waits for the end of a long upstream frame, and
			// the client keeps taking that frame: it is alive.
			s.clientBytesAtDue = n
			s.armLocked(c.p.o.ProbeTimeout)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		c.kill(event.CloseProbeTimeout)
		return
	}
	s.outstanding, s.pingSent, s.clientBytesAtDue = true, false, c.toClient.written.Load()
	binary.LittleEndian.PutUint64(s.payload[:], rand.Uint64())
	s.armLocked(c.p.o.ProbeTimeout)
	s.mu.Unlock()

	c.toClient.mu.Lock()
	defer c.toClient.mu.Unlock()
	if c.toClient.atFrame {
		if err := c.writeProbePingLocked(); err != nil {
			c.kill(event.CloseClientGone)
		}
	} else {
		c.toClient.pingPending = true
	}
}

// monoNow is monotonic nanoseconds since the process started: 8 bytes a
// deadline where a time.Time takes 24.
func monoNow() int64 { return int64(time.Since(processStart)) }

var processStart = time.Now()

// armLocked sets the probe timer to fire after d; mu is held.
func (s *probeState) armLocked(d time.Duration) {
	s.due = monoNow() + int64(d)
	s.timer.Reset(d)
}

// consumeProbePong reports whether payload answers the outstanding probe
// Ping. If it does, the probe is answered and re-armed for the next
// interval: the caller drops the Pong.
func (c *wsConn) consumeProbePong(payload []byte) bool {
	s := &c.probe
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.outstanding || string(payload) != string(s.payload[:]) {
		return false
	}
	s.outstanding = false
	s.armLocked(c.p.o.ProbeInterval)
	return true
}

// probeOutstanding reports whether a probe Ping is due or awaits its Pong:
// only then may a client Pong be the probe's.
func (c *wsConn) probeOutstanding() bool {
	if c.probe.timer == nil {
		return false
	}
	c.probe.mu.Lock()
	defer c.probe.mu.Unlock()
	return c.probe.outstanding
}
