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

// probeState is the probe's state. on is set by startProbe before the
// pumps start and disabled is atomic; slot belongs to the clock
// (probeclock.go); mu guards the other fields, and the re-arming.
type probeState struct {
	slot     int32       // this connection's index in its clock's heap (slotNone, slotRetired)
	disabled atomic.Bool // a tap stopped on a protocol error: Pings cannot be placed nor Pongs recognised

	mu               sync.Mutex
	on               bool  // the connection is probed (set before the pumps start)
	outstanding      bool  // a probe is due: its Ping waits or was sent
	pingSent         bool  // the outstanding probe's Ping went out
	due              int64 // monoNow when the current phase ends; an earlier fire is stale
	clientBytesAtDue int64 // toClient.written when the Ping became due or last progressed
	payload          [probeLen]byte
}

// startProbe arms the probe's first interval.
func (c *wsConn) startProbe() {
	c.probe.mu.Lock()
	c.probe.on, c.probe.slot = true, slotNone
	c.armProbeLocked(c.p.o.ProbeInterval)
	c.probe.mu.Unlock()
}

// stopProbe takes the probe's deadline off its clock for good.
func (c *wsConn) stopProbe() {
	if c.probe.on {
		probeClockOf(c).retire(c)
	}
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
	c.armProbeLocked(c.p.o.ProbeTimeout) // the Pong has ProbeTimeout from now
	c.probe.mu.Unlock()
	c.p.stats.Frames[event.FromServer].Add(1)
	_, err := c.client.Write(frame[:])
	return err
}

// probeTimerFired runs when the probe's deadline passed (its clock's
// timer): it sends a Ping, or declares the connection dead when the
// previous one went unanswered.
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
		return // re-armed while this fire waited for the lock
	}
	if s.outstanding {
		if n := c.toClient.written.Load(); !s.pingSent && n != s.clientBytesAtDue {
			// The Ping still waits for the end of a long upstream frame, and
			// the client keeps taking that frame: it is alive.
			s.clientBytesAtDue = n
			c.armProbeLocked(c.p.o.ProbeTimeout)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		c.kill(event.CloseProbeTimeout)
		return
	}
	s.outstanding, s.pingSent, s.clientBytesAtDue = true, false, c.toClient.written.Load()
	binary.LittleEndian.PutUint64(s.payload[:], rand.Uint64())
	c.armProbeLocked(c.p.o.ProbeTimeout)
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

// armProbeLocked sets the probe's deadline d from now; probe.mu is held.
func (c *wsConn) armProbeLocked(d time.Duration) {
	c.probe.due = monoNow() + int64(d)
	probeClockOf(c).schedule(c, c.probe.due)
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
	c.armProbeLocked(c.p.o.ProbeInterval)
	return true
}

// probeOutstanding reports whether a probe Ping is due or awaits its Pong:
// only then may a client Pong be the probe's.
func (c *wsConn) probeOutstanding() bool {
	if !c.probe.on {
		return false
	}
	c.probe.mu.Lock()
	defer c.probe.mu.Unlock()
	return c.probe.outstanding
}
