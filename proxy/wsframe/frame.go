// Package wsframe is an incremental RFC 6455 frame tap: it watches one
// direction of a WebSocket byte stream while a byte relay passes it through.
//
// The relay calls [Parser.Feed] with each chunk it read, split at any byte.
// The parser never copies, holds or changes the stream and never waits for
// I/O: it reads frame headers as they pass, unmasks at most a bounded prefix
// of each data message (inflating it when permessage-deflate is in use) and
// reports what it saw through a [Handler].
//
// The only frames the package writes are the control frames a relay sends
// on its own account: [AppendClose] and [AppendPing].
//
// # Memory
//
// A Parser is a small struct (128 bytes on 64-bit platforms) meant to be
// embedded by value in a connection. Between messages it holds no buffer at
// all, with one exception: the permessage-deflate window (below).
//
//   - Data message prefix: a buffer of Options.PrefixLimit bytes (rounded up to
//     a power of two) borrowed from a sync.Pool when the message's first payload
//     byte arrives and returned when the message ends. A single-frame unmasked
//     message whose payload lies in one chunk is not copied at all.
//   - Control frame payload: a 125-byte buffer borrowed only while a masked
//     control frame is being read or one spans chunks.
//   - Compressed message in flight (permessage-deflate with PrefixLimit > 0):
//     a pooled inflater, a compress/flate reader with its 32 KiB history and
//     a 4 KiB output buffer (about 46 KiB measured, with a 1 KiB prefix).
//     When the whole message arrives in one chunk it is inflated
//     synchronously inside Feed; otherwise a goroutine (about 2 KiB of stack
//     measured) inflates it as chunks arrive and exits when the message ends.
//     Feed hands each chunk to it and returns only once the goroutine has
//     consumed it, so nothing is ever queued. The inflater goes back to its
//     pool when the message ends.
//   - Between compressed messages with context takeover (the RFC 7692
//     default): the last 2^WindowBits bytes of inflated output, because every
//     later message may refer to them. The buffer is allocated when the first
//     compressed message is inflated and grows with the output, so it is at
//     most 32 KiB (WindowBits 15) and less when the connection has produced
//     less output or a smaller window was negotiated. Every compressed message
//     is inflated completely (output past the prefix is discarded) to keep the
//     window right, up to the bound of Options.LimitInflate when it is set.
//     With no_context_takeover for the direction nothing is kept between
//     messages and inflation stops once the prefix is known.
//     Measured over 1,000 idle parsers after one compressed message each:
//     about 0.5 KiB per parser after a 300-byte chat message, 32 KiB after a
//     64 KiB message, 0 with no context takeover.
//   - PrefixLimit 0 turns content inspection off: nothing is unmasked or
//     inflated and no buffer or window is ever taken.
//
// # CPU
//
// Plain frames cost about 100 ns per small message with a 1 KiB prefix and
// no allocation. Each inflated message costs what it costs the endpoint
// (roughly 5 to 20 µs for a small chat message, mostly compress/flate's
// Huffman table set-up, plus copying the 32 KiB window in and out with
// context takeover). A message that inflates to far more than it weighs (a
// deflate bomb) costs at most PrefixLimit bytes of inflation without context
// takeover, and MaxInflate with it when Options.LimitInflate is set (see
// BenchmarkDeflateBomb).
//
// # Strictness
//
// The parser reports what would make an endpoint fail the connection:
// reserved opcodes, reserved bits (RSV1 counts only with permessage-deflate,
// on a message's first frame), fragmented or oversized control frames,
// continuations without a message, a new message inside a fragmented one,
// 64-bit lengths with the top bit set, and unmasked frames where masking is
// required. It is lenient where strictness would buy nothing: non-minimal
// length encodings, masked server frames, close codes and UTF-8 are not
// checked. An extension other than permessage-deflate that uses reserved bits
// makes the parser report ErrReservedBits and stop; the relay keeps relaying.
//
// # Concurrency
//
// A Parser is used by one goroutine: its methods must not be called
// concurrently. Handler methods are called synchronously from Feed, on the
// caller's goroutine; they may call AtBoundary, Pending, Failed,
// InflateStopped and Release (Feed then returns at once), but not Feed or
// Init. Release must be called when the connection ends, also after a panic
// (defer it): it stops an inflating goroutine, which would otherwise wait
// forever, and returns pooled buffers.
package wsframe

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"
)

