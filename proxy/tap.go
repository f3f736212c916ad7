package proxy

import (
	"time"

	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/proxy/wsframe"
)

// The frame taps: a wsframe.Handler per direction, fed by relay.go with
// each chunk. They report messages to the observer as event.FromClient
// (from the client) and event.FromServer (from the upstream), look for the
// ids in the first client messages, and mark the frame boundaries and the
// probe Pong candidates that relay.go acts on.

const (
	// maxHeld: a probe Pong (2+4+8 bytes) or an unfinished frame header (<14).
	maxHeld = 14
	// idFrames: how many client text messages may carry the ids.
	idFrames = 8
)

// clientTap taps the frames from the client. It belongs to the client pump.
type clientTap struct {
	c      *wsConn
	parser wsframe.Parser

	// per chunk, indices into data (held bytes + chunk)
	data       []byte
	base       int // index of chunk offset 0 in data
	written    int // data[:written] went upstream or was dropped
	boundary   int // last frame boundary in data, -1 if none
	headerSeen bool
	failed     bool // a write to the upstream failed while the chunk was parsed
	candidate  int  // start of a frame that may be our probe's Pong, -1 if none

	held    int // bytes of heldBuf held back from the previous chunk
	heldBuf [maxHeld]byte
	frames  int64 // frames ended in the current chunk
}

// flushHeld writes the held-back bytes upstream: the client's stream ended
// and nothing will complete them.
func (s *clientTap) flushHeld() {
	if s.held > 0 {
		_ = s.c.writeUpstream(s.heldBuf[:s.held], false)
		s.held = 0
	}
}

func (s *clientTap) FrameHeader(h wsframe.Header, start int) {
	s.headerSeen = true
	if h.Opcode == wsframe.OpPong && h.Length == probeLen && s.c.probeOutstanding() {
		s.candidate = start + s.base
	} else {
		s.candidate = -1
	}
}

func (s *clientTap) FrameEnd(h wsframe.Header, end int, payload []byte) {
	c := s.c
	e := end + s.base
	s.frames++
	if s.candidate >= 0 {
		if h.Opcode == wsframe.OpPong && c.consumeProbePong(payload) && !s.failed {
			// Drop our own Pong: send what came before it, skip it.
			s.failed = c.writeUpstream(s.data[s.written:s.candidate], true) != nil
			s.written = e
		}
		s.candidate = -1
	}
	if h.Opcode == wsframe.OpClose {
		c.ending.closeSeen.Store(true)
	}
	s.boundary, s.headerSeen = e, false
}

func (s *clientTap) Message(m wsframe.Message) {
	c := s.c
	c.inflateStopped(event.FromClient, m, &s.parser)
	c.observe(event.FromClient, m) // framing.go
}

func (s *clientTap) ProtocolError(err error) {
	s.c.probe.disabled.Store(true)
	s.c.log().Debug("client stream is not valid WebSocket; relaying it untouched", zap.Error(err))
}

// upstreamTap taps the frames from the upstream (event.FromServer). It
// belongs to the upstream pump.
type upstreamTap struct {
	c             *wsConn
	parser        wsframe.Parser
	firstBoundary int   // first frame boundary in the current chunk, -1 if none
	frames        int64 // frames ended in the current chunk
}

func (s *upstreamTap) FrameHeader(wsframe.Header, int) {}

func (s *upstreamTap) FrameEnd(h wsframe.Header, end int, _ []byte) {
	s.frames++
	if s.firstBoundary < 0 {
		s.firstBoundary = end
	}
	if h.Opcode == wsframe.OpClose {
		s.c.ending.closeSeen.Store(true)
	}
}

func (s *upstreamTap) Message(m wsframe.Message) {
	s.c.inflateStopped(event.FromServer, m, &s.parser)
	s.c.observe(event.FromServer, m) // framing.go
}

func (s *upstreamTap) ProtocolError(err error) {
	s.c.probe.disabled.Store(true)
	// Not c.log(): the session id is the client goroutine's to write (identify).
	s.c.p.log.Debug("upstream stream is not valid WebSocket; relaying it untouched",
		zap.Uint64("conn", uint64(s.c.id)), zap.Error(err))
}

// identify looks for the ids in one of the first client text messages.
func (c *wsConn) identify(doc []byte) {
	c.idTries++
	var found event.Identity
	if c.who.SessionID == "" {
		found.SessionID = c.p.o.SessionFrom.fromJSON(fromFrame, doc)
	}
	if c.who.BotID == "" {
		found.BotID = c.p.o.BotFrom.fromJSON(fromFrame, doc)
	}
	if found.SessionID == "" && found.BotID == "" {
		return
	}
	if found.SessionID != "" {
		c.who.SessionID = found.SessionID
	}
	if found.BotID != "" {
		c.who.BotID = found.BotID
	}
	c.p.obs.ConnIdentified(c.id, found)
}

// toEvent is what the observer learns of a message.
func toEvent(m wsframe.Message) event.Message {
	e := event.Message{Text: m.Opcode == wsframe.OpText, Size: m.Size, Prefix: m.Prefix, Truncated: m.Truncated}
	if m.InflateErr != nil && m.InflateErr != wsframe.ErrInflateLimit {
		e.Prefix = nil // not inflated: nothing to look at
	}
	return e
}

// inflateStopped counts, and logs (at most one line every 5 s for all
// connections: a client can send a bomb on every connection it opens), the
// message after which a direction's compressed messages are no longer
// inspected: it inflated past the bound (wsframe.ErrInflateLimit) or could
// not be inflated, and with context takeover (RFC 7692 section 7.1.1) the
// window the later ones refer to is lost. Ids and rules no longer see that
// direction's compressed messages; the bytes pass unchanged as ever.
func (c *wsConn) inflateStopped(dir event.Direction, m wsframe.Message, parser *wsframe.Parser) {
	if m.InflateErr == nil || m.InflateErr == wsframe.ErrInflateDisabled || !parser.InflateStopped() {
		return
	}
	p := c.p
	n := p.stats.InspectionStopped[dir].Add(1)
	now := time.Now().UnixNano()
	if last := p.inspectLogAt.Load(); now-last >= int64(5*time.Second) && p.inspectLogAt.CompareAndSwap(last, now) {
		// Not c.log() from the upstream goroutine: the session id is the
		// client goroutine's to write (identify).
		p.log.Warn("compressed messages no longer inspected on this connection",
			zap.Uint64("conn", uint64(c.id)), zap.Stringer("direction", dir), zap.Int64("message_bytes", m.Size),
			zap.Int64("so_far", p.stats.InspectionStopped[event.FromClient].Load()+p.stats.InspectionStopped[event.FromServer].Load()),
			zap.Int64("direction_so_far", n), zap.Error(m.InflateErr))
	}
}

// countFrames adds the frames a chunk ended: once per chunk, not per frame,
// since the counters are shared by every connection.
func (s *Stats) countFrames(dir event.Direction, n *int64) {
	if *n > 0 {
		s.Frames[dir].Add(*n)
		*n = 0
	}
}
