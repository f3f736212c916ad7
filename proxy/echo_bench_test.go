package proxy

import (
	"bufio"
	"io"
	"net"
	"testing"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// echoRig is one proxied WebSocket whose client and upstream are raw
// sockets that allocate nothing themselves: the client writes a prebuilt
// masked frame, the upstream reads it and answers with the same message
// unmasked, the client reads the answer. Through startProxy it runs on the
// event loop, or on the goroutine relay under PROXY_TEST_RELAY=goroutines.
type echoRig struct {
	client   net.Conn
	clientBr *bufio.Reader
	request  []byte // masked, as a client sends it
	answer   []byte // the echo the client reads back
	buf      []byte
}

func newEchoRig(tb testing.TB, size int) *echoRig {
	tb.Helper()
	upAddr, ups := rawUpstream(tb)
	tp := startProxy(tb, upAddr, func(o *Options) {
		o.Observer = event.Nop{} // the recorder copies every frame; presence has its own benchmarks
	})
	client, br := rawDial(tb, tp.addr, "/ws?sessionId=bench", nil)
	up := acceptRaw(tb, ups)
	r := &echoRig{client: client, clientBr: br, request: textFrame(size, true), answer: textFrame(size, false)}
	r.buf = make([]byte, len(r.answer))
	go func() {
		in := make([]byte, len(r.request))
		for {
			if _, err := io.ReadFull(up.br, in); err != nil {
				return
			}
			if _, err := up.Write(r.answer); err != nil {
				return
			}
		}
	}()
	r.roundTrip(tb) // the connection is open and relaying before anything is counted
	return r
}

// roundTrip sends one message and reads its echo.
func (r *echoRig) roundTrip(tb testing.TB) {
	if _, err := r.client.Write(r.request); err != nil {
		tb.Fatal(err)
	}
	if _, err := io.ReadFull(r.clientBr, r.buf); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkProxyEcho is the relay's whole hot path through a real proxy
// and real sockets: each op is one message relayed each way, read into a
// pooled buffer, tapped and written on. allocs/op counts the whole process
// (the raw peers allocate nothing), so 0 means the relay allocates nothing
// per message (docs/ARCHITECTURE.md, "Memory per connection").
func benchProxyEcho(b *testing.B, size int) {
	r := newEchoRig(b, size)
	b.SetBytes(int64(len(r.request) + len(r.answer)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		r.roundTrip(b)
	}
}

func BenchmarkProxyEcho128(b *testing.B) { benchProxyEcho(b, 128) }
func BenchmarkProxyEcho4K(b *testing.B)  { benchProxyEcho(b, 4096) }
