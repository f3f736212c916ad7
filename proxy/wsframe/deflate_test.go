package wsframe

import (
	"bytes"
	"compress/flate"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gorilla/websocket"
)

func TestParseDeflateExtension(t *testing.T) {
	tests := []struct {
		in       []string
		c2s, s2c *DeflateParams
	}{
		{nil, nil, nil},
		{[]string{""}, nil, nil},
		{[]string{"x-webkit-deflate-frame"}, nil, nil},
		{[]string{"permessage-deflate"}, &DeflateParams{}, &DeflateParams{}},
		{[]string{"Permessage-Deflate ; Server_No_Context_Takeover"}, &DeflateParams{}, &DeflateParams{NoContextTakeover: true}},
		{[]string{"permessage-deflate; server_no_context_takeover; client_no_context_takeover"},
			&DeflateParams{NoContextTakeover: true}, &DeflateParams{NoContextTakeover: true}},
		{[]string{`foo; a="x,y", permessage-deflate; client_max_window_bits=10; server_max_window_bits="12"`},
			&DeflateParams{WindowBits: 10}, &DeflateParams{WindowBits: 12}},
		{[]string{"foo", "permessage-deflate;client_max_window_bits=99;server_max_window_bits=x"},
			&DeflateParams{}, &DeflateParams{}},
		{[]string{"permessage-deflate; client_max_window_bits", "permessage-deflate; server_no_context_takeover"},
			&DeflateParams{}, &DeflateParams{}},
	}
	for _, tt := range tests {
		c2s, s2c := ParseDeflateExtension(tt.in)
		if !eqParams(c2s, tt.c2s) || !eqParams(s2c, tt.s2c) {
			t.Errorf("%q: got %+v %+v, want %+v %+v", tt.in, c2s, s2c, tt.c2s, tt.s2c)
		}
	}
}

func eqParams(a, b *DeflateParams) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func TestWindowBits(t *testing.T) {
	for in, want := range map[int]uint8{0: 15, -1: 15, 7: 15, 8: 9, 9: 9, 12: 12, 15: 15, 16: 15} {
		if got := windowBits(in); got != want {
			t.Errorf("windowBits(%d) = %d, want %d", in, got, want)
		}
	}
}

func TestAppendWindow(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, size := range []int{512, 1 << 12, 1 << 15} {
		var w, all []byte
		for range 300 {
			b := make([]byte, rng.IntN(size/3)+rng.IntN(2)*size)
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			w = appendWindow(w, b, size)
			all = append(all, b...)
			want := all[max(0, len(all)-size):]
			if !bytes.Equal(w, want) || cap(w) > size {
				t.Fatalf("size %d: window of %d (cap %d) does not hold the last %d bytes", size, len(w), cap(w), len(want))
			}
		}
	}
}

// chatMessages returns JSON-ish messages that repeat each other, so that
// context takeover compresses later ones against earlier ones.
func chatMessages(n int) [][]byte {
	rng := rand.New(rand.NewPCG(7, 7))
	var msgs [][]byte
	for i := range n {
		var b strings.Builder
		fmt.Fprintf(&b, `{"action":"message","data":{"sessionId":"s-%d","botId":"bot-42","isTransfer":%v,"text":"`, i%3, i%5 == 0)
		for range rng.IntN(40) {
			b.WriteString([]string{"hello ", "world ", "olá ", "tudo bem? ", "obrigado "}[rng.IntN(5)])
		}
		b.WriteString(`"}}`)
		msgs = append(msgs, []byte(b.String()))
	}
	msgs = append(msgs, bytes.Repeat([]byte(`{"k":"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv"}`), 3000)) // ~120 KB, inflates to more than the window
	random := make([]byte, 70000)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	msgs = append(msgs, random) // incompressible: stored blocks
	msgs = append(msgs, msgs[0], msgs[1], []byte{})
	return msgs
}

