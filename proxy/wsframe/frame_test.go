package wsframe

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"unsafe"
)

var key1 = [4]byte{0x37, 0xfa, 0x21, 0x3d}

func feedAll(t testing.TB, stream []byte, o Options) []ev {
	t.Helper()
	return feedSplit(t, stream, o, nil, nil)
}

func TestHeaders(t *testing.T) {
	long := bytes.Repeat([]byte("abcdefgh"), 70000/8)
	tests := []struct {
		name string
		f    frame
		opts Options
		want Header
	}{
		{"7-bit unmasked", frame{fin: true, op: OpText, payload: []byte("hi")}, Options{},
			Header{Fin: true, Opcode: OpText, Length: 2}},
		{"7-bit masked", frame{fin: true, op: OpBinary, mask: true, key: key1, payload: []byte("hello")}, Options{ExpectMasked: true},
			Header{Fin: true, Opcode: OpBinary, Masked: true, MaskKey: key1, Length: 5}},
		{"125 bytes", frame{fin: true, op: OpText, payload: make([]byte, 125)}, Options{},
			Header{Fin: true, Opcode: OpText, Length: 125}},
		{"empty", frame{fin: true, op: OpText}, Options{},
			Header{Fin: true, Opcode: OpText}},
		{"16-bit", frame{fin: true, op: OpText, payload: make([]byte, 126)}, Options{},
			Header{Fin: true, Opcode: OpText, Length: 126}},
		{"16-bit max masked", frame{fin: true, op: OpBinary, mask: true, key: key1, payload: make([]byte, 0xffff)}, Options{ExpectMasked: true},
			Header{Fin: true, Opcode: OpBinary, Masked: true, MaskKey: key1, Length: 0xffff}},
		{"16-bit non-minimal", frame{fin: true, op: OpText, ext: 2, payload: []byte("x")}, Options{},
			Header{Fin: true, Opcode: OpText, Length: 1}},
		{"64-bit", frame{fin: true, op: OpBinary, payload: long}, Options{},
			Header{Fin: true, Opcode: OpBinary, Length: int64(len(long))}},
		{"64-bit masked", frame{fin: true, op: OpBinary, mask: true, key: key1, payload: long}, Options{ExpectMasked: true},
			Header{Fin: true, Opcode: OpBinary, Masked: true, MaskKey: key1, Length: int64(len(long))}},
		{"64-bit non-minimal", frame{fin: true, op: OpText, ext: 8, payload: []byte("xy")}, Options{},
			Header{Fin: true, Opcode: OpText, Length: 2}},
		{"not fin", frame{op: OpText, payload: []byte("a")}, Options{},
			Header{Opcode: OpText, Length: 1}},
		{"rsv1 with deflate", frame{fin: true, rsv1: true, op: OpText, payload: []byte{0x02, 0x00}}, Options{Deflate: &DeflateParams{}},
			Header{Fin: true, RSV1: true, Opcode: OpText, Length: 2}},
		{"ping", frame{fin: true, op: OpPing, payload: []byte("p")}, Options{},
			Header{Fin: true, Opcode: OpPing, Length: 1}},
		{"masked server frame accepted", frame{fin: true, op: OpText, mask: true, key: key1, payload: []byte("s")}, Options{},
			Header{Fin: true, Opcode: OpText, Masked: true, MaskKey: key1, Length: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.f.bytes()
			for _, split := range []int{0, 1, 2, 3, 5, 9, 13} {
				evs := feedSplit(t, b, tt.opts, []int{split}, nil)
				if len(evs) < 2 || evs[0].kind != 'H' {
					t.Fatalf("split %d: events %v", split, evs)
				}
				if evs[0].h != tt.want || evs[0].off != 0 {
					t.Fatalf("split %d: header %+v at %d, want %+v at 0", split, evs[0].h, evs[0].off, tt.want)
				}
				if evs[1].kind != 'E' || evs[1].off != int64(len(b)) {
					t.Fatalf("split %d: frame end %v, want at %d", split, evs[1], len(b))
				}
			}
			checkSplit(t, b, tt.opts, []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1})
		})
	}
}

