package proxy

import (
	"io"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// Benchmarks of the relay's hot path: one chat message read from a peer,
// tapped and written to the other over real loopback sockets whose far ends
// are drained. They report allocs/op: the hot path allocates nothing per
// message (docs/ARCHITECTURE.md, "Memory per connection").

// drainedPair is a loopback TCP connection whose far end is read and
// discarded by a goroutine: writes to the near end never block for long.
func drainedPair(b *testing.B) net.Conn {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	near, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	far := <-accepted
	if far == nil {
		b.Fatal("accept failed")
	}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := far.Read(buf); err != nil {
				return
			}
		}
	}()
	b.Cleanup(func() { near.Close(); far.Close() })
	return near
}

// textFrame is a text frame with a payload of n bytes, masked when mask is set.
func textFrame(n int, mask bool) []byte {
	payload := []byte(`{"action":"message","data":{"text":"` + strings.Repeat("x", max(0, n-40)) + `"}}`)
	payload = payload[:n]
	f := []byte{0x81}
	var m byte
	if mask {
		m = 0x80
	}
	switch {
	case n < 126:
		f = append(f, m|byte(n))
	default:
		f = append(f, m|126, byte(n>>8), byte(n))
	}
	if mask {
		key := [4]byte{1, 2, 3, 4}
		f = append(f, key[:]...)
		for i := range payload {
			payload[i] ^= key[i%4]
		}
	}
	return append(f, payload...)
}

func benchConn(b *testing.B, probe time.Duration) *wsConn {
	b.Helper()
	u, _ := url.Parse("http://127.0.0.1:1")
	sessions, err := ParseSources("SESSION_FROM", "query:sessionId,frame:data.sessionId")
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(Options{Upstream: u, InspectBytes: 4096, SessionFrom: sessions, ProbeInterval: probe, ProbeTimeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	c := p.newWSConn(drainedPair(b), drainedPair(b), event.Identity{SessionID: "s1"}, nil, true)
	b.Cleanup(func() { c.fromClient.parser.Release(); c.fromUpstream.parser.Release() })
	return c
}

func benchRelay(b *testing.B, size int, fromClient bool) {
	c := benchConn(b, 25*time.Second)
	frame := textFrame(size, fromClient)
	relay := c.relayFromUpstream
	if fromClient {
		relay = c.relayFromClient
	}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		bp := relayBufs.Get().(*[]byte)
		n := copy((*bp)[headroom:], frame)
		if err := relay(*bp, n); err != nil {
			b.Fatal(err)
		}
		relayBufs.Put(bp)
	}
}

func BenchmarkRelayFromClient128(b *testing.B)   { benchRelay(b, 128, true) }
func BenchmarkRelayFromClient4K(b *testing.B)    { benchRelay(b, 4096, true) }
func BenchmarkRelayFromUpstream128(b *testing.B) { benchRelay(b, 128, false) }
func BenchmarkRelayFromUpstream4K(b *testing.B)  { benchRelay(b, 4096, false) }

// BenchmarkSocketRead is the read side: one message waiting on a socket,
// read into a pooled buffer through RawConn.
func BenchmarkSocketRead(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); done <- c }()
	w, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	r := <-done
	defer r.Close()
	frame := textFrame(128, true)
	sr := newSocketReader(r)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := w.Write(frame); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < len(frame); {
			bp, n, err := sr.read()
			if err != nil && err != io.EOF {
				b.Fatal(err)
			}
			got += n
			relayBufs.Put(bp)
		}
	}
}