// Opcode is a frame's opcode.
// See https://tools.ietf.org/html/rfc6455#section-5.2.
type Opcode uint8

// https://tools.ietf.org/html/rfc6455#section-11.8.
const (
	OpContinuation Opcode = 0
	OpText         Opcode = 1
	OpBinary       Opcode = 2
	// 3 - 7 are reserved for further non-control frames.
	OpClose Opcode = 8
	OpPing  Opcode = 9
	OpPong  Opcode = 10
	// 11 - 15 are reserved for further control frames.
)

// IsControl reports whether o is a control opcode (close, ping, pong or reserved).
func (o Opcode) IsControl() bool { return o&0x8 != 0 }

func (o Opcode) String() string {
	switch o {
	case OpContinuation:
		return "continuation"
	case OpText:
		return "text"
	case OpBinary:
		return "binary"
	case OpClose:
		return "close"
	case OpPing:
		return "ping"
	case OpPong:
		return "pong"
	}
	return "opcode(" + strconv.Itoa(int(o)) + ")"
}

// Header is a frame header.
// See https://tools.ietf.org/html/rfc6455#section-5.2.
type Header struct {
	Fin, RSV1, RSV2, RSV3 bool
	Opcode                Opcode
	Masked                bool
	MaskKey               [4]byte
	Length                int64
}

// Message describes a complete data message.
type Message struct {
	Opcode     Opcode // OpText or OpBinary
	Compressed bool   // RSV1 on the first frame (permessage-deflate)
	Size       int64  // payload bytes on the wire, summed over its frames (compressed size when compressed)

	// Prefix holds the first payload bytes, unmasked and, when the message is
	// compressed and Options.Deflate is set, inflated: at most
	// Options.PrefixLimit bytes. It may alias the chunk given to Feed and is
	// valid only during the Message call. Nil when PrefixLimit is 0 or
	// InflateErr is set, except for ErrInflateLimit.
	Prefix []byte
	// Truncated: the payload (after inflation) has bytes that are not in
	// Prefix. When the content was not inspected (PrefixLimit 0, InflateErr)
	// it is Size > 0.
	Truncated bool
	// InflateErr is set when inflation failed; the stream is still relayed
	// and parsed. ErrInflateDisabled marks messages that were not inflated
	// because an earlier failure lost the shared window. ErrInflateLimit
	// marks the message that passed the inflation bound
	// (Options.LimitInflate): its Prefix is set and right, but the window is
	// lost, so the later compressed messages are ErrInflateDisabled.
	InflateErr error
}

// Handler receives what the parser sees. Its methods are called from Feed.
type Handler interface {
	// FrameHeader: a frame's header is complete. start is the offset in the
	// current chunk of the frame's first byte; it is negative when the frame
	// began in an earlier chunk (-3: three header bytes came before this chunk).
	FrameHeader(h Header, start int)
	// FrameEnd: the frame's last byte has been fed. end is the offset in the
	// current chunk just past it. For control frames payload is the unmasked
	// payload (at most 125 bytes), valid only during the call; nil for data
	// frames.
	FrameEnd(h Header, end int, payload []byte)
	// Message: once per data message, after FrameEnd of its final frame.
	Message(m Message)
	// ProtocolError: the stream is not valid RFC 6455. The parser ignores all
	// further input; the relay keeps copying bytes untouched.
	ProtocolError(err error)
}

// Protocol errors, passed to Handler.ProtocolError.
var (
	ErrReservedOpcode         = errors.New("wsframe: reserved opcode")
	ErrReservedBits           = errors.New("wsframe: reserved bit set that no negotiated extension defines")
	ErrFragmentedControl      = errors.New("wsframe: fragmented control frame")
	ErrControlTooLong         = errors.New("wsframe: control frame payload longer than 125 bytes")
	ErrUnexpectedContinuation = errors.New("wsframe: continuation frame without a message to continue")
	ErrExpectedContinuation   = errors.New("wsframe: new data frame inside a fragmented message")
	ErrLengthOverflow         = errors.New("wsframe: 64-bit payload length with the most significant bit set")
	ErrUnmasked               = errors.New("wsframe: unmasked frame where masking is required")
)

