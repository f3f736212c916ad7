package proxy

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// What each chunk read from one peer goes through on its way to the other:
// the frame tap (tap.go), then the probe's own frames added (a Ping towards
// the client) or taken out (its Pong, towards the upstream), then the write.
// The bytes are otherwise relayed unchanged.

// clientWriter serialises writes to the client: the upstream pump's chunks,
// the probe's Pings and goAway's Close. mu guards atFrame and pingPending.
type clientWriter struct {
	mu          sync.Mutex
	atFrame     bool         // what was written to the client ends at a frame boundary
	pingPending bool         // a probe Ping waits for the next frame boundary
	written     atomic.Int64 // bytes written to the client; atomic: the probe reads it without mu
}

// upstreamWriter serialises writes to the upstream: the client pump's
// chunks and goAway's Close. mu guards atFrame.
type upstreamWriter struct {
	mu      sync.Mutex
	atFrame bool // what was written to the upstream ends at a frame boundary (no client bytes are held back)
}

// relayFromUpstream writes an upstream chunk to the client, slipping a
// pending probe Ping in at a frame boundary.
func (c *wsConn) relayFromUpstream(buf []byte, n int) error {
	chunk := buf[headroom : headroom+n]
	c.p.stats.Bytes[event.FromServer].Add(int64(len(chunk)))
	s := &c.fromUpstream
	s.firstBoundary = -1
	if c.tapped {
		s.parser.Feed(chunk)
		c.p.stats.countFrames(event.FromServer, &s.frames)
	}
	w := &c.toClient
	w.mu.Lock()
	defer w.mu.Unlock()
	atEnd := !c.tapped || s.parser.AtBoundary()
	if w.pingPending && s.firstBoundary >= 0 && !atEnd {
		if _, err := c.client.Write(chunk[:s.firstBoundary]); err != nil {
			return err
		}
		w.written.Add(int64(s.firstBoundary))
		if err := c.writeProbePingLocked(); err != nil {
			return err
		}
		chunk = chunk[s.firstBoundary:]
	}
	if _, err := c.client.Write(chunk); err != nil {
		return err
	}
	w.written.Add(int64(len(chunk)))
	w.atFrame = c.tapped && atEnd && !s.parser.Failed()
	if w.pingPending && w.atFrame {
		return c.writeProbePingLocked()
	}
	return nil
}

// errUpstreamWrite: a write to the upstream failed inside the tap (the
// bytes before a dropped probe Pong); the direction ends as on any write
// error.
var errUpstreamWrite = errors.New("proxy: write to the upstream failed")

// relayFromClient writes a client chunk to the upstream, leaving out the
// Pong that answers our probe. A frame that might be that Pong, or a frame
// header cut by the read, is held back (at most maxHeld bytes) until the
// rest arrives.
func (c *wsConn) relayFromClient(buf []byte, n int) error {
	chunk := buf[headroom : headroom+n]
	c.p.stats.Bytes[event.FromClient].Add(int64(len(chunk)))
	if !c.tapped {
		return c.writeUpstream(chunk, true)
	}
	s := &c.fromClient
	data := chunk
	if s.held > 0 {
		// chunk sits behind headroom bytes of its buffer: the held bytes go
		// there, so that data is contiguous without copying the chunk.
		data = buf[headroom-s.held : headroom+len(chunk)]
		copy(data, s.heldBuf[:s.held])
	}
	s.data, s.base, s.written = data, s.held, 0
	if s.held > 0 || s.parser.AtBoundary() {
		s.boundary = 0
	} else {
		s.boundary = -1
	}
	if s.candidate >= 0 {
		s.candidate = 0 // a held candidate starts the data
	}
	s.held = 0
	s.parser.Feed(chunk)
	c.p.stats.countFrames(event.FromClient, &s.frames)
	if s.failed {
		return errUpstreamWrite
	}
	hold := len(data)
	if c.p.o.ProbeInterval > 0 && !s.parser.Failed() && !s.parser.AtBoundary() {
		switch {
		case s.candidate >= 0:
			hold = s.candidate
		case !s.headerSeen && s.boundary >= 0:
			hold = s.boundary
		}
		if len(data)-hold > maxHeld {
			hold = len(data)
		}
	}
	if err := c.writeUpstream(data[s.written:hold], s.parser.AtBoundary()); err != nil {
		return err
	}
	s.held = copy(s.heldBuf[:], data[hold:])
	if s.candidate >= 0 && s.held == 0 {
		s.candidate = -1
	}
	return nil
}

// writeUpstream writes b to the upstream; atFrame says whether b ends at a
// frame boundary of the client's stream.
func (c *wsConn) writeUpstream(b []byte, atFrame bool) error {
	w := &c.toUpstream
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(b) > 0 {
		if _, err := c.upstream.Write(b); err != nil {
			return err
		}
	}
	w.atFrame = atFrame
	return nil
}