// compressedStream encodes msgs as permessage-deflate frames, fragmenting
// some and putting a ping between fragments.
func compressedStream(msgs [][]byte, noCtx, masked bool) []byte {
	d := newDeflater(noCtx)
	rng := rand.New(rand.NewPCG(1, 2))
	var out []byte
	for i, m := range msgs {
		key := [4]byte{byte(i), 0x5a, 0xa5, byte(i * 7)}
		if i%3 == 2 {
			// An uncompressed message in between does not touch the window.
			out = append(out, frame{fin: true, op: OpBinary, mask: masked, key: key, payload: m}.bytes()...)
			continue
		}
		c := d.compress(m)
		if i%4 == 1 && len(c) > 2 {
			cut := rng.IntN(len(c)-1) + 1
			out = append(out, frame{rsv1: true, op: OpText, mask: masked, key: key, payload: c[:cut]}.bytes()...)
			out = append(out, frame{fin: true, op: OpPing, mask: masked, key: key, payload: []byte("between")}.bytes()...)
			out = append(out, frame{op: OpContinuation, mask: masked, key: key}.bytes()...)
			out = append(out, frame{fin: true, op: OpContinuation, mask: masked, key: [4]byte{9, 9, 9, byte(i)}, payload: c[cut:]}.bytes()...)
			continue
		}
		out = append(out, frame{fin: true, rsv1: true, op: OpText, mask: masked, key: key, payload: c}.bytes()...)
	}
	return out
}

// checkMessages checks the Message events against the original messages.
func checkMessages(t *testing.T, evs []ev, msgs [][]byte, limit int) {
	t.Helper()
	i := 0
	for _, e := range evs {
		switch e.kind {
		case 'P':
			t.Fatalf("protocol error %s", e.err)
		case 'M':
			if i >= len(msgs) {
				t.Fatalf("extra message %v", e)
			}
			m := msgs[i]
			want := m[:min(len(m), limit)]
			if e.err != "" || !bytes.Equal(e.data, want) || e.trunc != (len(m) > limit) {
				t.Fatalf("message %d (%d bytes): got %v, want prefix %q truncated=%v", i, len(m), e, want, len(m) > limit)
			}
			i++
		}
	}
	if i != len(msgs) {
		t.Fatalf("%d messages, want %d", i, len(msgs))
	}
}

func TestDeflate(t *testing.T) {
	msgs := chatMessages(30)
	for _, noCtx := range []bool{false, true} {
		for _, masked := range []bool{false, true} {
			stream := compressedStream(msgs, noCtx, masked)
			for _, limit := range []int{1, 100, 1024, 200000} {
				t.Run(fmt.Sprintf("noCtx=%v/masked=%v/limit=%d", noCtx, masked, limit), func(t *testing.T) {
					opts := Options{ExpectMasked: masked, PrefixLimit: limit, Deflate: &DeflateParams{NoContextTakeover: noCtx}}
					checkMessages(t, feedAll(t, stream, opts), msgs, limit)
					rng := rand.New(rand.NewPCG(uint64(limit), 5))
					for _, maxChunk := range []int{2, 7, 100, 1500, 20000} {
						var sizes []int
						for n := 0; n < len(stream); {
							s := rng.IntN(maxChunk)
							sizes = append(sizes, s)
							n += s
						}
						checkMessages(t, feedSplit(t, stream, opts, sizes, nil), msgs, limit)
						checkSplit(t, stream, opts, sizes)
					}
				})
			}
		}
	}
}

// TestDeflateTinyChunks feeds compressed messages one byte at a time, and a
// short compressed stream split at every point.
func TestDeflateTinyChunks(t *testing.T) {
	msgs := chatMessages(6)[:6]
	for _, noCtx := range []bool{false, true} {
		opts := Options{ExpectMasked: true, PrefixLimit: 64, Deflate: &DeflateParams{NoContextTakeover: noCtx}}
		stream := compressedStream(msgs, noCtx, true)
		checkMessages(t, feedSplit(t, stream, opts, ones(len(stream)), nil), msgs, 64)

		short := compressedStream([][]byte{[]byte("hello hello hello"), []byte("hello again"), []byte("hello")}, noCtx, true)
		checkEverySplit(t, short, opts)
	}
}

// TestDeflateNoInspection: with PrefixLimit 0 nothing is inflated and no
// window is kept.
func TestDeflateNoInspection(t *testing.T) {
	msgs := chatMessages(5)
	stream := compressedStream(msgs, false, false)
	var p Parser
	var n int
	p.Init(Options{Deflate: &DeflateParams{}}, &funcHandler{msg: func(m Message) {
		if m.Prefix != nil || m.InflateErr != nil {
			t.Fatalf("message %+v", m)
		}
		n++
	}})
	p.Feed(stream)
	if n != len(msgs) || p.win != nil || p.inf != nil {
		t.Fatalf("%d messages, window %d bytes", n, len(p.win))
	}
}

