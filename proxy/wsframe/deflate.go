package wsframe

import (
	"compress/flate"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
)

// DeflateParams are the negotiated permessage-deflate parameters for one
// direction. See https://tools.ietf.org/html/rfc7692#section-7.
type DeflateParams struct {
	// NoContextTakeover for THIS direction: client_no_context_takeover for
	// client-to-server, server_no_context_takeover for server-to-client.
	NoContextTakeover bool
	// WindowBits is the sender's LZ77 window (client_max_window_bits or
	// server_max_window_bits): 8..15, 0 means 15.
	WindowBits int
}

// ParseDeflateExtension parses the Sec-WebSocket-Extensions values of a
// handshake response (the negotiated extensions) and returns the parameters
// for the client-to-server and server-to-client directions; nil, nil when
// permessage-deflate was not negotiated. A window size it cannot read counts
// as 15: a larger window than the sender uses is always safe for inflating.
func ParseDeflateExtension(headerValues []string) (clientToServer, serverToClient *DeflateParams) {
	for _, v := range headerValues {
		for _, ext := range splitQuoted(v, ',') {
			params := splitQuoted(ext, ';')
			if !strings.EqualFold(strings.TrimSpace(params[0]), "permessage-deflate") {
				continue
			}
			c2s, s2c := &DeflateParams{}, &DeflateParams{}
			for _, param := range params[1:] {
				k, val, _ := strings.Cut(param, "=")
				val = strings.TrimSpace(val)
				if uq, err := strconv.Unquote(val); err == nil && strings.HasPrefix(val, `"`) {
					val = uq
				}
				switch strings.ToLower(strings.TrimSpace(k)) {
				case "client_no_context_takeover":
					c2s.NoContextTakeover = true
				case "server_no_context_takeover":
					s2c.NoContextTakeover = true
				case "client_max_window_bits":
					c2s.WindowBits = parseWindowBits(val)
				case "server_max_window_bits":
					s2c.WindowBits = parseWindowBits(val)
				}
			}
			// A response holds at most one permessage-deflate element.
			return c2s, s2c
		}
	}
	return nil, nil
}

func parseWindowBits(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 8 || n > 15 {
		return 0
	}
	return n
}

// windowBits maps DeflateParams.WindowBits to the window the parser keeps.
// Out of range means 15 (always safe). zlib cannot deflate with an 8-bit
// window and silently uses 9, so 8 is kept as 9.
func windowBits(n int) uint8 {
	switch {
	case n < 8 || n > 15:
		return 15
	case n == 8:
		return 9
	}
	return uint8(n)
}

// splitQuoted splits s at sep outside double-quoted strings.
func splitQuoted(s string, sep byte) []string {
	var out []string
	quoted, esc, from := false, false, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case esc:
			esc = false
		case quoted && c == '\\':
			esc = true
		case c == '"':
			quoted = !quoted
		case !quoted && c == sep:
			out = append(out, s[from:i])
			from = i + 1
		}
	}
	return append(out, s[from:])
}

// deflateTail ends every compressed message: RFC 7692 section 7.2.2 says to
// append 0x00 0x00 0xff 0xff (the empty stored block the sender stripped);
// the final empty stored block after it makes compress/flate return io.EOF
// instead of waiting for another block (as gorilla/websocket does).
const deflateTail = "\x00\x00\xff\xff\x01\x00\x00\xff\xff"

// inflateChunk is how much inflated output is taken from flate per Read.
const inflateChunk = 4096

var errAborted = errors.New("wsframe: inflation aborted")

// inflater inflates one compressed message whose bytes arrive in chunks.
//
// compress/flate pulls its input, while Feed pushes chunks. When the first
// input fed is also the last (the whole message is in one chunk, the common
// case for chat), run reads it synchronously. Otherwise a goroutine runs the
// flate reader, and inflater is its io.ByteReader: when it has consumed the
// chunk it was given it tells Feed (idle) and waits for the next one (wake).
// Feed and the goroutine therefore take strict turns, so the fields below
// need no lock and Feed returns only after the inflater consumed its bytes.
// Unmasking happens as flate reads each byte: the chunk is never copied.
type inflater struct {
	fr io.ReadCloser // flate reader; also a flate.Resetter
	p  *Parser       // where output goes: p.prefix and p.win

	// Input.
	src  []byte
	key  [4]byte
	kpos int  // mask key index of src[0]
	tail int  // bytes of deflateTail still to serve after src
	eof  bool // src (and then the tail) is the last input

	// Turn taking with the goroutine.
	async bool // the goroutine was started
	abort bool // ask the goroutine to stop
	wake  chan struct{}
	idle  chan struct{}

	// Result.
	total int64 // inflated bytes so far
	err   error
	done  bool // no more input is wanted

	out [inflateChunk]byte
}

var inflaterPool sync.Pool

