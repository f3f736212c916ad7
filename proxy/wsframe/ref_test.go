package wsframe

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
)

// ev is one handler call, with offsets made absolute in the stream so that
// events of differently split feeds compare equal.
type ev struct {
	kind    byte // 'H' FrameHeader, 'E' FrameEnd, 'M' Message, 'P' ProtocolError
	h       Header
	off     int64  // H: frame start; E: frame end
	data    []byte // E: control payload; M: prefix
	nilData bool
	op      Opcode
	comp    bool
	size    int64
	trunc   bool
	err     string // M: InflateErr; P: the error
}

func (e ev) String() string {
	switch e.kind {
	case 'H':
		return fmt.Sprintf("H@%d %+v", e.off, e.h)
	case 'E':
		return fmt.Sprintf("E@%d op=%v fin=%v len=%d payload=%q nil=%v", e.off, e.h.Opcode, e.h.Fin, e.h.Length, e.data, e.nilData)
	case 'M':
		return fmt.Sprintf("M op=%v comp=%v size=%d trunc=%v err=%q prefix=%q", e.op, e.comp, e.size, e.trunc, e.err, e.data)
	}
	return "P " + e.err
}

func (e ev) equal(o ev) bool {
	return e.kind == o.kind && e.h == o.h && e.off == o.off && bytes.Equal(e.data, o.data) &&
		e.nilData == o.nilData && e.op == o.op && e.comp == o.comp && e.size == o.size &&
		e.trunc == o.trunc && e.err == o.err
}

// recorder is a Handler that records events; base is the stream offset of
// the chunk being fed.
type recorder struct {
	base int64
	evs  []ev
}

func (r *recorder) FrameHeader(h Header, start int) {
	r.evs = append(r.evs, ev{kind: 'H', h: h, off: r.base + int64(start)})
}

func (r *recorder) FrameEnd(h Header, end int, payload []byte) {
	r.evs = append(r.evs, ev{kind: 'E', h: h, off: r.base + int64(end), data: bytes.Clone(payload), nilData: payload == nil})
}

func (r *recorder) Message(m Message) {
	e := ev{kind: 'M', op: m.Opcode, comp: m.Compressed, size: m.Size, trunc: m.Truncated, data: bytes.Clone(m.Prefix), nilData: m.Prefix == nil}
	if m.InflateErr != nil {
		e.err = m.InflateErr.Error()
	}
	r.evs = append(r.evs, e)
}

func (r *recorder) ProtocolError(err error) {
	r.evs = append(r.evs, ev{kind: 'P', err: err.Error()})
}

// refResult is what the reference parser expects of a stream.
type refResult struct {
	evs    []ev
	bounds map[int64]bool // offsets at frame boundaries
	errAt  int64          // offset of the byte that reveals a protocol error, or -1
}

