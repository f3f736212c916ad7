package proxy

import (
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/proxy/wsframe"
)

const (
	// relayBufSize is what one read may take. Buffers are borrowed only
	// once a socket is readable, so idle connections hold none.
	relayBufSize = 32 << 10
	// headroom in front of each buffer lets up to maxHeld bytes held back
	// from the previous chunk be prepended without a copy of the chunk.
	headroom = 16
	// maxHeld: a probe Pong (2+4+8 bytes) or an unfinished frame header (<14).
	maxHeld = 14
	// idFrames: how many client text messages may carry the ids.
	idFrames = 8
	// linger bounds a half-closed connection after one side ended.
	linger   = 10 * time.Second
	probeLen = 8
)

var relayBufs = sync.Pool{New: func() any { b := make([]byte, headroom+relayBufSize); return &b }}

// wsConn is one relayed WebSocket: a client socket, an upstream socket, a
// frame tap per direction and the liveness probe.
type wsConn struct {
	p        *Proxy
	id       event.ConnID
	client   net.Conn
	upstream net.Conn
	tapped   bool // the upgrade is a WebSocket: frames are parsed

	who     event.Identity
	idTries int

	fromClient   clientSide
	fromUpstream upstreamSide

	// clientMu serialises writes to the client: the relay's and the probe's Pings.
	clientMu        sync.Mutex
	clientAtFrame   bool // what was written to the client ends at a frame boundary
	pingPending     bool // a probe Ping waits for the next boundary
	upstreamMu      sync.Mutex
	upstreamAtFrame bool

	probeMu     sync.Mutex
	probeTimer  *time.Timer
	probeDue    time.Time // when the timer's current phase ends; an earlier fire is stale
	outstanding bool      // a probe is due: its Ping waits or was sent
	pingSent    bool      // the outstanding probe's Ping went out
	progress    int64     // toClient when the Ping became due
	probe       [probeLen]byte
	toClient    atomic.Int64 // bytes written to the client

	closeSeen atomic.Bool // a Close frame passed: no more Pings
	noProbe   atomic.Bool // a tap stopped on a protocol error: the probe cannot work
	shutdown  atomic.Bool // goAway closed it (it was not closing already)
	goingAway atomic.Bool
	pumps     atomic.Int32 // directions still relaying

	clientToUpstream, upstreamToClient pumpDir
	killed                             atomic.Pointer[event.CloseReason]
	firstEnd                           atomic.Pointer[event.CloseReason]
}

func (p *Proxy) newWSConn(client, upstream net.Conn, who event.Identity, extensions []string, tapped bool) *wsConn {
	c := &wsConn{p: p, id: event.ConnID(p.nextID.Add(1)), client: client, upstream: upstream, who: who, tapped: tapped,
		clientAtFrame: true, upstreamAtFrame: true}
	c.fromClient.c, c.fromUpstream.c = c, c
	c.fromClient.candidate = -1
	if tapped {
		c2s, s2c := wsframe.ParseDeflateExtension(extensions)
		clientPrefix, serverPrefix := 0, 0
		if p.o.InspectClient || p.o.SessionFrom.has(fromFrame) || p.o.BotFrom.has(fromFrame) {
			clientPrefix = p.o.InspectBytes
		}
		if p.o.InspectServer {
			serverPrefix = p.o.InspectBytes
		}
		c.fromClient.parser.Init(wsframe.Options{ExpectMasked: true, PrefixLimit: clientPrefix, Deflate: c2s}, &c.fromClient)
		c.fromUpstream.parser.Init(wsframe.Options{PrefixLimit: serverPrefix, Deflate: s2c}, &c.fromUpstream)
	}
	return c
}

func (c *wsConn) log() *zap.Logger {
	return c.p.log.With(zap.Uint64("conn", uint64(c.id)), zap.String("session", c.who.SessionID))
}

// track registers c as open before its relay starts, so Shutdown cannot
// miss it; a connection whose handshake finished during a shutdown is sent
// away at once.
func (p *Proxy) track(c *wsConn) {
	p.stats.OpenWebSockets.Add(1)
	p.connsMu.Lock()
	p.conns[c] = struct{}{}
	p.connsMu.Unlock()
	if p.closing.Load() {
		go c.goAway()
	}
}