// startInflate takes an inflater for the compressed message in progress.
func (p *Parser) startInflate() {
	f, _ := inflaterPool.Get().(*inflater)
	if f == nil {
		f = &inflater{wake: make(chan struct{}), idle: make(chan struct{})}
	}
	f.p = p
	var dict []byte
	if !p.noCtx {
		dict = p.win
	}
	if f.fr == nil {
		f.fr = flate.NewReaderDict(f, dict)
	} else {
		f.fr.(flate.Resetter).Reset(f, dict)
	}
	p.inf = f
	if p.prefix == nil {
		p.prefix = getPrefix(p.limit)
	}
}

func putInflater(f *inflater) {
	f.p, f.src, f.err = nil, nil, nil
	f.kpos, f.tail, f.total = 0, 0, 0
	f.eof, f.async, f.abort, f.done = false, false, false, false
	inflaterPool.Put(f)
}

// feed hands the next compressed payload bytes to the inflater and returns
// once they are consumed. final: no input follows; the deflate tail is added.
func (f *inflater) feed(src []byte, key [4]byte, kpos int, masked, final bool) {
	if f.done {
		return // failed, or NoContextTakeover and the prefix is known
	}
	if !masked {
		key = [4]byte{}
	}
	f.src, f.key, f.kpos = src, key, kpos
	if final {
		f.tail, f.eof = len(deflateTail), true
	}
	switch {
	case f.async:
		f.wake <- struct{}{}
		<-f.idle
	case final:
		f.run()
	default:
		f.async = true
		go f.goRun()
		<-f.idle
	}
	f.src = nil // never keep the caller's chunk
}

// stop ends a goroutine that is waiting for input.
func (f *inflater) stop() {
	if f.async && !f.done {
		f.abort = true
		f.wake <- struct{}{}
		<-f.idle
	}
}

func (f *inflater) goRun() {
	f.run()
	f.idle <- struct{}{} // last touch of f: Feed may pool it right after
}

// run reads inflated output until the message ends, an error, or, without
// context takeover, once the prefix and whether more follows are known; with
// context takeover and LimitInflate, once the message passed the bound.
func (f *inflater) run() {
	p := f.p
	for {
		n, err := f.fr.Read(f.out[:])
		if f.abort {
			break
		}
		if n > 0 {
			f.emit(f.out[:n])
		}
		if err != nil {
			if err != io.EOF {
				f.err = err
			}
			break
		}
		if p.noCtx && f.total > int64(p.limit) {
			break
		}
		if p.limitInflate && f.total > max(MaxInflate, int64(p.limit)) {
			f.err = ErrInflateLimit // with context takeover: see Options.LimitInflate
			break
		}
	}
	f.done = true
}

// emit takes inflated output.
func (f *inflater) emit(b []byte) {
	p := f.p
	f.total += int64(len(b))
	if pb := p.prefix; len(pb.b) < p.limit {
		pb.b = append(pb.b, b[:min(p.limit-len(pb.b), len(b))]...)
	}
	if !p.noCtx {
		p.win = appendWindow(p.win, b, 1<<p.winBits)
	}
}

// more waits for input. It is called when src and the tail are used up.
func (f *inflater) more() error {
	if f.eof {
		return io.EOF // flate wants more than the message holds
	}
	if !f.async {
		return io.ErrUnexpectedEOF // not reached: a synchronous run always has eof
	}
	f.idle <- struct{}{}
	<-f.wake
	if f.abort {
		return errAborted
	}
	return nil
}

// ReadByte implements io.ByteReader for flate, so flate reads no further
// than it needs.
func (f *inflater) ReadByte() (byte, error) {
	for len(f.src) == 0 {
		if f.tail > 0 {
			c := deflateTail[len(deflateTail)-f.tail]
			f.tail--
			return c, nil
		}
		if err := f.more(); err != nil {
			return 0, err
		}
	}
	c := f.src[0] ^ f.key[f.kpos&3]
	f.src = f.src[1:]
	f.kpos++
	return c, nil
}

// Read implements io.Reader for flate's stored blocks.
func (f *inflater) Read(b []byte) (int, error) {
	for len(f.src) == 0 && f.tail == 0 {
		if err := f.more(); err != nil {
			return 0, err
		}
	}
	if len(f.src) > 0 {
		n := min(len(b), len(f.src))
		maskBytes(b[:n], f.src[:n], f.key, f.kpos)
		f.src = f.src[n:]
		f.kpos += n
		return n, nil
	}
	n := copy(b, deflateTail[len(deflateTail)-f.tail:])
	f.tail -= n
	return n, nil
}

// appendWindow appends b to the sliding window w, keeping its last size
// bytes. The buffer grows with the output, so a connection that sent little
// keeps little.
func appendWindow(w, b []byte, size int) []byte {
	if len(b) >= size {
		b = b[len(b)-size:]
		w = w[:0]
	}
	need := len(w) + len(b)
	if need > cap(w) && cap(w) < size {
		c := min(size, max(need, 2*cap(w), 512))
		nw := make([]byte, len(w), c)
		copy(nw, w)
		w = nw
	}
	if need > cap(w) {
		drop := need - cap(w)
		copy(w, w[drop:])
		w = w[:len(w)-drop]
	}
	return append(w, b...)
}
