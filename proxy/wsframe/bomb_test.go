package wsframe

import (
	"bytes"
	"compress/flate"
	"testing"
)

// deflateBomb returns a permessage-deflate payload (RFC 7692 section 7.2.1:
// sync-flushed, the final 0x00 0x00 0xff 0xff removed) that inflates to
// 64 KiB + mib MiB of zeros, at about 1:1000. It is built cheaply: once the
// window holds only zeros, the blocks that encode 1 MiB of zeros after a
// sync flush decode the same wherever they are repeated.
func deflateBomb(mib int) []byte {
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.BestCompression)
	w.Write(make([]byte, 64<<10))
	w.Flush()
	head := bytes.Clone(buf.Bytes())
	buf.Reset()
	w.Write(make([]byte, 1<<20))
	w.Flush()
	mb := buf.Bytes()
	out := append(head, bytes.Repeat(mb, mib)...)
	return out[:len(out)-4]
}

// bombStream is a masked client stream: the bomb, then a compressed message
// that refers to nothing before it, then a plain one.
func bombStream(mib int) (stream []byte, bombFrameLen int) {
	bomb := frame{fin: true, rsv1: true, op: OpText, mask: true, key: [4]byte{1, 2, 3, 4}, payload: deflateBomb(mib)}.bytes()
	rest := concat(
		frame{fin: true, rsv1: true, op: OpText, mask: true, key: [4]byte{5, 6, 7, 8}, payload: newDeflater(true).compress([]byte(`{"action":"message"}`))},
		frame{fin: true, op: OpText, mask: true, key: [4]byte{9, 9, 9, 9}, payload: []byte(`{"action":"plain"}`)},
	)
	return append(bomb, rest...), len(bomb)
}

// chunks cuts b into pieces of n bytes, as a relay reads them.
func chunks(b []byte, n int) (sizes []int) {
	for i := 0; i < len(b); i += n {
		sizes = append(sizes, min(n, len(b)-i))
	}
	return sizes
}

// TestDeflateBombInflationIsBounded: a message of 64 KiB on the wire that
// inflates to 64 MiB. Without context takeover inflation stops at the
// prefix; with it (LimitInflate, the client direction) at MaxInflate: the
// bomb's prefix is still right, its InflateErr is ErrInflateLimit, and the
// later compressed messages are not inflated (ErrInflateDisabled) since the
// window is lost; plain messages are inspected as before. Either way the
// inflation has ended while most of the bomb is still to come. Without
// LimitInflate (the upstream's direction) the bomb is inflated whole.
func TestDeflateBombInflationIsBounded(t *testing.T) {
	const limit = 4096
	stream, bombLen := bombStream(64)
	zeros := make([]byte, limit)
	for _, tc := range []struct {
		name         string
		noCtx, bound bool
		wantBombErr  error
		wantNextErr  error
		stopsMidBomb bool
	}{
		{"context takeover, limited", false, true, ErrInflateLimit, ErrInflateDisabled, true},
		{"no context takeover", true, true, nil, nil, true},
		{"context takeover, not limited", false, false, nil, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{ExpectMasked: true, PrefixLimit: limit, LimitInflate: tc.bound, Deflate: &DeflateParams{NoContextTakeover: tc.noCtx}}
			var rec recorder
			var p Parser
			p.Init(opts, &rec)
			defer p.Release()
			// A quarter of the bomb, in 32 KiB reads; then the rest.
			quarter := bombLen / 4
			for i := 0; i < quarter; i += 32 << 10 {
				p.Feed(stream[i:min(i+32<<10, quarter)])
			}
			if stopped := p.inf == nil || p.inf.done; stopped != tc.stopsMidBomb {
				t.Fatalf("inflation ended after a quarter of the bomb: %v, want %v", stopped, tc.stopsMidBomb)
			}
			for i := quarter; i < len(stream); i += 32 << 10 {
				p.Feed(stream[i:min(i+32<<10, len(stream))])
			}
			var ms []ev
			for _, e := range rec.evs {
				if e.kind == 'M' {
					ms = append(ms, e)
				}
			}
			if len(ms) != 3 {
				t.Fatalf("events:\n%s", dumpEvents(rec.evs))
			}
			errText := func(err error) string {
				if err == nil {
					return ""
				}
				return err.Error()
			}
			if b := ms[0]; b.err != errText(tc.wantBombErr) || !bytes.Equal(b.data, zeros) || !b.trunc {
				t.Errorf("bomb: err %q prefix %d bytes (zeros: %v) truncated %v; want err %q, %d zeros", b.err, len(b.data), bytes.Equal(b.data, zeros), b.trunc, errText(tc.wantBombErr), limit)
			}
			if n := ms[1]; n.err != errText(tc.wantNextErr) || (tc.wantNextErr == nil && string(n.data) != `{"action":"message"}`) {
				t.Errorf("compressed message after the bomb: %v", n)
			}
			if pl := ms[2]; pl.err != "" || string(pl.data) != `{"action":"plain"}` {
				t.Errorf("plain message after the bomb: %v", pl)
			}
			if got := p.InflateStopped(); got != (tc.wantBombErr != nil) {
				t.Errorf("InflateStopped %v", got)
			}
		})
	}
	// The reference parser agrees, fed whole and in relay-sized reads.
	small, _ := bombStream(2)
	for _, noCtx := range []bool{false, true} {
		opts := Options{ExpectMasked: true, PrefixLimit: limit, LimitInflate: true, Deflate: &DeflateParams{NoContextTakeover: noCtx}}
		checkSplit(t, small, opts, nil)
		checkSplit(t, small, opts, chunks(small, 1500))
	}
}

// BenchmarkDeflateBomb: the CPU of one 1 MB message that inflates to 1 GB,
// fed in 32 KiB reads as the relay reads it. "whole" is the tap before
// LimitInflate (and the upstream's direction today).
func BenchmarkDeflateBomb(b *testing.B) {
	stream, _ := bombStream(1024)
	b.Logf("bomb: %d bytes on the wire, 1 GiB + 64 KiB inflated", len(stream))
	for _, bc := range []struct {
		name string
		o    Options
	}{
		{"context-takeover/whole", Options{ExpectMasked: true, PrefixLimit: 4096, Deflate: &DeflateParams{}}},
		{"context-takeover/limited", Options{ExpectMasked: true, PrefixLimit: 4096, LimitInflate: true, Deflate: &DeflateParams{}}},
		{"no-context-takeover", Options{ExpectMasked: true, PrefixLimit: 4096, LimitInflate: true, Deflate: &DeflateParams{NoContextTakeover: true}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(stream)))
			for range b.N {
				var p Parser
				p.Init(bc.o, &nopHandler{})
				for i := 0; i < len(stream); i += 32 << 10 {
					p.Feed(stream[i:min(i+32<<10, len(stream))])
				}
				p.Release()
			}
		})
	}
}