// TestHeaderOffsets pins start/end offsets relative to the chunk, negative
// when the header began in an earlier chunk.
func TestHeaderOffsets(t *testing.T) {
	b := concat(frame{fin: true, op: OpText, payload: []byte("abc")},
		frame{fin: true, op: OpText, mask: true, key: key1, payload: []byte("de")})
	// frame 1: bytes 0..4, frame 2: 5..12 (2 header + 4 key + 2 payload)
	type call struct {
		kind byte
		off  int
	}
	var calls []call
	h := &funcHandler{
		header: func(_ Header, start int) { calls = append(calls, call{'H', start}) },
		end:    func(_ Header, end int, _ []byte) { calls = append(calls, call{'E', end}) },
	}
	var p Parser
	p.Init(Options{}, h)
	p.Feed(b[:7])  // frame 1 whole, then 2 of frame 2's 6 header bytes
	p.Feed(b[7:9]) // 2 more: the header ends 2 bytes into the next chunk
	p.Feed(b[9:])
	want := []call{{'H', 0}, {'E', 5}, {'H', -4}, {'E', 4}}
	if len(calls) != len(want) {
		t.Fatalf("calls %v, want %v", calls, want)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Fatalf("calls %v, want %v", calls, want)
		}
	}
}

type funcHandler struct {
	header func(Header, int)
	end    func(Header, int, []byte)
	msg    func(Message)
	perr   func(error)
}

func (f *funcHandler) FrameHeader(h Header, s int) {
	if f.header != nil {
		f.header(h, s)
	}
}

func (f *funcHandler) FrameEnd(h Header, e int, p []byte) {
	if f.end != nil {
		f.end(h, e, p)
	}
}

func (f *funcHandler) Message(m Message) {
	if f.msg != nil {
		f.msg(m)
	}
}

func (f *funcHandler) ProtocolError(err error) {
	if f.perr != nil {
		f.perr(err)
	}
}

func TestFragmentedWithPing(t *testing.T) {
	for _, masked := range []bool{false, true} {
		stream := concat(
			frame{op: OpText, mask: masked, key: key1, payload: []byte(`{"data":`)},
			frame{fin: true, op: OpPing, mask: masked, key: [4]byte{1, 2, 3, 4}, payload: []byte("probe-1")},
			frame{op: OpContinuation, mask: masked, key: [4]byte{9, 8, 7, 6}, payload: []byte(`{"sessionId":`)},
			frame{fin: true, op: OpPong, mask: masked, key: key1},
			frame{op: OpContinuation, mask: masked, key: key1},
			frame{fin: true, op: OpContinuation, mask: masked, key: [4]byte{5, 5, 5, 5}, payload: []byte(`"s1"}}`)},
			frame{fin: true, op: OpBinary, mask: masked, key: key1, payload: []byte{0, 1, 2}},
		)
		opts := Options{ExpectMasked: masked, PrefixLimit: 1024}
		evs := feedAll(t, stream, opts)
		var kinds strings.Builder
		for _, e := range evs {
			kinds.WriteByte(e.kind)
		}
		if kinds.String() != "HEHEHEHEHEHEMHEM" {
			t.Fatalf("event kinds %s:\n%s", kinds.String(), dumpEvents(evs))
		}
		if string(evs[3].data) != "probe-1" || evs[3].h.Opcode != OpPing {
			t.Fatalf("ping payload %v", evs[3])
		}
		if evs[7].data == nil || len(evs[7].data) != 0 || evs[7].nilData {
			t.Fatalf("empty pong payload should be empty, non-nil: %v", evs[7])
		}
		m := evs[12]
		if m.op != OpText || string(m.data) != `{"data":{"sessionId":"s1"}}` || m.size != 27 || m.trunc {
			t.Fatalf("message %v", m)
		}
		if m := evs[15]; m.op != OpBinary || !bytes.Equal(m.data, []byte{0, 1, 2}) {
			t.Fatalf("message %v", m)
		}
		checkEverySplit(t, stream, opts)
	}
}

func TestPrefixLimit(t *testing.T) {
	stream := concat(
		frame{op: OpText, mask: true, key: key1, payload: []byte("hello ")},
		frame{fin: true, op: OpContinuation, mask: true, key: key1, payload: []byte("world")},
		frame{fin: true, op: OpText, payload: []byte("0123456789")},
		frame{fin: true, op: OpText, payload: []byte("01234")},
	)
	tests := []struct {
		limit int
		want  []string
		trunc []bool
	}{
		{0, []string{"", "", ""}, []bool{true, true, true}},
		{1, []string{"h", "0", "0"}, []bool{true, true, true}},
		{5, []string{"hello", "01234", "01234"}, []bool{true, true, false}},
		{8, []string{"hello wo", "01234567", "01234"}, []bool{true, true, false}},
		{11, []string{"hello world", "0123456789", "01234"}, []bool{false, false, false}},
		{1 << 20, []string{"hello world", "0123456789", "01234"}, []bool{false, false, false}},
	}
	for _, tt := range tests {
		evs := feedAll(t, stream, Options{PrefixLimit: tt.limit})
		var msgs []ev
		for _, e := range evs {
			if e.kind == 'M' {
				msgs = append(msgs, e)
			}
		}
		for i, m := range msgs {
			if string(m.data) != tt.want[i] || m.trunc != tt.trunc[i] || (tt.limit == 0) != m.nilData {
				t.Errorf("limit %d message %d: %v, want %q truncated=%v", tt.limit, i, m, tt.want[i], tt.trunc[i])
			}
		}
		checkEverySplit(t, stream, Options{PrefixLimit: tt.limit})
	}
}