func TestInflateError(t *testing.T) {
	d := newDeflater(false)
	good1 := d.compress([]byte("first message, first message"))
	good2 := d.compress([]byte("second message refers to the first message"))
	bad := []byte{0xff, 0xff, 0xff, 0xff, 0xff} // invalid block type
	for _, noCtx := range []bool{false, true} {
		nd := newDeflater(true)
		independent := nd.compress([]byte("independent"))
		stream := concat(
			frame{fin: true, rsv1: true, op: OpText, payload: good1},
			frame{fin: true, rsv1: true, op: OpText, payload: bad},
			frame{fin: true, op: OpText, payload: []byte("plain")},
			frame{fin: true, rsv1: true, op: OpText, payload: independent},
			frame{fin: true, rsv1: true, op: OpText, payload: good2},
		)
		opts := Options{PrefixLimit: 100, Deflate: &DeflateParams{NoContextTakeover: noCtx}}
		evs := feedAll(t, stream, opts)
		var ms []ev
		for _, e := range evs {
			if e.kind == 'M' {
				ms = append(ms, e)
			}
		}
		if len(ms) != 5 {
			t.Fatalf("events:\n%s", dumpEvents(evs))
		}
		if ms[0].err != "" || string(ms[0].data) != "first message, first message" {
			t.Fatalf("first: %v", ms[0])
		}
		if ms[1].err == "" || ms[1].data != nil {
			t.Fatalf("bad message: %v", ms[1])
		}
		if string(ms[2].data) != "plain" {
			t.Fatalf("plain message after the error: %v", ms[2])
		}
		if noCtx {
			if ms[3].err != "" || string(ms[3].data) != "independent" {
				t.Fatalf("noCtx: message after the error: %v", ms[3])
			}
		} else {
			if ms[3].err != ErrInflateDisabled.Error() || ms[4].err != ErrInflateDisabled.Error() {
				t.Fatalf("context takeover: later messages %v %v", ms[3], ms[4])
			}
		}
		checkEverySplit(t, stream, opts)
	}
}

// TestDeflateTruncatedStream: a message that ends in the middle of a block
// is an inflate error, not a hang.
func TestDeflateTruncatedStream(t *testing.T) {
	c := newDeflater(true).compress(bytes.Repeat([]byte("abcdefgh12345678"), 100))
	for cut := 1; cut < len(c); cut++ {
		stream := frame{fin: true, rsv1: true, op: OpBinary, payload: c[:cut]}.bytes()
		opts := Options{PrefixLimit: 4096, Deflate: &DeflateParams{}}
		checkSplit(t, stream, opts, []int{3, 1})
	}
}