// ErrInflateDisabled is the InflateErr of compressed messages that follow an
// inflate error on a context-takeover stream: the window they depend on is lost.
var ErrInflateDisabled = errors.New("wsframe: not inflated: an earlier inflate error lost the deflate window")

// ErrInflateLimit is the InflateErr of a compressed message that inflated
// past the bound of Options.LimitInflate on a context-takeover stream. Its
// Prefix is right; it was not inflated further, so the window is lost and
// the later compressed messages are ErrInflateDisabled.
var ErrInflateLimit = errors.New("wsframe: inflation stopped: the message inflates past the bound, and the deflate window with it")

// MaxInflate bounds, with Options.LimitInflate, how far a compressed message
// is inflated with context takeover (PrefixLimit when that is larger). Chat
// messages stay far below it; a deflate bomb (1 MB on the wire, 1 GB
// inflated) costs the tap 1 MiB of inflation, once per connection.
const MaxInflate = 1 << 20

// Options configure a Parser for one direction of one connection.
type Options struct {
	// ExpectMasked: the client-to-server direction, where every frame must be
	// masked (RFC 6455 section 5.1). When false, masked frames are accepted
	// and unmasked: a tap has no reason to be stricter than the endpoint.
	ExpectMasked bool
	// PrefixLimit is how many bytes of each data message to inspect (at
	// most MaxPrefixLimit). 0 turns inspection off: Message is still called,
	// with a nil Prefix.
	PrefixLimit int
	// Deflate: permessage-deflate parameters for this direction; nil when the
	// extension was not negotiated (RSV1 is then a protocol error).
	Deflate *DeflateParams
	// LimitInflate bounds the work per compressed message, for a sender
	// that is not trusted (the client): without it one small message can
	// make the tap inflate any amount (a deflate bomb). Without context
	// takeover inflation stops at PrefixLimit in any case. With context
	// takeover (RFC 7692 section 7.1.1) each message is inflated whole to
	// keep the window later messages refer to, so it can only be cut short
	// at a cost: a message that inflates past max(MaxInflate, PrefixLimit)
	// is inflated no further (ErrInflateLimit), and the compressed messages
	// after it are not inspected (ErrInflateDisabled).
	LimitInflate bool
}

// maxHeaderLen is 2 bytes + 8 bytes of extended length + 4 bytes of mask key.
const maxHeaderLen = 14

// maxControlPayload is the maximum length of a control frame payload.
// See https://tools.ietf.org/html/rfc6455#section-5.5.
const maxControlPayload = 125

// Parser states.
const (
	stIdle    uint8 = iota // zero value or released: input is ignored
	stHeader               // reading a header; hpos bytes of it read
	stPayload              // reading payload; left bytes of it to come
	stFailed               // protocol error: input is ignored
)

// Parser is an incremental frame parser for one direction of a connection.
// The zero value ignores input; call Init first. A Parser must not be copied
// after Init.
type Parser struct {
	h Handler

	hdr   Header // header of the current frame
	left  int64  // payload bytes of the current frame not yet fed
	limit int    // Options.PrefixLimit

	// Data message in progress (the first frame started, the final one has
	// not ended). Control frames may come between its frames.
	msgSize int64
	prefix  *prefixBuf // pooled; nil unless a prefix is being gathered

	ctl *[maxControlPayload]byte // pooled; only while a control frame needs a copy
	inf *inflater                // pooled; only while a compressed message is inflated
	win []byte                   // deflate window kept between messages (context takeover)

	state        uint8
	hpos         uint8 // header bytes read so far
	hlen         uint8 // header length; known once byte 1 is read
	expectMasked bool
	deflate      bool  // permessage-deflate negotiated
	noCtx        bool  // no context takeover for this direction
	winBits      uint8 // 9..15
	inMsg        bool
	msgOp        Opcode
	msgComp      bool
	inflFailed   bool // an inflate error lost the window (context takeover)
	limitInflate bool // Options.LimitInflate
}

// MaxPrefixLimit caps Options.PrefixLimit.
const MaxPrefixLimit = 1 << 24