// TestZeroCopy: an unmasked single-frame message wholly in one chunk is
// handed over as a slice of the chunk, without taking a buffer.
func TestZeroCopy(t *testing.T) {
	chunk := frame{fin: true, op: OpText, payload: []byte("hello")}.bytes()
	var got []byte
	var p Parser
	p.Init(Options{PrefixLimit: 3}, &funcHandler{msg: func(m Message) { got = m.Prefix }})
	p.Feed(chunk)
	if string(got) != "hel" || &got[0] != &chunk[2] {
		t.Fatalf("prefix %q does not alias the chunk", got)
	}
}

func TestClosePayload(t *testing.T) {
	body := append([]byte{0x03, 0xe8}, "going away"...)
	for _, masked := range []bool{false, true} {
		stream := concat(
			frame{fin: true, op: OpText, mask: masked, key: key1, payload: []byte("bye")},
			frame{fin: true, op: OpClose, mask: masked, key: key1, payload: body},
			frame{fin: true, op: OpClose, mask: masked, key: key1},
		)
		evs := feedAll(t, stream, Options{ExpectMasked: masked})
		if len(evs) != 7 || !bytes.Equal(evs[4].data, body) || evs[4].h.Opcode != OpClose || len(evs[6].data) != 0 {
			t.Fatalf("events:\n%s", dumpEvents(evs))
		}
		checkEverySplit(t, stream, Options{ExpectMasked: masked, PrefixLimit: 2})
	}
	// A 125-byte control payload split into single bytes.
	big := bytes.Repeat([]byte{0xab}, 125)
	stream := frame{fin: true, op: OpClose, mask: true, key: key1, payload: big}.bytes()
	evs := feedSplit(t, stream, Options{}, ones(len(stream)), nil)
	if len(evs) != 2 || !bytes.Equal(evs[1].data, big) {
		t.Fatalf("events:\n%s", dumpEvents(evs))
	}
}

func TestProtocolErrors(t *testing.T) {
	text := frame{fin: true, op: OpText, payload: []byte("ok")}
	tests := []struct {
		name   string
		stream []byte
		opts   Options
		want   error
		before int // events before the error
	}{
		{"reserved opcode 3", concat(text, frame{fin: true, op: 3}), Options{}, ErrReservedOpcode, 3},
		{"reserved opcode 11", frame{fin: true, op: 11}.bytes(), Options{}, ErrReservedOpcode, 0},
		{"rsv1 without deflate", frame{fin: true, rsv1: true, op: OpText}.bytes(), Options{}, ErrReservedBits, 0},
		{"rsv2", frame{fin: true, rsv2: true, op: OpText}.bytes(), Options{Deflate: &DeflateParams{}}, ErrReservedBits, 0},
		{"rsv3", frame{fin: true, rsv3: true, op: OpBinary}.bytes(), Options{}, ErrReservedBits, 0},
		{"rsv1 on control", frame{fin: true, rsv1: true, op: OpPing}.bytes(), Options{Deflate: &DeflateParams{}}, ErrReservedBits, 0},
		{"rsv1 on continuation", concat(frame{rsv1: true, op: OpText, payload: []byte{0}}, frame{fin: true, rsv1: true, op: OpContinuation}),
			Options{Deflate: &DeflateParams{}}, ErrReservedBits, 2},
		{"fragmented ping", frame{op: OpPing}.bytes(), Options{}, ErrFragmentedControl, 0},
		{"fragmented close", frame{op: OpClose}.bytes(), Options{}, ErrFragmentedControl, 0},
		{"control too long", frame{fin: true, op: OpPing, payload: make([]byte, 126)}.bytes(), Options{}, ErrControlTooLong, 0},
		{"control 16-bit length", frame{fin: true, op: OpPong, ext: 2, payload: []byte("x")}.bytes(), Options{}, ErrControlTooLong, 0},
		{"continuation without start", frame{fin: true, op: OpContinuation}.bytes(), Options{}, ErrUnexpectedContinuation, 0},
		{"continuation after final", concat(text, frame{fin: true, op: OpContinuation}), Options{}, ErrUnexpectedContinuation, 3},
		{"text inside fragmented", concat(frame{op: OpText, payload: []byte("a")}, frame{fin: true, op: OpPing}, text), Options{}, ErrExpectedContinuation, 4},
		{"binary inside fragmented", concat(frame{op: OpText, payload: []byte("a")}, frame{fin: true, op: OpBinary}), Options{}, ErrExpectedContinuation, 2},
		{"64-bit MSB", []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}, Options{}, ErrLengthOverflow, 0},
		{"64-bit MSB, truncated", []byte{0x82, 127, 0xff}, Options{}, ErrLengthOverflow, 0},
		{"unmasked client frame", text.bytes(), Options{ExpectMasked: true}, ErrUnmasked, 0},
		{"unmasked client ping", concat(frame{fin: true, op: OpText, mask: true, payload: []byte("a")}, frame{fin: true, op: OpPing}),
			Options{ExpectMasked: true}, ErrUnmasked, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got error
			var events int
			var p Parser
			p.Init(tt.opts, &funcHandler{
				header: func(Header, int) { events++ },
				end:    func(Header, int, []byte) { events++ },
				msg:    func(Message) { events++ },
				perr: func(err error) {
					if got != nil {
						t.Fatal("second ProtocolError")
					}
					got = err
				},
			})
			p.Feed(tt.stream)
			// The parser must ignore whatever follows.
			p.Feed(text.bytes())
			p.Feed([]byte{0xff, 0xff, 0xff})
			if !errors.Is(got, tt.want) || events != tt.before {
				t.Fatalf("error %v after %d events, want %v after %d", got, events, tt.want, tt.before)
			}
			if !p.Failed() || p.AtBoundary() {
				t.Fatalf("Failed %v AtBoundary %v", p.Failed(), p.AtBoundary())
			}
			p.Release()
			checkEverySplit(t, tt.stream, tt.opts)
		})
	}
}