// refParse is a whole-buffer reference parser: straightforward, no state
// carried between bytes, independent of Parser's code. It follows the
// contract: errors are reported at the first byte that shows them, in the
// order of Parser.checkFirst.
func refParse(b []byte, o Options) refResult {
	res := refResult{bounds: map[int64]bool{0: true}, errAt: -1}
	limit := min(max(o.PrefixLimit, 0), MaxPrefixLimit)
	deflate := o.Deflate != nil
	var noCtx bool
	wsize := 1 << 15
	if deflate {
		noCtx = o.Deflate.NoContextTakeover
		if wb := o.Deflate.WindowBits; wb >= 8 && wb <= 15 {
			wsize = 1 << max(wb, 9)
		}
	}
	var (
		win        []byte
		inflFailed bool
		inMsg      bool
		msgOp      Opcode
		msgComp    bool
		msgSize    int64
		msgData    []byte
	)
	fail := func(at int, err error) refResult {
		res.errAt = int64(at)
		res.evs = append(res.evs, ev{kind: 'P', err: err.Error()})
		return res
	}
	pos := 0
	for pos < len(b) {
		start := pos
		b0 := b[pos]
		h := Header{Fin: b0&0x80 != 0, RSV1: b0&0x40 != 0, RSV2: b0&0x20 != 0, RSV3: b0&0x10 != 0, Opcode: Opcode(b0 & 15)}
		op := h.Opcode
		control := op >= 8
		data := op == OpText || op == OpBinary
		switch {
		case (op >= 3 && op <= 7) || op >= 11:
			return fail(pos, ErrReservedOpcode)
		case h.RSV2 || h.RSV3:
			return fail(pos, ErrReservedBits)
		case h.RSV1 && (!deflate || !data):
			return fail(pos, ErrReservedBits)
		case control && !h.Fin:
			return fail(pos, ErrFragmentedControl)
		case op == OpContinuation && !inMsg:
			return fail(pos, ErrUnexpectedContinuation)
		case data && inMsg:
			return fail(pos, ErrExpectedContinuation)
		}
		if pos+1 >= len(b) {
			return res
		}
		b1 := b[pos+1]
		h.Masked = b1&0x80 != 0
		if o.ExpectMasked && !h.Masked {
			return fail(pos+1, ErrUnmasked)
		}
		l7 := int64(b1 & 0x7f)
		if control && l7 > 125 {
			return fail(pos+1, ErrControlTooLong)
		}
		p := pos + 2
		switch l7 {
		case 126:
			if p+2 > len(b) {
				return res
			}
			h.Length = int64(binary.BigEndian.Uint16(b[p:]))
			p += 2
		case 127:
			if p < len(b) && b[p]&0x80 != 0 {
				return fail(p, ErrLengthOverflow)
			}
			if p+8 > len(b) {
				return res
			}
			h.Length = int64(binary.BigEndian.Uint64(b[p:]))
			p += 8
		default:
			h.Length = l7
		}
		if h.Masked {
			if p+4 > len(b) {
				return res
			}
			copy(h.MaskKey[:], b[p:])
			p += 4
		}
		if !control {
			if op != OpContinuation {
				inMsg, msgOp, msgComp, msgSize, msgData = true, op, h.RSV1, 0, nil
			}
			if msgSize > math.MaxInt64-h.Length {
				msgSize = math.MaxInt64
			} else {
				msgSize += h.Length
			}
		}
		res.evs = append(res.evs, ev{kind: 'H', h: h, off: int64(start)})
		if int64(len(b)-p) < h.Length {
			return res
		}
		end := p + int(h.Length)
		payload := bytes.Clone(b[p:end])
		if h.Masked {
			for i := range payload {
				payload[i] ^= h.MaskKey[i%4]
			}
		}
		pos = end
		res.bounds[int64(pos)] = true
		if control {
			res.evs = append(res.evs, ev{kind: 'E', h: h, off: int64(end), data: payload})
			continue
		}
		res.evs = append(res.evs, ev{kind: 'E', h: h, off: int64(end), nilData: true})
		msgData = append(msgData, payload...)
		if !h.Fin {
			continue
		}
		inMsg = false
		m := ev{kind: 'M', op: msgOp, comp: msgComp, size: msgSize, nilData: true}
		switch {
		case limit == 0:
			m.trunc = msgSize > 0
		case msgComp && inflFailed:
			m.err = ErrInflateDisabled.Error()
			m.trunc = msgSize > 0
		case msgComp:
			var dict []byte
			if !noCtx {
				dict = win
			}
			fr := flate.NewReaderDict(bytes.NewReader(append(msgData, deflateTail...)), dict)
			var out []byte
			var total int64
			var ierr error
			buf := make([]byte, inflateChunk)
			for {
				n, err := fr.Read(buf)
				total += int64(n)
				if len(out) < limit {
					out = append(out, buf[:min(n, limit-len(out))]...)
				}
				if !noCtx {
					win = append(win, buf[:n]...)
					if len(win) > wsize {
						win = append([]byte(nil), win[len(win)-wsize:]...)
					}
				}
				if err != nil {
					if err != io.EOF {
						ierr = err
					}
					break
				}
				if noCtx && total > int64(limit) {
					break
				}
				if o.LimitInflate && !noCtx && total > int64(max(MaxInflate, limit)) {
					ierr = ErrInflateLimit
					break
				}
			}
			if ierr != nil {
				m.err = ierr.Error()
				m.trunc = msgSize > 0
				if ierr == ErrInflateLimit {
					m.data, m.nilData, m.trunc = out, false, true
				}
				if !noCtx {
					inflFailed, win = true, nil
				}
			} else {
				m.data, m.nilData = out, false
				m.trunc = total > int64(limit)
			}
		default:
			m.data, m.nilData = msgData[:min(len(msgData), limit)], false
			m.trunc = msgSize > int64(limit)
		}
		res.evs = append(res.evs, m)
	}
	return res
}