// goroutines waits for the number of goroutines to drop to want.
func goroutines(t *testing.T, want int) {
	t.Helper()
	for range 200 {
		if runtime.NumGoroutine() <= want {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%d goroutines, want %d", runtime.NumGoroutine(), want)
}

// TestInflaterGoroutine: a compressed message split over chunks runs an
// inflating goroutine that ends with the message, on Release, and on a
// protocol error.
func TestInflaterGoroutine(t *testing.T) {
	base := runtime.NumGoroutine()
	c := newDeflater(false).compress(bytes.Repeat([]byte("0123456789"), 1000))
	stream := frame{fin: true, rsv1: true, op: OpBinary, payload: c}.bytes()
	opts := Options{PrefixLimit: 10, Deflate: &DeflateParams{}}
	for _, end := range []string{"message", "release", "error"} {
		var p Parser
		p.Init(opts, &recorder{})
		p.Feed(stream[:len(stream)/2])
		if p.inf == nil || !p.inf.async || p.inf.done {
			t.Fatalf("%s: no inflating goroutine mid-message", end)
		}
		switch end {
		case "message":
			p.Feed(stream[len(stream)/2:])
		case "release":
			p.Release()
		case "error":
			p.Feed(stream[len(stream)/2:])
			p.Feed(frame{fin: true, rsv1: true, op: OpText, payload: c[:len(c)/2]}.bytes())
			p.Feed([]byte{0x83}) // reserved opcode
			if !p.Failed() {
				t.Fatal("no protocol error")
			}
		}
		if p.inf != nil || p.prefix != nil {
			t.Fatalf("%s: parser still holds the inflater", end)
		}
		goroutines(t, base)
		p.Release()
	}
}

// captureConn records the bytes a client connection reads and writes.
type captureConn struct {
	net.Conn
	mu   sync.Mutex
	r, w bytes.Buffer
}

func (c *captureConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	c.r.Write(b[:n])
	c.mu.Unlock()
	return n, err
}

func (c *captureConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.w.Write(b)
	c.mu.Unlock()
	return c.Conn.Write(b)
}

// streams returns the WebSocket bytes after the HTTP handshake each way.
func (c *captureConn) streams(t *testing.T) (c2s, s2c []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	after := func(b []byte) []byte {
		i := bytes.Index(b, []byte("\r\n\r\n"))
		if i < 0 {
			t.Fatal("no handshake in the capture")
		}
		return bytes.Clone(b[i+4:])
	}
	return after(c.w.Bytes()), after(c.r.Bytes())
}

// checkReal feeds both captured directions to parsers configured from the
// negotiated extension header, whole and in random chunks.
func checkReal(t *testing.T, cc *captureConn, ext []string, msgs [][]byte, wantCompressed bool) {
	c2sParams, s2cParams := ParseDeflateExtension(ext)
	if (c2sParams != nil) != wantCompressed {
		t.Fatalf("extension %q", ext)
	}
	t.Logf("negotiated %q", ext)
	c2s, s2c := cc.streams(t)
	for dir, tc := range map[string]struct {
		stream []byte
		opts   Options
	}{
		"client->server": {c2s, Options{ExpectMasked: true, PrefixLimit: 300, Deflate: c2sParams}},
		"server->client": {s2c, Options{PrefixLimit: 300, Deflate: s2cParams}},
	} {
		rng := rand.New(rand.NewPCG(11, uint64(len(tc.stream))))
		for _, maxChunk := range []int{0, 3, 50, 5000} {
			var sizes []int
			for n := 0; maxChunk > 0 && n < len(tc.stream); {
				s := rng.IntN(maxChunk)
				sizes = append(sizes, s)
				n += s
			}
			evs := feedSplit(t, tc.stream, tc.opts, sizes, nil)
			compressed := 0
			for _, e := range evs {
				if e.kind == 'M' && e.comp {
					compressed++
				}
			}
			if wantCompressed && compressed < len(msgs)/2 {
				t.Fatalf("%s: only %d compressed messages", dir, compressed)
			}
			checkMessages(t, evs, msgs, 300)
			checkSplit(t, tc.stream, tc.opts, sizes)
		}
	}
}

func realMessages() [][]byte {
	msgs := chatMessages(40)
	return append(msgs[:40], msgs[40]) // chat messages and one of ~120 KB
}

// TestCoderWebsocket captures real coder/websocket traffic (the library
// that implements context takeover) and parses it.
func TestCoderWebsocket(t *testing.T) {
	msgs := realMessages()
	modes := map[string]coder.CompressionMode{
		"context-takeover":    coder.CompressionContextTakeover,
		"no-context-takeover": coder.CompressionNoContextTakeover,
		"disabled":            coder.CompressionDisabled,
	}
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, err := coder.Accept(w, r, &coder.AcceptOptions{CompressionMode: mode, CompressionThreshold: 1})
				if err != nil {
					return
				}
				defer c.CloseNow()
				c.SetReadLimit(-1)
				for {
					typ, b, err := c.Read(ctx)
					if err != nil {
						return
					}
					if err := c.Write(ctx, typ, b); err != nil {
						return
					}
				}
			}))
			defer srv.Close()
			var cc *captureConn
			hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				cc = &captureConn{Conn: c}
				return cc, err
			}}}
			c, resp, err := coder.Dial(ctx, srv.URL, &coder.DialOptions{HTTPClient: hc, CompressionMode: mode, CompressionThreshold: 1})
			if err != nil {
				t.Fatal(err)
			}
			c.SetReadLimit(-1)
			for _, m := range msgs {
				if err := c.Write(ctx, coder.MessageText, m); err != nil {
					t.Fatal(err)
				}
				if _, b, err := c.Read(ctx); err != nil || !bytes.Equal(b, m) {
					t.Fatalf("echo: %v", err)
				}
			}
			c.Close(coder.StatusNormalClosure, "bye")
			checkReal(t, cc, resp.Header.Values("Sec-WebSocket-Extensions"), msgs, mode != coder.CompressionDisabled)
		})
	}
}