// Init prepares p for a new stream. It does not allocate. Resources of an
// earlier stream on p are released first.
func (p *Parser) Init(opts Options, h Handler) {
	p.Release()
	*p = Parser{
		h:            h,
		state:        stHeader,
		limit:        min(max(opts.PrefixLimit, 0), MaxPrefixLimit),
		expectMasked: opts.ExpectMasked,
		limitInflate: opts.LimitInflate,
	}
	if d := opts.Deflate; d != nil {
		p.deflate = true
		p.noCtx = d.NoContextTakeover
		p.winBits = windowBits(d.WindowBits)
	}
}

// AtBoundary reports whether the bytes fed so far end exactly at a frame
// boundary: a frame can be inserted here. False after a protocol error.
func (p *Parser) AtBoundary() bool {
	return p.state == stHeader && p.hpos == 0
}

// Pending returns how many bytes of the current, incomplete frame have been
// fed (0 at a boundary, and after a protocol error). A relay that must hold
// back a partial frame (say, a Pong it may drop) holds back these last bytes.
func (p *Parser) Pending() int64 {
	switch p.state {
	case stHeader:
		return int64(p.hpos)
	case stPayload:
		return int64(p.hlen) + p.hdr.Length - p.left
	}
	return 0
}

// Failed reports whether a protocol error stopped the parser.
func (p *Parser) Failed() bool { return p.state == stFailed }

// InflateStopped reports whether compressed messages are no longer
// inflated: an inflate error or ErrInflateLimit lost the context-takeover
// window. It stays so until Init.
func (p *Parser) InflateStopped() bool { return p.inflFailed }

// Release stops any inflation in progress and returns pooled buffers,
// including the deflate window. The parser then ignores input until Init.
// It is safe to call more than once and on a zero Parser.
func (p *Parser) Release() {
	p.dropMessage()
	p.win = nil
	if p.state != stFailed {
		p.state = stIdle
	}
}

// Feed parses the next chunk of the stream. It calls the handler for what
// the chunk completes and returns once the chunk is consumed. It does not
// retain chunk.
func (p *Parser) Feed(chunk []byte) {
	i := 0
	for i < len(chunk) {
		switch p.state {
		case stPayload:
			n := len(chunk) - i
			if int64(n) > p.left {
				n = int(p.left)
			}
			seg := chunk[i : i+n]
			i += n
			p.payload(seg)
			p.left -= int64(n)
			if p.left == 0 {
				p.endFrame(seg, i)
			}
		case stHeader:
			if rest := len(chunk) - i; p.hpos == 0 && (rest >= maxHeaderLen || rest >= 2 && rest >= headerLen(chunk[i+1])) {
				// The whole header is in this chunk: skip the byte machine.
				n, err := p.readHeader(chunk[i:])
				if err != nil {
					p.fail(err)
					return
				}
				i += n
			} else {
				if err := p.headerByte(chunk[i]); err != nil {
					p.fail(err)
					return
				}
				i++
				if p.hpos < 2 || p.hpos < p.hlen {
					continue
				}
			}
			p.beginFrame(chunk, i)
		default:
			return
		}
	}
}

// checkFirst validates byte 0 of a header, already decoded into p.hdr.
// The order of the checks is part of the contract (the tests' reference
// parser follows it).
func (p *Parser) checkFirst() error {
	h := &p.hdr
	op := h.Opcode
	switch {
	case op > OpBinary && op < OpClose || op > OpPong:
		return ErrReservedOpcode
	case h.RSV2 || h.RSV3:
		return ErrReservedBits
	case h.RSV1 && (!p.deflate || (op != OpText && op != OpBinary)):
		// RFC 7692 section 6: RSV1 only on the first frame of a data message.
		return ErrReservedBits
	case op.IsControl() && !h.Fin:
		return ErrFragmentedControl
	case op == OpContinuation && !p.inMsg:
		return ErrUnexpectedContinuation
	case (op == OpText || op == OpBinary) && p.inMsg:
		return ErrExpectedContinuation
	}
	return nil
}