// run relays until both directions ended, then reports the close. trace is
// the upgrade's traceparent for the observer (an argument, not a field: an
// idle connection should not keep it).
func (c *wsConn) run(fromClient, fromUpstream []byte, trace string) {
	p := c.p
	p.obs.ConnOpened(c.id, event.Open{Who: c.who, Trace: trace})
	if c.tapped && p.o.ProbeInterval > 0 {
		c.probeMu.Lock() // probeFire reads the timer under probeMu
		c.probeDue = time.Now().Add(p.o.ProbeInterval)
		c.probeTimer = time.AfterFunc(p.o.ProbeInterval, c.probeFire)
		c.probeMu.Unlock()
	}

	// Each direction runs on its own goroutine; whichever ends last closes
	// up. No goroutine waits for the other (one parked stack less per
	// connection).
	c.pumps.Store(2)
	c.clientToUpstream = pumpDir{src: c.client, dst: c.upstream, relay: c.relayFromClient, srcGone: event.CloseClientGone, dstGone: event.CloseUpstreamGone}
	c.upstreamToClient = pumpDir{src: c.upstream, dst: c.client, relay: c.relayFromUpstream, srcGone: event.CloseUpstreamGone, dstGone: event.CloseClientGone}
	go c.pump(&c.upstreamToClient, fromUpstream)
	c.pump(&c.clientToUpstream, fromClient)
}

// finish runs once, after both directions ended: it closes both sockets,
// gives back the tap's buffers and reports the close.
func (c *wsConn) finish() {
	p := c.p
	if c.probeTimer != nil {
		c.probeTimer.Stop()
	}
	c.client.Close()
	c.upstream.Close()
	c.fromClient.parser.Release()
	c.fromUpstream.parser.Release()
	p.connsMu.Lock()
	delete(p.conns, c)
	p.connsMu.Unlock()
	p.stats.OpenWebSockets.Add(-1)
	p.active.Add(-1)
	if c.who.SessionID == "" {
		p.stats.Untracked.Add(1)
	}

	reason := event.CloseClientGone
	switch {
	case c.killed.Load() != nil:
		reason = *c.killed.Load()
	case c.shutdown.Load():
		reason = event.CloseShutdown
	case c.closeSeen.Load():
		reason = event.CloseClean
	case c.firstEnd.Load() != nil:
		reason = *c.firstEnd.Load()
	}
	if reason == event.CloseProbeTimeout {
		p.stats.ProbeTimeouts.Add(1)
		c.log().Info("client stopped answering the liveness probe; closed both sides")
	}
	p.obs.ConnClosed(c.id, reason)
}

// pumpDir is one direction of a connection: what pump needs to relay it.
type pumpDir struct {
	src, dst         net.Conn
	relay            func(buf []byte, n int) error
	srcGone, dstGone event.CloseReason
	reader           *socketReader
	fresh            bool // running on a goroutine started after the first messages
}

// pump relays one direction until it ends (see pumpLoop); the last
// direction to end finishes the connection.
func (c *wsConn) pump(d *pumpDir, pending []byte) {
	if len(pending) > 0 {
		buf := make([]byte, headroom+len(pending))
		copy(buf[headroom:], pending)
		if err := d.relay(buf, len(pending)); err != nil {
			c.kill(d.dstGone)
			c.pumpDone()
			return
		}
	}
	d.reader = newSocketReader(d.src)
	c.pumpLoop(d)
}

func (c *wsConn) pumpDone() {
	if c.pumps.Add(-1) == 0 {
		c.finish()
	}
}

// pumpLoop reads src until it ends, handing each chunk to relay. On a clean
// end of src it half-closes dst so the other direction can finish its close
// handshake, bounded by linger.
//
// The first messages of a connection take the deepest path (ids, rules,
// the presence engine), which grows the goroutine's stack, and a parked
// goroutine keeps its stack. So once the first data has passed, the loop
// moves to a new goroutine, which starts small, and the old one ends.
func (c *wsConn) pumpLoop(d *pumpDir) {
	for {
		bp, n, err := d.reader.read()
		var werr error
		if n > 0 {
			werr = d.relay(*bp, n)
		}
		if bp != nil {
			relayBufs.Put(bp)
		}
		if werr != nil {
			c.kill(d.dstGone)
			c.pumpDone()
			return
		}
		if err != nil {
			c.end(d.src, d.dst, d.srcGone, err)
			c.pumpDone()
			return
		}
		if !d.fresh && n > 0 {
			d.fresh = true
			go c.pumpLoop(d)
			return
		}
	}
}

