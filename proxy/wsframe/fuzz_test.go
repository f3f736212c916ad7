package wsframe

import (
	"bytes"
	"testing"
)

var fuzzLimits = [8]int{0, 1, 3, 5, 64, 125, 1024, 4096}
var fuzzWindowBits = [4]int{0, 8, 9, 12}

// fuzzOptions maps one byte to Options: bit 0 ExpectMasked (and
// LimitInflate, as the proxy's client direction has both), bit 1 deflate,
// bit 2 no context takeover, bits 3-4 window bits, bits 5-7 prefix limit.
func fuzzOptions(b byte) Options {
	o := Options{ExpectMasked: b&1 != 0, LimitInflate: b&1 != 0, PrefixLimit: fuzzLimits[b>>5]}
	if b&2 != 0 {
		o.Deflate = &DeflateParams{NoContextTakeover: b&4 != 0, WindowBits: fuzzWindowBits[(b>>3)&3]}
	}
	return o
}

func fuzzOptionsByte(o Options) byte {
	var b byte
	if o.ExpectMasked {
		b |= 1
	}
	if o.Deflate != nil {
		b |= 2
		if o.Deflate.NoContextTakeover {
			b |= 4
		}
	}
	for i, l := range fuzzLimits {
		if l == o.PrefixLimit {
			b |= byte(i) << 5
		}
	}
	return b
}

// fuzzInput lays out an input: options byte, number of cuts, chunk sizes,
// then the stream.
func fuzzInput(o Options, sizes []byte, stream []byte) []byte {
	b := []byte{fuzzOptionsByte(o), byte(len(sizes))}
	b = append(b, sizes...)
	return append(b, stream...)
}

// FuzzParser feeds an arbitrary stream cut at points taken from the input
// and compares the events with those of the whole-buffer reference parser.
func FuzzParser(f *testing.F) {
	short := [][]byte{[]byte("hello hello hello"), []byte(`{"data":{"sessionId":"abc"}}`), []byte("hello again"), {}}
	bomb2, _ := bombStream(2) // inflates past MaxInflate: ErrInflateLimit, then ErrInflateDisabled
	for _, seed := range []struct {
		o      Options
		sizes  []byte
		stream []byte
	}{
		{Options{ExpectMasked: true, PrefixLimit: 64}, []byte{3, 9, 1, 0, 30}, multiFrame()},
		{Options{ExpectMasked: true, PrefixLimit: 3}, []byte{1, 1, 1, 1, 1, 1, 1, 1}, multiFrame()},
		{Options{PrefixLimit: 1024}, []byte{7, 2}, concat(
			frame{fin: true, op: OpText, payload: []byte("one")},
			frame{op: OpText, payload: []byte("tw")},
			frame{fin: true, op: OpPing, payload: []byte("p")},
			frame{fin: true, op: OpContinuation, payload: []byte("o")},
			frame{fin: true, op: OpClose, payload: []byte{3, 232}})},
		{Options{ExpectMasked: true, PrefixLimit: 64, Deflate: &DeflateParams{}}, []byte{5, 17, 2}, compressedStream(short, false, true)},
		{Options{PrefixLimit: 5, Deflate: &DeflateParams{}}, []byte{40}, compressedStream(short, false, false)},
		{Options{PrefixLimit: 5, Deflate: &DeflateParams{NoContextTakeover: true}}, []byte{1, 2, 3}, compressedStream(short, true, false)},
		{Options{PrefixLimit: 1024, Deflate: &DeflateParams{}}, []byte{200, 100}, compressedStream(chatMessages(4)[:4], false, false)},
		{Options{PrefixLimit: 1, Deflate: &DeflateParams{}}, nil, concat(
			frame{fin: true, rsv1: true, op: OpText, payload: []byte{0xff, 0xff, 0xff}},
			frame{fin: true, rsv1: true, op: OpText, payload: []byte{0x02, 0x00}})},
		{Options{ExpectMasked: true, PrefixLimit: 64, Deflate: &DeflateParams{}}, []byte{100, 7}, bomb2},
		{Options{}, nil, []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}},
		{Options{}, []byte{1}, []byte{0x89, 126, 0, 1, 0}},
	} {
		f.Add(fuzzInput(seed.o, seed.sizes, seed.stream))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		o := fuzzOptions(data[0])
		n := min(int(data[1]&31), len(data)-2)
		sizes := make([]int, n)
		for i, s := range data[2 : 2+n] {
			sizes[i] = int(s)
		}
		checkSplit(t, data[2+n:], o, sizes)
	})
}

// TestFuzzOptions pins the seed layout.
func TestFuzzOptions(t *testing.T) {
	o := Options{ExpectMasked: true, PrefixLimit: 1024, Deflate: &DeflateParams{NoContextTakeover: true}}
	if got := fuzzOptions(fuzzOptionsByte(o)); got.ExpectMasked != o.ExpectMasked || got.PrefixLimit != o.PrefixLimit || !eqParams(got.Deflate, o.Deflate) {
		t.Fatalf("%+v", got)
	}
	if !bytes.Equal(fuzzInput(Options{}, []byte{1}, []byte{9}), []byte{0, 1, 1, 9}) {
		t.Fatal("layout")
	}
}