// multiFrame is a small stream with every kind of frame, masked (client to
// server) and with every header length form.
func multiFrame() []byte {
	return concat(
		frame{fin: true, op: OpText, mask: true, key: key1, payload: []byte(`{"action":"keep_alive"}`)},
		frame{op: OpBinary, mask: true, key: [4]byte{1, 2, 3, 4}, payload: []byte{1, 2, 3}},
		frame{fin: true, op: OpPing, mask: true, key: key1, payload: []byte("ping!")},
		frame{op: OpContinuation, mask: true, key: key1, ext: 2, payload: []byte("45")},
		frame{fin: true, op: OpContinuation, mask: true, key: key1, ext: 8, payload: []byte("6789")},
		frame{fin: true, op: OpText, mask: true, key: key1},
		frame{fin: true, op: OpPong, mask: true, key: key1},
		frame{fin: true, op: OpText, mask: true, key: key1, payload: bytes.Repeat([]byte("x"), 130)},
		frame{fin: true, op: OpClose, mask: true, key: key1, payload: []byte{0x03, 0xe8, 'o', 'k'}},
	)
}

// checkEverySplit feeds stream split at every position, at every pair of
// positions when it is short, one byte at a time, and at random positions.
func checkEverySplit(t *testing.T, stream []byte, o Options) {
	t.Helper()
	for i := 0; i <= len(stream); i++ {
		checkSplit(t, stream, o, []int{i})
	}
	if len(stream) <= 80 {
		for i := 0; i <= len(stream); i++ {
			for j := 0; i+j <= len(stream); j++ {
				checkSplit(t, stream, o, []int{i, j})
			}
		}
	}
	checkSplit(t, stream, o, ones(len(stream)))
	rng := rand.New(rand.NewPCG(1, uint64(len(stream))))
	for range 200 {
		var sizes []int
		for n := 0; n < len(stream); {
			s := rng.IntN(20)
			sizes = append(sizes, s)
			n += s
		}
		checkSplit(t, stream, o, sizes)
	}
}

func TestEverySplit(t *testing.T) {
	stream := multiFrame()
	for _, limit := range []int{0, 1, 4, 16, 1024} {
		checkEverySplit(t, stream, Options{ExpectMasked: true, PrefixLimit: limit})
	}
	// The same must hold for an unmasked stream (zero-copy paths).
	unmasked := concat(
		frame{fin: true, op: OpText, payload: []byte("one")},
		frame{op: OpText, payload: []byte("tw")},
		frame{fin: true, op: OpPing, payload: []byte("p")},
		frame{fin: true, op: OpContinuation, payload: []byte("o")},
		frame{fin: true, op: OpBinary, ext: 2, payload: []byte("three")},
		frame{fin: true, op: OpClose},
	)
	for _, limit := range []int{0, 2, 1024} {
		checkEverySplit(t, unmasked, Options{PrefixLimit: limit})
	}
}

