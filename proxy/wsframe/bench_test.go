package wsframe

import "testing"

// benchStream is a stream and the chunks a relay would read it in.
type benchStream struct {
	stream []byte
	chunks [][]byte
}

// byFrames cuts a stream into chunks of n frames each (n = 1: one message per read, as chat traffic arrives).
func byFrames(frames [][]byte, n int) benchStream {
	var s benchStream
	for i := 0; i < len(frames); i += n {
		var c []byte
		for _, f := range frames[i:min(i+n, len(frames))] {
			c = append(c, f...)
		}
		s.chunks = append(s.chunks, c)
		s.stream = append(s.stream, c...)
	}
	return s
}

// bySize cuts the concatenated frames into chunks of size bytes.
func bySize(frames [][]byte, size int) benchStream {
	var s benchStream
	for _, f := range frames {
		s.stream = append(s.stream, f...)
	}
	for i := 0; i < len(s.stream); i += size {
		s.chunks = append(s.chunks, s.stream[i:min(i+size, len(s.stream))])
	}
	return s
}

func runBench(b *testing.B, s benchStream, o Options) {
	var p Parser
	h := &nopHandler{}
	p.Init(o, h)
	defer p.Release()
	b.SetBytes(int64(len(s.stream)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for _, c := range s.chunks {
			p.Feed(c)
		}
	}
	b.StopTimer()
	if p.Failed() {
		b.Fatal("protocol error")
	}
}

func BenchmarkParser(b *testing.B) {
	chat := chatMessages(200)[:200]
	var small, smallUnmasked [][]byte
	for i, m := range chat {
		small = append(small, frame{fin: true, op: OpText, mask: true, key: [4]byte{byte(i), 1, 2, 3}, payload: m}.bytes())
		smallUnmasked = append(smallUnmasked, frame{fin: true, op: OpText, payload: m}.bytes())
	}
	bin := make([]byte, 64<<10)
	for i := range bin {
		bin[i] = byte(i * 7)
	}
	var big [][]byte
	for i := range 16 {
		big = append(big, frame{fin: true, op: OpBinary, mask: true, key: [4]byte{byte(i), 1, 2, 3}, payload: bin}.bytes())
	}
	compressed := func(noCtx bool) [][]byte {
		d := newDeflater(noCtx)
		var fs [][]byte
		for i, m := range chat {
			fs = append(fs, frame{fin: true, rsv1: true, op: OpText, mask: true, key: [4]byte{byte(i), 1, 2, 3}, payload: d.compress(m)}.bytes())
		}
		return fs
	}
	ctx, noCtx := compressed(false), compressed(true)
	inspect := Options{ExpectMasked: true, PrefixLimit: 1024}
	deflateCtx := Options{ExpectMasked: true, PrefixLimit: 1024, Deflate: &DeflateParams{}}
	deflateNoCtx := Options{ExpectMasked: true, PrefixLimit: 1024, Deflate: &DeflateParams{NoContextTakeover: true}}

	for _, bc := range []struct {
		name string
		s    benchStream
		o    Options
	}{
		{"small-text/masked/1KiB-inspect/msg-per-read", byFrames(small, 1), inspect},
		{"small-text/masked/1KiB-inspect/32KiB-reads", bySize(small, 32<<10), inspect},
		{"small-text/unmasked/1KiB-inspect/msg-per-read", byFrames(smallUnmasked, 1), Options{PrefixLimit: 1024}},
		{"small-text/masked/no-inspect/msg-per-read", byFrames(small, 1), Options{ExpectMasked: true}},
		{"binary-64KiB/masked/1KiB-inspect/32KiB-reads", bySize(big, 32<<10), inspect},
		{"compressed/context-takeover/msg-per-read", byFrames(ctx, 1), deflateCtx},
		{"compressed/context-takeover/7-byte-reads", bySize(ctx, 7), deflateCtx},
		{"compressed/context-takeover/2KiB-reads", bySize(ctx, 2048), deflateCtx},
		{"compressed/no-context-takeover/msg-per-read", byFrames(noCtx, 1), deflateNoCtx},
		{"compressed/no-context-takeover/2KiB-reads", bySize(noCtx, 2048), deflateNoCtx},
		{"compressed/not-inspected/msg-per-read", byFrames(ctx, 1), Options{ExpectMasked: true, Deflate: &DeflateParams{}}},
	} {
		b.Run(bc.name, func(b *testing.B) { runBench(b, bc.s, bc.o) })
	}
}

// BenchmarkInflatedBytes reports the inflated throughput of the compressed
// chat stream, for comparison with the wire figures above.
func BenchmarkInflatedBytes(b *testing.B) {
	chat := chatMessages(200)[:200]
	d := newDeflater(false)
	var fs [][]byte
	total := 0
	for _, m := range chat {
		fs = append(fs, frame{fin: true, rsv1: true, op: OpText, payload: d.compress(m)}.bytes())
		total += len(m)
	}
	s := byFrames(fs, 1)
	b.Logf("%d messages: %d bytes inflated, %d on the wire (%.0f%%)", len(chat), total, len(s.stream), 100*float64(len(s.stream))/float64(total))
	var p Parser
	p.Init(Options{PrefixLimit: 1024, Deflate: &DeflateParams{}}, &nopHandler{})
	defer p.Release()
	b.SetBytes(int64(total))
	b.ReportAllocs()
	for range b.N {
		for _, c := range s.chunks {
			p.Feed(c)
		}
	}
}