// checkSecond validates byte 1 of a header and returns the header length.
func (p *Parser) checkSecond(c byte) (hlen uint8, err error) {
	p.hdr.Masked = c&0x80 != 0
	if p.expectMasked && !p.hdr.Masked {
		return 0, ErrUnmasked
	}
	n := c & 0x7f
	if p.hdr.Opcode.IsControl() && n > maxControlPayload {
		return 0, ErrControlTooLong
	}
	if n < 126 {
		p.hdr.Length = int64(n)
	}
	return uint8(headerLen(c)), nil
}

// headerLen returns the length of a header whose byte 1 is c.
func headerLen(c byte) int {
	n := 2
	switch c & 0x7f {
	case 126:
		n = 4
	case 127:
		n = 10
	}
	if c&0x80 != 0 {
		n += 4
	}
	return n
}

func (p *Parser) setFirst(c byte) {
	p.hdr = Header{
		Fin:    c&0x80 != 0,
		RSV1:   c&0x40 != 0,
		RSV2:   c&0x20 != 0,
		RSV3:   c&0x10 != 0,
		Opcode: Opcode(c & 0x0f),
	}
}

// headerByte consumes one header byte.
func (p *Parser) headerByte(c byte) error {
	switch p.hpos {
	case 0:
		p.setFirst(c)
		if err := p.checkFirst(); err != nil {
			return err
		}
	case 1:
		hlen, err := p.checkSecond(c)
		if err != nil {
			return err
		}
		p.hlen = hlen
	default:
		ext := p.hlen - 2 // extended length bytes, then mask key
		if p.hdr.Masked {
			ext -= 4
		}
		if k := p.hpos - 2; k < ext {
			if ext == 8 && k == 0 && c&0x80 != 0 {
				return ErrLengthOverflow
			}
			p.hdr.Length = p.hdr.Length<<8 | int64(c)
		} else {
			p.hdr.MaskKey[k-ext] = c
		}
	}
	p.hpos++
	return nil
}

// readHeader reads a whole header from b, which holds at least the whole
// header. It checks what headerByte checks, in the same order.
func (p *Parser) readHeader(b []byte) (int, error) {
	p.setFirst(b[0])
	if err := p.checkFirst(); err != nil {
		return 0, err
	}
	hlen, err := p.checkSecond(b[1])
	if err != nil {
		return 0, err
	}
	i := 2
	switch b[1] & 0x7f {
	case 126:
		p.hdr.Length = int64(binary.BigEndian.Uint16(b[2:]))
		i = 4
	case 127:
		l := binary.BigEndian.Uint64(b[2:])
		if l>>63 != 0 {
			return 0, ErrLengthOverflow
		}
		p.hdr.Length = int64(l)
		i = 10
	}
	if p.hdr.Masked {
		copy(p.hdr.MaskKey[:], b[i:i+4])
	}
	p.hlen, p.hpos = hlen, hlen
	return int(hlen), nil
}

// beginFrame is called when a header is complete; i is the offset just past it.
func (p *Parser) beginFrame(chunk []byte, i int) {
	h := p.hdr
	p.left = h.Length
	p.state = stPayload
	if !h.Opcode.IsControl() {
		if h.Opcode != OpContinuation {
			p.inMsg = true
			p.msgOp = h.Opcode
			p.msgComp = h.RSV1
			p.msgSize = 0
		}
		// Saturate: a crafted stream can announce more than 2^63 bytes in all.
		if p.msgSize > math.MaxInt64-h.Length {
			p.msgSize = math.MaxInt64
		} else {
			p.msgSize += h.Length
		}
	}
	p.h.FrameHeader(h, i-int(p.hlen))
	if p.state != stPayload {
		return // the handler called Release
	}
	if h.Length == 0 {
		p.endFrame(chunk[i:i], i)
	}
}