// feedSplit feeds stream in chunks of the given sizes (the rest in a last
// chunk), checks AtBoundary after each, and returns the events.
func feedSplit(t testing.TB, stream []byte, o Options, sizes []int, ref *refResult) []ev {
	t.Helper()
	var rec recorder
	var p Parser
	p.Init(o, &rec)
	defer p.Release()
	pos := 0
	feed := func(n int) {
		rec.base = int64(pos)
		p.Feed(stream[pos : pos+n])
		pos += n
		if ref != nil {
			failed := ref.errAt >= 0 && ref.errAt < int64(pos)
			want := ref.bounds[int64(pos)] && !failed
			if got := p.AtBoundary(); got != want {
				t.Fatalf("AtBoundary after %d bytes (sizes %v) = %v, want %v", pos, sizes, got, want)
			}
			var pending int64
			if !failed {
				last := int64(0)
				for b := range ref.bounds {
					if b <= int64(pos) && b > last {
						last = b
					}
				}
				pending = int64(pos) - last
			}
			if got := p.Pending(); got != pending {
				t.Fatalf("Pending after %d bytes (sizes %v) = %d, want %d", pos, sizes, got, pending)
			}
		}
	}
	for _, n := range sizes {
		feed(min(n, len(stream)-pos))
	}
	feed(len(stream) - pos)
	if ref != nil && p.Failed() != (ref.errAt >= 0) {
		t.Fatalf("Failed() = %v, want %v", p.Failed(), ref.errAt >= 0)
	}
	return rec.evs
}

// checkSplit compares the events of stream fed in chunks of sizes with the
// reference parser's.
func checkSplit(t testing.TB, stream []byte, o Options, sizes []int) {
	t.Helper()
	ref := refParse(stream, o)
	got := feedSplit(t, stream, o, sizes, &ref)
	if d := diffEvents(got, ref.evs); d != "" {
		t.Fatalf("split %v of %d bytes, opts %+v: %s", sizes, len(stream), o, d)
	}
}

func diffEvents(got, want []ev) string {
	for i := 0; i < max(len(got), len(want)); i++ {
		switch {
		case i >= len(got):
			return fmt.Sprintf("event %d missing: want %v", i, want[i])
		case i >= len(want):
			return fmt.Sprintf("extra event %d: %v", i, got[i])
		case !got[i].equal(want[i]):
			return fmt.Sprintf("event %d:\n got  %v\n want %v", i, got[i], want[i])
		}
	}
	return ""
}

func dumpEvents(evs []ev) string {
	var sb strings.Builder
	for _, e := range evs {
		sb.WriteString(e.String())
		sb.WriteByte('\n')
	}
	return sb.String()
}

// frame builds a frame for tests.
type frame struct {
	fin, rsv1, rsv2, rsv3 bool
	op                    Opcode
	mask                  bool
	key                   [4]byte
	payload               []byte
	ext                   int // force 2 or 8 extended length bytes
}

func (f frame) bytes() []byte {
	var b []byte
	b0 := byte(f.op)
	if f.fin {
		b0 |= 0x80
	}
	if f.rsv1 {
		b0 |= 0x40
	}
	if f.rsv2 {
		b0 |= 0x20
	}
	if f.rsv3 {
		b0 |= 0x10
	}
	b = append(b, b0)
	var mb byte
	if f.mask {
		mb = 0x80
	}
	n := len(f.payload)
	switch {
	case f.ext == 8 || n > 0xffff:
		b = append(b, mb|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	case f.ext == 2 || n > 125:
		b = append(b, mb|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, mb|byte(n))
	}
	if f.mask {
		b = append(b, f.key[:]...)
	}
	at := len(b)
	b = append(b, f.payload...)
	if f.mask {
		for i := range f.payload {
			b[at+i] ^= f.key[i%4]
		}
	}
	return b
}

func concat(frames ...frame) []byte {
	var b []byte
	for _, f := range frames {
		b = append(b, f.bytes()...)
	}
	return b
}

// deflateMsg compresses msgs as one permessage-deflate sender would: one
// flate.Writer whose history carries over (context takeover) unless noCtx,
// each message flushed and its 0x00 0x00 0xff 0xff tail removed.
type deflater struct {
	w     *flate.Writer
	buf   bytes.Buffer
	noCtx bool
}

func newDeflater(noCtx bool) *deflater {
	d := &deflater{noCtx: noCtx}
	d.w, _ = flate.NewWriter(&d.buf, flate.BestSpeed)
	return d
}

func (d *deflater) compress(msg []byte) []byte {
	d.buf.Reset()
	if d.noCtx {
		d.w.Reset(&d.buf)
	}
	d.w.Write(msg)
	d.w.Flush()
	out := bytes.Clone(d.buf.Bytes())
	if !bytes.HasSuffix(out, []byte{0, 0, 0xff, 0xff}) {
		panic("flush did not end with a sync marker")
	}
	return out[:len(out)-4]
}