// end handles one direction finishing.
func (c *wsConn) end(src, dst net.Conn, gone event.CloseReason, err error) {
	if !c.firstEnd.CompareAndSwap(nil, &gone) {
		// The other side ended first; this one failing afterwards (the
		// linger deadline, a reset) does not change who left.
		gone = *c.firstEnd.Load()
	}
	if src == c.client {
		c.fromClient.flushHeld()
	}
	if !errors.Is(err, io.EOF) {
		c.kill(gone)
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
	// The other direction gets a little time to finish its close handshake.
	dst.SetReadDeadline(time.Now().Add(linger))
}

// kill closes both sockets at once: a dead peer, a failed write, the probe,
// or the end of the shutdown grace.
func (c *wsConn) kill(reason event.CloseReason) {
	if c.killed.CompareAndSwap(nil, &reason) {
		c.client.Close()
		c.upstream.Close()
	}
}

// socketReader reads a socket into pooled buffers, borrowing one only when
// the socket has data: an idle connection holds no read buffer (DESIGN,
// memory per connection). It reads the descriptor itself through RawConn,
// so a chunk costs one read(2): the buffer goes back to the pool on EAGAIN,
// and Go's poller waits for readability. Sockets without a descriptor (TLS)
// fall back to a plain Read, which holds its buffer while it waits.
type socketReader struct {
	conn net.Conn
	rc   syscall.RawConn // nil: plain Read
	bp   *[]byte
	n    int
	err  error
	fill func(fd uintptr) bool // the RawConn callback, made once
}

func newSocketReader(conn net.Conn) *socketReader {
	r := &socketReader{conn: conn}
	if sc, ok := conn.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			r.rc = rc
			r.fill = r.readFD
		}
	}
	return r
}

// read returns a borrowed buffer whose bytes [headroom, headroom+n) were
// read, or an error (io.EOF at the end). The caller puts the buffer back.
func (r *socketReader) read() (*[]byte, int, error) {
	if r.rc == nil {
		bp := relayBufs.Get().(*[]byte)
		n, err := r.conn.Read((*bp)[headroom:])
		return bp, n, err
	}
	r.n, r.err = 0, nil
	if err := r.rc.Read(r.fill); err != nil {
		return r.take(), 0, err // a deadline or a closed socket
	}
	return r.take(), r.n, r.err
}

func (r *socketReader) take() *[]byte {
	bp := r.bp
	r.bp = nil
	return bp
}