// TestEmptyFeeds: empty chunks change nothing.
func TestEmptyFeeds(t *testing.T) {
	stream := multiFrame()
	sizes := make([]int, 0, 3*len(stream))
	for range stream {
		sizes = append(sizes, 0, 1, 0)
	}
	checkSplit(t, stream, Options{ExpectMasked: true, PrefixLimit: 8}, sizes)
}

// TestHoldsNothingIdle: between messages the parser holds no buffer.
func TestHoldsNothingIdle(t *testing.T) {
	stream := multiFrame()
	var p Parser
	p.Init(Options{ExpectMasked: true, PrefixLimit: 1024}, &recorder{})
	for i := range stream {
		p.Feed(stream[i : i+1])
		if p.AtBoundary() && !p.inMsg && (p.prefix != nil || p.ctl != nil || p.inf != nil || p.win != nil) {
			t.Fatalf("at boundary after %d bytes the parser holds a buffer", i+1)
		}
	}
	// In the middle of a control frame split across chunks it borrows one.
	p.Feed(frame{fin: true, op: OpPing, mask: true, key: key1, payload: []byte("abc")}.bytes()[:7])
	if p.ctl == nil {
		t.Fatal("no control buffer while a control frame spans chunks")
	}
	p.Release()
	if p.ctl != nil {
		t.Fatal("Release kept the control buffer")
	}
}

func TestParserSize(t *testing.T) {
	size := unsafe.Sizeof(Parser{})
	t.Logf("unsafe.Sizeof(Parser{}) = %d bytes", size)
	if size > 128 {
		t.Errorf("Parser is %d bytes; keep it at most 128", size)
	}
}

type nopHandler struct{ n int }

func (h *nopHandler) FrameHeader(Header, int)      {}
func (h *nopHandler) FrameEnd(Header, int, []byte) {}
func (h *nopHandler) Message(m Message)            { h.n += len(m.Prefix) }
func (h *nopHandler) ProtocolError(error)          {}

func TestInitReleaseZero(t *testing.T) {
	var p Parser
	p.Release()
	p.Feed([]byte{0x81, 0x00}) // zero parser ignores input (no handler)
	p.Init(Options{}, &recorder{})
	p.Release()
	p.Release()
	p.Feed([]byte{0x81, 0x00}) // released parser ignores input
	h := &nopHandler{}
	if allocs := testing.AllocsPerRun(100, func() { p.Init(Options{PrefixLimit: 10}, h) }); allocs != 0 && !raceEnabled {
		t.Errorf("Init allocates %v", allocs)
	}
}

func TestOpcodeString(t *testing.T) {
	for op, want := range map[Opcode]string{OpContinuation: "continuation", OpText: "text", OpBinary: "binary", OpClose: "close", OpPing: "ping", OpPong: "pong", 3: "opcode(3)"} {
		if op.String() != want {
			t.Errorf("%d: %q", op, op.String())
		}
	}
}

func ones(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = 1
	}
	return s
}

// TestReleaseFromHandler: a handler may Release the parser from any
// callback; Feed then returns and nothing is held.
func TestReleaseFromHandler(t *testing.T) {
	base := runtime.NumGoroutine()
	c := newDeflater(false).compress(bytes.Repeat([]byte("0123456789"), 1000))
	stream := append(multiFrame(), frame{fin: true, rsv1: true, op: OpBinary, mask: true, key: key1, payload: c}.bytes()...)
	stream = append(stream, 0xf3) // a protocol error at the end
	for call := 0; ; call++ {
		var p Parser
		n := 0
		release := func() {
			if n == call {
				p.Release()
			}
			n++
		}
		p.Init(Options{ExpectMasked: true, PrefixLimit: 16, Deflate: &DeflateParams{}}, &funcHandler{
			header: func(Header, int) { release() },
			end:    func(Header, int, []byte) { release() },
			msg:    func(Message) { release() },
			perr:   func(error) { release() },
		})
		for i := 0; i < len(stream); i += 100 {
			p.Feed(stream[i:min(i+100, len(stream))])
		}
		if n <= call {
			break // every callback was tried
		}
		if n != call+1 || p.prefix != nil || p.ctl != nil || p.inf != nil || p.win != nil || p.AtBoundary() {
			t.Fatalf("release in call %d: %d calls, parser holds %v %v %v %v", call, n, p.prefix, p.ctl, p.inf, p.win)
		}
	}
	goroutines(t, base)
}