// payload takes seg, the next payload bytes of the current frame (not yet
// subtracted from p.left).
func (p *Parser) payload(seg []byte) {
	if len(seg) == 0 {
		return
	}
	h := &p.hdr
	off := h.Length - p.left // offset of seg in the frame's payload
	whole := int64(len(seg)) == h.Length
	if h.Opcode.IsControl() {
		if whole {
			return // endFrame takes it straight from the chunk
		}
		if p.ctl == nil {
			p.ctl = getCtl()
		}
		maskCopy(p.ctl[off:], seg, h, int(off))
		return
	}
	if p.limit == 0 {
		return
	}
	if p.msgComp {
		if p.inflating() {
			if p.inf == nil {
				p.startInflate()
			}
			p.inf.feed(seg, h.MaskKey, int(off&3), h.Masked, h.Fin && int64(len(seg)) == p.left)
		}
		return
	}
	if p.prefix == nil {
		if whole && h.Fin && !h.Masked && p.msgSize == h.Length {
			return // single-frame message wholly in this chunk: emitMessage slices the chunk
		}
		p.prefix = getPrefix(p.limit)
	}
	pb := p.prefix
	n := min(p.limit-len(pb.b), len(seg))
	if n <= 0 {
		return
	}
	at := len(pb.b)
	pb.b = pb.b[:at+n]
	maskCopy(pb.b[at:], seg[:n], h, int(off))
}

// endFrame is called when the current frame's last byte was fed. seg is the
// frame's payload within this chunk and end the offset just past it.
func (p *Parser) endFrame(seg []byte, end int) {
	h := p.hdr
	p.state, p.hpos = stHeader, 0
	if h.Opcode.IsControl() {
		payload := seg
		switch {
		case p.ctl != nil:
			payload = p.ctl[:h.Length]
		case h.Masked && len(seg) > 0:
			p.ctl = getCtl()
			maskCopy(p.ctl[:], seg, &h, 0)
			payload = p.ctl[:len(seg)]
		}
		p.h.FrameEnd(h, end, payload)
		if p.ctl != nil {
			ctlPool.Put(p.ctl)
			p.ctl = nil
		}
		return
	}
	p.h.FrameEnd(h, end, nil)
	if h.Fin && p.state == stHeader { // not released by the handler
		p.emitMessage(seg, &h)
	}
}

// inflating reports whether the current compressed message gets inflated.
func (p *Parser) inflating() bool {
	return p.deflate && p.limit > 0 && !p.inflFailed
}

// emitMessage calls Handler.Message for the message whose final frame (h) just
// ended; seg is that frame's payload within the current chunk.
func (p *Parser) emitMessage(seg []byte, h *Header) {
	m := Message{Opcode: p.msgOp, Compressed: p.msgComp, Size: p.msgSize}
	switch {
	case p.limit == 0:
		m.Truncated = m.Size > 0
	case p.msgComp && !p.inflating():
		m.InflateErr = ErrInflateDisabled
		m.Truncated = m.Size > 0
	case p.msgComp:
		if p.inf == nil {
			p.startInflate() // no payload bytes came: inflate just the tail
		}
		f := p.inf
		f.feed(nil, [4]byte{}, 0, false, true)
		if f.err != nil {
			m.InflateErr = f.err
			m.Truncated = m.Size > 0
			if f.err == ErrInflateLimit {
				m.Prefix, m.Truncated = p.prefix.b, true // what was inflated is right
			}
			if !p.noCtx {
				// The window is now unknown: later messages cannot be inflated.
				p.inflFailed = true
				p.win = nil
			}
		} else {
			m.Prefix = p.prefix.b
			m.Truncated = f.total > int64(p.limit)
		}
	case p.prefix != nil:
		m.Prefix = p.prefix.b
		m.Truncated = m.Size > int64(p.limit)
	default:
		// Nothing was copied: either the message is empty or its only frame
		// is unmasked and lies in this chunk.
		if !h.Masked || len(seg) == 0 {
			m.Prefix = seg[:min(len(seg), p.limit)]
		}
		m.Truncated = m.Size > int64(p.limit)
	}
	p.inMsg = false
	p.h.Message(m)
	p.dropMessage()
}

// dropMessage returns the resources of the message in progress, if any.
func (p *Parser) dropMessage() {
	if p.inf != nil {
		p.inf.stop() // before the prefix goes: the goroutine writes it
		putInflater(p.inf)
		p.inf = nil
	}
	if p.prefix != nil {
		putPrefix(p.prefix)
		p.prefix = nil
	}
	if p.ctl != nil {
		ctlPool.Put(p.ctl)
		p.ctl = nil
	}
}

// fail stops the parser for good on a protocol error.
func (p *Parser) fail(err error) {
	p.state = stFailed
	p.inMsg = false
	p.dropMessage()
	p.win = nil
	p.h.ProtocolError(err)
}
