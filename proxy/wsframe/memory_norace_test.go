//go:build !race

// Memory and allocation figures: the race detector distorts them, so
// these tests are built without it (scripts/test.sh runs them in a second,
// plain pass).

package wsframe

import (
	"bytes"
	"runtime"
	"testing"
	"unsafe"
)

// TestDeflateMemory measures what idle connections keep after one
// compressed message each: the window with context takeover, nothing
// without.
func TestDeflateMemory(t *testing.T) {
	msg := chatMessages(1)[0]
	big := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB: fills the window
	const n = 1000
	for _, tc := range []struct {
		name  string
		noCtx bool
		msg   []byte
		max   float64 // bytes per parser
	}{
		{"context takeover, one chat message", false, msg, 1024},
		{"context takeover, 64 KiB message", false, big, 33 << 10},
		{"no context takeover", true, big, 200},
	} {
		stream := frame{fin: true, rsv1: true, op: OpText, mask: true, key: key1, payload: newDeflater(tc.noCtx).compress(tc.msg)}.bytes()
		opts := Options{ExpectMasked: true, PrefixLimit: 1024, Deflate: &DeflateParams{NoContextTakeover: tc.noCtx}}
		h := &nopHandler{}
		parsers := make([]Parser, n)
		// Warm the pools so that pooled objects are not counted.
		var warm Parser
		warm.Init(opts, h)
		warm.Feed(stream[:len(stream)/2])
		warm.Feed(stream[len(stream)/2:])
		warm.Release()

		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range parsers {
			parsers[i].Init(opts, h)
			parsers[i].Feed(stream[:len(stream)/2]) // split: the goroutine path
			parsers[i].Feed(stream[len(stream)/2:])
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		per := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
		t.Logf("%s: %.0f heap bytes per idle parser (plus %d for the Parser struct)", tc.name, per, unsafe.Sizeof(Parser{}))
		if per > tc.max {
			t.Errorf("%s: %.0f bytes per idle parser, want at most %.0f", tc.name, per, tc.max)
		}
		for i := range parsers {
			parsers[i].Release()
		}
		runtime.KeepAlive(parsers)
	}
}

// TestInflightMemory measures what a compressed message in flight costs
// while its inflating goroutine waits for the rest: the pooled inflater
// (flate reader and output buffer) and the goroutine's stack.
func TestInflightMemory(t *testing.T) {
	msg := bytes.Repeat([]byte(`{"action":"message","data":{"text":"hello world"}}`), 100)
	stream := frame{fin: true, rsv1: true, op: OpText, mask: true, key: key1, payload: newDeflater(true).compress(msg)}.bytes()
	opts := Options{ExpectMasked: true, PrefixLimit: 1024, Deflate: &DeflateParams{}}
	const n = 500
	parsers := make([]Parser, n)
	h := &nopHandler{}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range parsers {
		parsers[i].Init(opts, h)
		parsers[i].Feed(stream[:len(stream)/2])
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
	stack := float64(int64(after.StackInuse)-int64(before.StackInuse)) / n
	t.Logf("compressed message in flight: %.0f heap bytes (inflater, prefix, window so far) + %.0f stack bytes per parser", heap, stack)
	for i := range parsers {
		parsers[i].Feed(stream[len(stream)/2:])
		parsers[i].Release()
	}
}

func TestNoAllocs(t *testing.T) {
	stream := multiFrame()
	unmasked := concat(frame{fin: true, op: OpText, payload: []byte("hello")},
		frame{op: OpText, payload: []byte("hel")}, frame{fin: true, op: OpContinuation, payload: []byte("lo")})
	for _, tc := range []struct {
		name   string
		stream []byte
		opts   Options
		split  int
	}{
		{"masked whole", stream, Options{ExpectMasked: true, PrefixLimit: 1024}, 0},
		{"masked split", stream, Options{ExpectMasked: true, PrefixLimit: 1024}, 7},
		{"unmasked", unmasked, Options{PrefixLimit: 1024}, 0},
		{"no inspection", stream, Options{ExpectMasked: true}, 3},
	} {
		var p Parser
		p.Init(tc.opts, &nopHandler{})
		allocs := testing.AllocsPerRun(1000, func() {
			if tc.split == 0 {
				p.Feed(tc.stream)
				return
			}
			for i := 0; i < len(tc.stream); i += tc.split {
				p.Feed(tc.stream[i:min(i+tc.split, len(tc.stream))])
			}
		})
		// The close frame at the end does not stop parsing: the stream repeats.
		if allocs != 0 {
			t.Errorf("%s: %v allocs per stream, want 0", tc.name, allocs)
		}
		p.Release()
	}
	// The control frames a relay writes itself, into a buffer with room.
	key := [4]byte{1, 2, 3, 4}
	payload := []byte("12345678")
	buf := make([]byte, 0, 16)
	for _, tc := range []struct {
		name  string
		write func()
	}{
		{"AppendClose", func() { buf = AppendClose(buf[:0], CloseGoingAway, nil) }},
		{"AppendClose masked", func() { buf = AppendClose(buf[:0], CloseGoingAway, &key) }},
		{"AppendPing", func() { buf = AppendPing(buf[:0], payload, nil) }},
		{"AppendPing masked", func() { buf = AppendPing(buf[:0], payload, &key) }},
	} {
		if allocs := testing.AllocsPerRun(1000, tc.write); allocs != 0 {
			t.Errorf("%s: %v allocs per frame, want 0", tc.name, allocs)
		}
	}
}