// readFD is the RawConn callback: true when the read is done, false to wait
// for readability.
func (r *socketReader) readFD(fd uintptr) bool {
	if r.bp == nil {
		r.bp = relayBufs.Get().(*[]byte)
	}
	for {
		n, err := syscall.Read(int(fd), (*r.bp)[headroom:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			relayBufs.Put(r.bp) // nothing to read: do not hold a buffer while waiting
			r.bp = nil
			return false
		case err != nil:
			r.err = os.NewSyscallError("read", err)
		case n == 0:
			r.err = io.EOF
		default:
			r.n = n
		}
		return true
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
	c.clientMu.Lock()
	defer c.clientMu.Unlock()
	atEnd := !c.tapped || s.parser.AtBoundary()
	if c.pingPending && s.firstBoundary >= 0 && !atEnd {
		if _, err := c.client.Write(chunk[:s.firstBoundary]); err != nil {
			return err
		}
		c.toClient.Add(int64(s.firstBoundary))
		if err := c.writePingLocked(); err != nil {
			return err
		}
		chunk = chunk[s.firstBoundary:]
	}
	if _, err := c.client.Write(chunk); err != nil {
		return err
	}
	c.toClient.Add(int64(len(chunk)))
	c.clientAtFrame = c.tapped && atEnd && !s.parser.Failed()
	if c.pingPending && c.clientAtFrame {
		return c.writePingLocked()
	}
	return nil
}

// writePingLocked sends the probe's Ping; clientMu is held.
func (c *wsConn) writePingLocked() error {
	c.pingPending = false
	if c.closeSeen.Load() {
		return nil
	}
	c.probeMu.Lock()
	var frame [2 + probeLen]byte
	frame[0], frame[1] = 0x80|byte(wsframe.OpPing), probeLen
	copy(frame[2:], c.probe[:])
	c.pingSent = true
	c.armLocked(c.p.o.ProbeTimeout) // the Pong has PROBE_TIMEOUT from now
	c.probeMu.Unlock()
	c.p.stats.Frames[event.FromServer].Add(1)
	_, err := c.client.Write(frame[:])
	return err
}

// probeFire runs on the probe timer: it sends a Ping, or declares the
// connection dead when the previous one went unanswered.
func (c *wsConn) probeFire() {
	c.probeMu.Lock()
	if c.closeSeen.Load() || c.killed.Load() != nil {
		c.probeMu.Unlock()
		return // closing anyway; a Ping now would break the close handshake
	}
	if c.noProbe.Load() {
		// A Ping cannot be placed at a frame boundary, or its Pong cannot
		// be told apart: the probe stops and TCP keep-alive remains.
		c.probeMu.Unlock()
		return
	}
	if time.Now().Before(c.probeDue) {
		c.probeMu.Unlock()
		return // the timer was re-armed while this fire waited for the lock
	}
	if c.outstanding {
		if n := c.toClient.Load(); !c.pingSent && n != c.progress {
			// The Ping still waits for the end of a long upstream frame, and
			// the client keeps taking that frame: it is alive.
			c.progress = n
			c.armLocked(c.p.o.ProbeTimeout)
			c.probeMu.Unlock()
			return
		}
		c.probeMu.Unlock()
		c.kill(event.CloseProbeTimeout)
		return
	}
	c.outstanding, c.pingSent, c.progress = true, false, c.toClient.Load()
	binary.LittleEndian.PutUint64(c.probe[:], rand.Uint64())
	c.armLocked(c.p.o.ProbeTimeout)
	c.probeMu.Unlock()

	c.clientMu.Lock()
	defer c.clientMu.Unlock()
	if c.clientAtFrame {
		if err := c.writePingLocked(); err != nil {
			c.kill(event.CloseClientGone)
		}
	} else {
		c.pingPending = true
	}
}

// armLocked sets the probe timer to fire after d; probeMu is held.
func (c *wsConn) armLocked(d time.Duration) {
	c.probeDue = time.Now().Add(d)
	c.probeTimer.Reset(d)
}

// isProbePong reports whether payload answers our outstanding Ping, and if
// so re-arms the probe.
func (c *wsConn) isProbePong(payload []byte) bool {
	c.probeMu.Lock()
	defer c.probeMu.Unlock()
	if !c.outstanding || string(payload) != string(c.probe[:]) {
		return false
	}
	c.outstanding = false
	c.armLocked(c.p.o.ProbeInterval)
	return true
}

func (c *wsConn) probing() bool {
	if c.probeTimer == nil {
		return false
	}
	c.probeMu.Lock()
	defer c.probeMu.Unlock()
	return c.outstanding
}

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
	if s.err != nil {
		return s.err
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

func (c *wsConn) writeUpstream(b []byte, atFrame bool) error {
	c.upstreamMu.Lock()
	defer c.upstreamMu.Unlock()
	if len(b) > 0 {
		if _, err := c.upstream.Write(b); err != nil {
			return err
		}
	}
	c.upstreamAtFrame = atFrame
	return nil
}

// clientSide taps client->upstream frames.
type clientSide struct {
	c      *wsConn
	parser wsframe.Parser

	// per chunk, indices into data (held bytes + chunk)
	data       []byte
	base       int // index of chunk offset 0 in data
	written    int // data[:written] went upstream or was dropped
	boundary   int // last frame boundary in data, -1 if none
	headerSeen bool
	candidate  int // start of a frame that may be our probe's Pong, -1 if none
	err        error

	held    int
	heldBuf [maxHeld]byte
	frames  int64 // frames ended in the current chunk
}

func (s *clientSide) flushHeld() {
	if s.held > 0 {
		_ = s.c.writeUpstream(s.heldBuf[:s.held], false)
		s.held = 0
	}
}

func (s *clientSide) FrameHeader(h wsframe.Header, start int) {
	s.headerSeen = true
	if h.Opcode == wsframe.OpPong && h.Length == probeLen && s.c.probing() {
		s.candidate = start + s.base
	} else {
		s.candidate = -1
	}
}

func (s *clientSide) FrameEnd(h wsframe.Header, end int, payload []byte) {
	c := s.c
	e := end + s.base
	s.frames++
	if s.candidate >= 0 {
		if h.Opcode == wsframe.OpPong && c.isProbePong(payload) && s.err == nil {
			// Drop our own Pong: send what came before it, skip it.
			s.err = c.writeUpstream(s.data[s.written:s.candidate], true)
			s.written = e
		}
		s.candidate = -1
	}
	if h.Opcode == wsframe.OpClose {
		c.closeSeen.Store(true)
	}
	s.boundary, s.headerSeen = e, false
}

func (s *clientSide) Message(m wsframe.Message) {
	c := s.c
	msg := toEvent(m)
	if c.idTries < idFrames && m.Opcode == wsframe.OpText && msg.Prefix != nil {
		c.identify(msg.Prefix)
	}
	c.p.obs.Message(c.id, event.FromClient, msg)
}

func (s *clientSide) ProtocolError(err error) {
	s.c.noProbe.Store(true)
	s.c.log().Debug("client stream is not valid WebSocket; relaying it untouched", zap.Error(err))
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

func toEvent(m wsframe.Message) event.Message {
	e := event.Message{Text: m.Opcode == wsframe.OpText, Size: m.Size, Prefix: m.Prefix, Truncated: m.Truncated}
	if m.InflateErr != nil {
		e.Prefix = nil
	}
	return e
}

// upstreamSide taps upstream->client frames.
type upstreamSide struct {
	c             *wsConn
	parser        wsframe.Parser
	firstBoundary int   // first frame boundary in the current chunk, -1 if none
	frames        int64 // frames ended in the current chunk
}

func (s *upstreamSide) FrameHeader(wsframe.Header, int) {}

func (s *upstreamSide) FrameEnd(h wsframe.Header, end int, _ []byte) {
	s.frames++
	if s.firstBoundary < 0 {
		s.firstBoundary = end
	}
	if h.Opcode == wsframe.OpClose {
		s.c.closeSeen.Store(true)
	}
}

func (s *upstreamSide) Message(m wsframe.Message) {
	s.c.p.obs.Message(s.c.id, event.FromServer, toEvent(m))
}

func (s *upstreamSide) ProtocolError(err error) {
	s.c.noProbe.Store(true)
	s.c.log().Debug("upstream stream is not valid WebSocket; relaying it untouched", zap.Error(err))
}

// goAway starts closing the connection with 1001 (going away) towards both
// peers, each at a frame boundary so no frame is cut, and closes the sockets
// after a short wait for the peers' answers.
func (c *wsConn) goAway() {
	if !c.goingAway.CompareAndSwap(false, true) {
		return
	}
	// The deadline comes first: a write below can block on a peer that
	// stopped reading (and so can taking a lock that a blocked relay write
	// holds); only closing the sockets ends that.
	time.AfterFunc(time.Second, func() { c.kill(event.CloseShutdown) })
	if !c.closeSeen.Load() {
		c.shutdown.Store(true)
	}
	if c.tapped {
		c.clientMu.Lock()
		if c.clientAtFrame && !c.closeSeen.Load() {
			c.client.Write([]byte{0x80 | byte(wsframe.OpClose), 2, 0x03, 0xe9})
		}
		c.clientMu.Unlock()
		c.upstreamMu.Lock()
		// upstreamAtFrame implies that no client bytes are held back.
		if c.upstreamAtFrame && !c.closeSeen.Load() {
			// Frames to the upstream are masked, as a client's must be.
			var key [4]byte
			binary.LittleEndian.PutUint32(key[:], rand.Uint32())
			c.upstream.Write([]byte{0x80 | byte(wsframe.OpClose), 0x80 | 2, key[0], key[1], key[2], key[3], 0x03 ^ key[0], 0xe9 ^ key[1]})
		}
		c.upstreamMu.Unlock()
		c.closeSeen.Store(true)
	}
}