// TestGorillaWebsocket captures real gorilla/websocket traffic (compression
// without context takeover, the only kind gorilla speaks).
func TestGorillaWebsocket(t *testing.T) {
	msgs := realMessages()
	up := websocket.Upgrader{EnableCompression: true}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			typ, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(typ, b); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	var cc *captureConn
	d := websocket.Dialer{EnableCompression: true, NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		cc = &captureConn{Conn: c}
		return cc, err
	}}
	c, resp, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if err := c.WriteMessage(websocket.TextMessage, m); err != nil {
			t.Fatal(err)
		}
		if _, b, err := c.ReadMessage(); err != nil || !bytes.Equal(b, m) {
			t.Fatalf("echo: %v", err)
		}
	}
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
	c.ReadMessage() // the echoed close
	c.Close()
	checkReal(t, cc, resp.Header.Values("Sec-WebSocket-Extensions"), msgs, true)
}

// TestFlateWriterSizes: messages compressed at every flate level and with
// Huffman-only encoding, to cover stored, fixed and dynamic blocks.
func TestFlateWriterSizes(t *testing.T) {
	msgs := chatMessages(10)
	for _, level := range []int{flate.NoCompression, flate.BestSpeed, flate.DefaultCompression, flate.BestCompression, flate.HuffmanOnly} {
		w, _ := flate.NewWriter(nil, level)
		var buf bytes.Buffer
		w.Reset(&buf)
		var stream []byte
		for _, m := range msgs {
			buf.Reset()
			w.Write(m)
			w.Flush()
			c := buf.Bytes()
			stream = append(stream, frame{fin: true, rsv1: true, op: OpText, payload: c[:len(c)-4]}.bytes()...)
		}
		opts := Options{PrefixLimit: 500, Deflate: &DeflateParams{}}
		checkMessages(t, feedAll(t, stream, opts), msgs, 500)
		checkSplit(t, stream, opts, []int{1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597})
	}
}

// TestDeflateWindowBits: the kept window has the negotiated size. A sender
// that refers further back than it negotiated gets an inflate error.
func TestDeflateWindowBits(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	m1 := make([]byte, 600)
	for i := range m1 {
		m1[i] = byte(rng.Uint32())
	}
	d := newDeflater(false)
	stream := concat(
		frame{fin: true, rsv1: true, op: OpBinary, payload: d.compress(m1)},
		frame{fin: true, rsv1: true, op: OpBinary, payload: d.compress(m1)}, // a match 600 bytes back
	)
	for bits, wantErr := range map[int]bool{9: true, 10: false, 15: false, 0: false} {
		opts := Options{PrefixLimit: 1000, Deflate: &DeflateParams{WindowBits: bits}}
		evs := feedAll(t, stream, opts)
		m := evs[len(evs)-1]
		if (m.err != "") != wantErr || (!wantErr && !bytes.Equal(m.data, m1)) {
			t.Errorf("window bits %d: %v", bits, m)
		}
		checkSplit(t, stream, opts, []int{1, 30, 7, 300, 2})
	}
}

// TestDeflateFinalBlock: a message may end with a BFINAL block (RFC 7692
// section 7.2.3.4 lets senders do so); what follows in the message is ignored.
func TestDeflateFinalBlock(t *testing.T) {
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.BestSpeed)
	w.Write([]byte("final block message"))
	w.Close()
	c := buf.Bytes()
	stream := concat(
		frame{op: OpText, rsv1: true, payload: c},
		frame{fin: true, op: OpContinuation, payload: []byte("trailing garbage")},
		frame{fin: true, op: OpText, payload: []byte("next")},
	)
	for _, noCtx := range []bool{false, true} {
		opts := Options{PrefixLimit: 100, Deflate: &DeflateParams{NoContextTakeover: noCtx}}
		checkMessages(t, feedAll(t, stream, opts), [][]byte{[]byte("final block message"), []byte("next")}, 100)
		checkEverySplit(t, stream, opts)
	}
}
