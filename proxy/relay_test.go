package proxy

// Tests of relay.go and tap.go: each direction's bytes pass unchanged
// (but for the probe's own frames) while the taps see the messages.

import (
	"bufio"
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// TestRelayIsByteExactButForProbeFrames: a raw client and a raw upstream
// exchange many frames written at awkward split points (headers cut, pongs
// cut mid-header, pongs that are not the probe's with the probe's payload
// length, fragmented messages with control frames inside, frames of 64 KiB
// and more written slowly) while the probe runs every 30 ms. What the
// upstream receives must equal what the client sent minus the Pongs
// answering the probe; what the client receives must equal what the upstream
// sent plus the probe's Pings, each at a frame boundary (the client's stream
// must parse).
func TestRelayIsByteExactButForProbeFrames(t *testing.T) {
	up, conns := rawUpstream(t)
	tp := startProxy(t, up, func(o *Options) {
		o.ProbeInterval = 30 * time.Millisecond
		o.ProbeTimeout = 10 * time.Second // never reached: the client answers
		o.InspectClient, o.InspectServer = true, true
	})
	c, cbr := rawDial(t, tp.addr, "/ws?sessionId=bytes", nil)
	u := acceptRaw(t, conns)

	// The upstream records what it receives and notes the client's Close.
	upGotClose := make(chan struct{})
	var closeOnce sync.Once
	upRecv := streamReader(u.br, func(f rawFrame) {
		if f.op == 0x8 {
			closeOnce.Do(func() { close(upGotClose) })
		}
	})

	// The client records what it receives and queues the Pings to answer.
	pings := make(chan []byte, 1024)
	upstreamDone := make(chan struct{})
	probeInFragments := make(chan struct{})
	var inMsg, sawProbeInFragments bool
	clRecv := streamReader(cbr, func(f rawFrame) {
		switch {
		case f.op == 0x9:
			pings <- f.payload
			if isProbePing(f) && inMsg && !sawProbeInFragments {
				sawProbeInFragments = true
				close(probeInFragments)
			}
		case f.op == 0x1 && string(f.payload) == "END":
			close(upstreamDone)
		}
		if f.op < 0x8 {
			inMsg = !f.fin
		}
	})
	// The relayed connection, to see when a probe Ping waits for a frame
	// boundary.
	tp.rec.wait(t, "ConnOpened", isKind(evOpened))
	wc := onlyConn(t, tp.p)

	// The client's script. Pings are answered between blocks, at the
	// client's own frame boundaries, with Pongs cut at awkward points.
	cw := &pacedWriter{t: t, c: c}
	type span struct{ from, to int }
	var probePongs []span
	answered := 0
	answer := func() {
		for {
			select {
			case p := <-pings:
				pong := frame(true, 0xA, true, p)
				if len(p) == probeLen {
					probePongs = append(probePongs, span{len(cw.sent), len(cw.sent) + len(pong)})
				}
				cut := []int{1, 2, 6, 13, 14}[answered%5]
				answered++
				cw.write(pong, 2*time.Millisecond, cut, 14)
			default:
				return
			}
		}
	}

	// The upstream's script.
	uw := &pacedWriter{t: t, c: u}
	bigUp := frame(true, 0x2, false, randomBytes(256<<10))
	upScriptDone := make(chan struct{})
	var bigHalfSent atomic.Bool
	pingDueMidFrame := make(chan struct{})
	go func() {
		defer close(upScriptDone)
		// The big frame's header cut after 3 bytes, then its payload in
		// pieces; in the middle it waits until a probe Ping is due and
		// must wait for the frame's end.
		half := len(bigUp) / 2
		uw.write(bigUp[:half], 2*time.Millisecond, 3, 7000)
		bigHalfSent.Store(true)
		select {
		case <-pingDueMidFrame:
		case <-t.Context().Done():
			return // the test failed
		}
		uw.write(bigUp[half:], 2*time.Millisecond, 7000)
		for i := 0; i < 10; i++ {
			f := frame(true, 0x1, false, []byte(fmt.Sprintf("u-msg-%d", i)))
			uw.write(f, 2*time.Millisecond, 1+i%(len(f)-1))
		}
		uw.write(frame(true, 0x9, false, []byte("UPNG1")), 0)
		uw.write(frame(false, 0x1, false, []byte("frag-1")), 0)
		select { // a probe Ping falls between the fragments
		case <-probeInFragments:
		case <-time.After(waitTime):
			t.Error("no probe Ping between the fragments of a message")
		}
		var tail []byte
		tail = append(tail, frame(true, 0x9, false, []byte("UPNG2"))...)
		tail = append(tail, frame(false, 0x0, false, []byte("frag-2"))...)
		tail = append(tail, frame(true, 0x0, false, []byte("frag-3"))...)
		uw.write(tail, time.Millisecond, 4, 9)
		uw.write(frame(true, 0x1, false, bytes.Repeat([]byte("x"), 70000)), 3*time.Millisecond, 5, 20000)
		uw.write(frame(true, 0xA, false, []byte("unsolic")), 0) // an unsolicited pong from the upstream
		uw.write(frame(true, 0x1, false, []byte("END")), 0)
		select {
		case <-upGotClose:
		case <-time.After(waitTime):
			t.Error("the upstream never got the client's Close")
		}
		uw.write(frame(true, 0x8, false, closePayload(1000, "")), 0)
		u.Conn.(*net.TCPConn).CloseWrite()
	}()

	// Until a probe Ping waits in the middle of the upstream's big frame,
	// the client only answers Pings (a probe sent before the frame must not
	// keep the next one from becoming due); then the upstream goes on. The
	// wait is here, not in the upstream's goroutine: Eventually fails the
	// test with t.Fatalf.
	testutil.Eventually(t, waitTime, "a probe Ping due in the middle of the upstream's 256 KiB frame", func() bool {
		answer()
		return bigHalfSent.Load() && wc.pingIsPending()
	})
	close(pingDueMidFrame)

	sizes := []int{1, 2, 3, 5, 7, 11, 13, 14, 15, 17, 64}
	for i := 0; i < 30; i++ {
		var block []byte
		block = append(block, frame(true, 0x1, true, []byte(fmt.Sprintf("c-msg-%d", i)))...)
		switch i % 5 {
		case 1: // a Pong that is not the probe's, with the probe's payload length
			block = append(block, frame(true, 0xA, true, []byte("notours!"))...)
		case 2:
			block = append(block, frame(true, 0x9, true, []byte("cping"))...)
		case 3:
			block = append(block, frame(true, 0x2, true, randomBytes(300))...)
		}
		cw.write(block, time.Millisecond, sizes[i%len(sizes):]...)
		answer()
	}
	// A Pong that is not ours, cut mid-header, while a probe may be out.
	cw.write(frame(true, 0xA, true, []byte("notours?")), 3*time.Millisecond, 1, 5, 8)
	answer()
	var frag []byte
	frag = append(frag, frame(false, 0x1, true, []byte("cfrag-1"))...)
	frag = append(frag, frame(true, 0x9, true, []byte("cping"))...)
	frag = append(frag, frame(true, 0x0, true, []byte("cfrag-2"))...)
	cw.write(frag, time.Millisecond, 3, 7, 2)
	answer()
	cw.write(frame(true, 0x2, true, randomBytes(200<<10)), 2*time.Millisecond, 9, 4096) // ~100 ms in flight
	answer()
	for done := false; !done; {
		select {
		case <-upstreamDone:
			done = true
		case p := <-pings:
			pings <- p
			answer()
		case <-time.After(waitTime):
			t.Fatal("the client never got the upstream's END")
		}
	}
	answer()
	cw.write(frame(true, 0x8, true, closePayload(1000, "")), time.Millisecond, 3, 100)
	<-upScriptDone

	var gotClient []byte
	select {
	case gotClient = <-clRecv:
	case <-time.After(waitTime):
		t.Fatal("the client's stream did not end")
	}
	c.Close()
	var gotUp []byte
	select {
	case gotUp = <-upRecv:
	case <-time.After(waitTime):
		t.Fatal("the upstream's stream did not end")
	}

	// Upstream side: the client's bytes minus the probe's Pongs.
	var want []byte
	prev := 0
	for _, s := range probePongs {
		want = append(want, cw.sent[prev:s.from]...)
		prev = s.to
	}
	want = append(want, cw.sent[prev:]...)
	if !bytes.Equal(gotUp, want) {
		t.Errorf("upstream received %d bytes, want %d (client sent %d, %d probe Pongs); first difference at %d",
			len(gotUp), len(want), len(cw.sent), len(probePongs), firstDiff(gotUp, want))
	}

	// Client side: the upstream's bytes plus the probe's Pings at frame boundaries.
	frames, rest := parseFrames(gotClient)
	if len(rest) > 0 {
		t.Errorf("the client's stream ends with %d bytes that are not a whole frame", len(rest))
	}
	var rebuilt []byte
	probes, afterBig := 0, false
	for i, f := range frames {
		if isProbePing(f) {
			probes++
			if i > 0 && bytes.Equal(frames[i-1].raw, bigUp) {
				afterBig = true
			}
			continue
		}
		rebuilt = append(rebuilt, f.raw...)
	}
	if !bytes.Equal(rebuilt, uw.sent) {
		t.Errorf("client received %d bytes besides the probe's Pings, want the upstream's %d; first difference at %d",
			len(rebuilt), len(uw.sent), firstDiff(rebuilt, uw.sent))
	}
	t.Logf("client sent %d bytes, upstream sent %d; %d probe Pings, %d answered Pongs removed", len(cw.sent), len(uw.sent), probes, len(probePongs))
	if probes < 2 { // the two the upstream waited for
		t.Errorf("only %d probe Pings", probes)
	}
	if len(probePongs) < probes-1 {
		t.Errorf("%d probe Pings but only %d answered", probes, len(probePongs))
	}
	if !afterBig {
		t.Error("no probe Ping right after the 256 KiB frame: the probe due during the frame should follow it")
	}
	e := tp.rec.wait(t, "ConnClosed", isKind(evClosed))
	if e.Reason != event.CloseClean {
		t.Errorf("close reason %q", e.Reason)
	}
	// The tap saw the messages: the client's fragmented one whole.
	tp.rec.wait(t, "fragmented client message", func(e obsEvent) bool {
		return e.Kind == evMessage && e.Dir == event.FromClient && string(e.Msg.Prefix) == "cfrag-1cfrag-2"
	})
	tp.rec.wait(t, "fragmented upstream message", func(e obsEvent) bool {
		return e.Kind == evMessage && e.Dir == event.FromServer && string(e.Msg.Prefix) == "frag-1frag-2frag-3"
	})
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// deflater compresses messages as a permessage-deflate sender with context
// takeover does: one deflate stream, each message flushed and its
// 00 00 ff ff tail removed.
type deflater struct {
	buf bytes.Buffer
	w   *flate.Writer
}

func newDeflater() *deflater {
	d := &deflater{}
	d.w, _ = flate.NewWriter(&d.buf, flate.BestSpeed)
	return d
}

func (d *deflater) compress(msg []byte) []byte {
	d.buf.Reset()
	d.w.Write(msg)
	d.w.Flush()
	out := bytes.Clone(d.buf.Bytes())
	return bytes.TrimSuffix(out, []byte{0, 0, 0xff, 0xff})
}

// TestRelayPassesCompressedStreamAndInflatesIt: compressed messages (context
// takeover, some fragmented with a Ping inside, some large) written at
// awkward split points pass unchanged, and the tap inflates each one: the
// observer gets the plain prefix and the ids from a compressed link frame.
func TestRelayPassesCompressedStreamAndInflatesIt(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	upRecv := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Extensions: permessage-deflate\r\nSec-WebSocket-Accept: %s\r\n\r\n", acceptKey(req.Header.Get("Sec-WebSocket-Key")))
		b, _ := io.ReadAll(br)
		upRecv <- b
	}()
	tp := startProxy(t, ln.Addr().String(), func(o *Options) { o.InspectClient = true })
	c, _ := rawDial(t, tp.addr, "/ws", http.Header{"Sec-Websocket-Extensions": {"permessage-deflate"}})
	cw := &pacedWriter{t: t, c: c}
	d := newDeflater()
	var plain [][]byte
	compressed := func(fin bool, msg []byte) []byte {
		f := frame(fin, 0x1, true, d.compress(msg))
		f[0] |= 0x40 // RSV1
		return f
	}
	msgs := [][]byte{
		[]byte(`{"action":"typing","data":{"state":"on"}}`),
		bytes.Repeat([]byte(`{"action":"message","data":{"text":"hello hello hello"}}`), 200),
		[]byte(linkFrame), // refers back into the window
		randomBytes(100 << 10),
	}
	sizes := []int{1, 3, 2, 7, 13, 5, 300, 4096}
	for i, m := range msgs {
		plain = append(plain, m)
		cw.write(compressed(true, m), time.Millisecond, sizes[i:]...)
	}
	// A fragmented compressed message: RSV1 on the first frame only, a
	// Ping between the fragments.
	frag := bytes.Repeat([]byte("fragmented and compressed "), 500)
	z := d.compress(frag)
	first := frame(false, 0x1, true, z[:len(z)/2])
	first[0] |= 0x40
	var f []byte
	f = append(f, first...)
	f = append(f, frame(true, 0x9, true, []byte("ping"))...)
	f = append(f, frame(true, 0x0, true, z[len(z)/2:])...)
	cw.write(f, time.Millisecond, 2, 9, 100, 1000)
	plain = append(plain, frag)
	last := []byte(`{"action":"message","data":{"text":"last one"}}`)
	cw.write(compressed(true, last), 0)
	plain = append(plain, last)

	tp.rec.wait(t, "ConnIdentified", identifiedAs(event.Identity{SessionID: "s1", BotID: "b1"}))
	tp.rec.wait(t, "last message", func(e obsEvent) bool {
		return e.Kind == evMessage && string(e.Msg.Prefix) == string(last)
	})
	var got []obsEvent
	for _, e := range tp.rec.snapshot() {
		if e.Kind == evMessage {
			got = append(got, e)
		}
	}
	if len(got) != len(plain) {
		t.Fatalf("%d messages seen, want %d", len(got), len(plain))
	}
	for i, e := range got {
		want := plain[i][:min(len(plain[i]), 4096)]
		if !bytes.Equal(e.Msg.Prefix, want) || e.Msg.Truncated != (len(plain[i]) > 4096) {
			t.Errorf("message %d: prefix %d bytes (%.30q), truncated %v; want %d bytes (%.30q)", i, len(e.Msg.Prefix), e.Msg.Prefix, e.Msg.Truncated, len(want), want)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	select {
	case b := <-upRecv:
		if !bytes.Equal(b, cw.sent) {
			t.Errorf("upstream got %d bytes, client sent %d; first difference at %d", len(b), len(cw.sent), firstDiff(b, cw.sent))
		}
	case <-time.After(waitTime):
		t.Fatal("upstream stream did not end")
	}
}

// TestRelayFragmentedMessageWithPingInside: a raw client sends a text
// message in three fragments with a Ping between them; the upstream
// (gorilla) gets the whole message and answers the Ping; both come back.
func TestRelayFragmentedMessageWithPingInside(t *testing.T) {
	up, ends := gorillaUpstream(t, websocket.Upgrader{})
	tp := startProxy(t, up, func(o *Options) { o.InspectClient = true })
	c, br := rawDial(t, tp.addr, "/ws?sessionId=frag", nil)
	var out []byte
	out = append(out, frame(false, 0x1, true, []byte("Hello, "))...)
	out = append(out, frame(true, 0x9, true, []byte("mid-message"))...)
	out = append(out, frame(false, 0x0, true, []byte("fragmented "))...)
	out = append(out, frame(true, 0x0, true, []byte("world"))...)
	for i := 0; i < len(out); i += 5 { // awkward writes
		if _, err := c.Write(out[i:min(i+5, len(out))]); err != nil {
			t.Fatal(err)
		}
	}
	var got []rawFrame
	var buf []byte
	c.SetReadDeadline(time.Now().Add(waitTime))
	for len(got) < 2 {
		var b [512]byte
		n, err := br.Read(b[:])
		if err != nil {
			t.Fatalf("read: %v (frames so far %+v)", err, got)
		}
		buf = append(buf, b[:n]...)
		var fs []rawFrame
		fs, buf = parseFrames(buf)
		got = append(got, fs...)
	}
	if got[0].op != 0xA || string(got[0].payload) != "mid-message" {
		t.Errorf("first frame back: op %d %q, want the pong", got[0].op, got[0].payload)
	}
	if got[1].op != 0x1 || !got[1].fin || string(got[1].payload) != "Hello, fragmented world" {
		t.Errorf("second frame back: op %d %q", got[1].op, got[1].payload)
	}
	m := tp.rec.wait(t, "client message", func(e obsEvent) bool { return e.Kind == evMessage && e.Dir == event.FromClient })
	if string(m.Msg.Prefix) != "Hello, fragmented world" || m.Msg.Size != 23 {
		t.Errorf("tap saw %q (%d bytes)", m.Msg.Prefix, m.Msg.Size)
	}
	c.Write(frame(true, 0x8, true, closePayload(1000, "")))
	waitEnd(t, ends)
}
