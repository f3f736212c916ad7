package proxy

// The test peers of the proxy's tests, and no tests: a Proxy behind a real
// listener configured like production, a recording event.Observer, real
// upstream and client peers (gorilla/websocket, coder/websocket, Python's
// websockets library), and raw TCP peers that write hand-made RFC 6455
// frames and record every byte. The tests sit beside what they test
// (relay_test.go for relay.go, probe_test.go for probe.go, ...).

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// waitTime bounds every wait for something that should happen promptly.
const waitTime = 10 * time.Second

// ---------------------------------------------------------------------------
// HTTP servers configured like production.

// serve runs h on a fresh 127.0.0.1 port with the production server settings
// (ReadHeaderTimeout, MaxHeaderBytes) and returns its address.
func serve(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

// testProxy is a Proxy serving on a real listener.
type testProxy struct {
	p    *Proxy
	addr string
	rec  *recorder
}

func (tp *testProxy) http(path string) string { return "http://" + tp.addr + path }
func (tp *testProxy) ws(path string) string   { return "ws://" + tp.addr + path }

func mustSources(t testing.TB, spec string) Sources {
	t.Helper()
	s, err := ParseSources("TEST", spec)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startProxy runs a Proxy in front of upstream (an address or a URL). mod
// may change the options before New. At the end of the test it checks that
// every relay finished and every MaxConnections slot was given back.
func startProxy(t testing.TB, upstream string, mod func(*Options)) *testProxy {
	t.Helper()
	if !strings.Contains(upstream, "://") {
		upstream = "http://" + upstream
	}
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	o := Options{
		Upstream:     u,
		DialTimeout:  2 * time.Second,
		InspectBytes: 4096,
		SessionFrom:  mustSources(t, "query:sessionId,header:X-Session-Id,frame:data.sessionId,body:sessionId"),
		BotFrom:      mustSources(t, "query:botId,frame:data.botId,body:botId"),
		Observer:     rec,
	}
	// PROXY_TEST_RELAY=goroutines runs the suite on the goroutine relay
	// (scripts/test.sh runs it both ways).
	o.GoroutineRelay = os.Getenv("PROXY_TEST_RELAY") == "goroutines"
	if mod != nil {
		mod(&o)
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	tp := &testProxy{p: p, rec: rec}
	// Registered before serve's own cleanup, so it runs after the server
	// and the test's peers are closed.
	t.Cleanup(func() {
		rec.check(t)
		if !rec.allClosed(waitTime) {
			t.Errorf("a connection was opened but never reported closed; events: %s", rec.dump())
		}
		deadline := time.Now().Add(waitTime)
		for p.Stats().OpenWebSockets.Load() > 0 || p.active.Load() > 0 {
			if time.Now().After(deadline) {
				t.Errorf("proxy still busy after the test: %d WebSockets open, %d slots taken",
					p.Stats().OpenWebSockets.Load(), p.active.Load())
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				p.Shutdown(ctx)
				cancel()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	tp.addr = serve(t, p)
	return tp
}

// ---------------------------------------------------------------------------
// A recording event.Observer.

type evKind string

const (
	evOpened     evKind = "opened"
	evIdentified evKind = "identified"
	evMessage    evKind = "message"
	evClosed     evKind = "closed"
	evHTTP       evKind = "http"
	evFailed     evKind = "upgrade_failed"
)

type obsEvent struct {
	Kind   evKind
	ID     event.ConnID
	Who    event.Identity
	Dir    event.Direction
	Msg    event.Message // Prefix copied
	Reason event.CloseReason
	Body   []byte // HTTPRequest: copied; nil stays nil
	Trace  string // ConnOpened, HTTPRequest, UpgradeFailed: the traceparent sent upstream
	At     time.Time
}

type recorder struct {
	mu      sync.Mutex
	events  []obsEvent
	changed chan struct{}
	opened  map[event.ConnID]bool
	closed  map[event.ConnID]bool
	errs    []string
}

func newRecorder() *recorder {
	return &recorder{changed: make(chan struct{}), opened: map[event.ConnID]bool{}, closed: map[event.ConnID]bool{}}
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

func (r *recorder) add(e obsEvent) {
	e.At = time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Kind == evOpened && r.opened[e.ID] {
		r.errs = append(r.errs, fmt.Sprintf("connection %d opened twice", e.ID))
	}
	if e.Kind != evOpened && e.Kind != evHTTP && e.Kind != evFailed && !r.opened[e.ID] {
		r.errs = append(r.errs, fmt.Sprintf("%s event for connection %d before its ConnOpened", e.Kind, e.ID))
	}
	if e.Kind == evOpened {
		r.opened[e.ID] = true
	}
	if e.Kind != evHTTP && e.Kind != evFailed && r.closed[e.ID] {
		r.errs = append(r.errs, fmt.Sprintf("%s event for connection %d after its ConnClosed", e.Kind, e.ID))
	}
	if e.Kind == evClosed {
		r.closed[e.ID] = true
	}
	r.events = append(r.events, e)
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder) ConnOpened(id event.ConnID, o event.Open) {
	r.add(obsEvent{Kind: evOpened, ID: id, Who: o.Who, Trace: o.Trace})
}
func (r *recorder) ConnIdentified(id event.ConnID, who event.Identity) {
	r.add(obsEvent{Kind: evIdentified, ID: id, Who: who})
}
func (r *recorder) Message(id event.ConnID, dir event.Direction, m event.Message) {
	m.Prefix = clone(m.Prefix)
	r.add(obsEvent{Kind: evMessage, ID: id, Dir: dir, Msg: m})
}
func (r *recorder) ConnClosed(id event.ConnID, reason event.CloseReason) {
	r.add(obsEvent{Kind: evClosed, ID: id, Reason: reason})
}
func (r *recorder) HTTPRequest(req event.Request) {
	r.add(obsEvent{Kind: evHTTP, Who: req.Who, Body: clone(req.Body), Trace: req.Trace})
}
func (r *recorder) UpgradeFailed(req event.Request) {
	if req.Body != nil {
		r.mu.Lock()
		r.errs = append(r.errs, "UpgradeFailed with a body")
		r.mu.Unlock()
	}
	r.add(obsEvent{Kind: evFailed, Who: req.Who, Trace: req.Trace})
}

// snapshot returns the events so far.
func (r *recorder) snapshot() []obsEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]obsEvent(nil), r.events...)
}

// mark returns a position for waitFrom: events after now.
func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// wait blocks until pred holds for an event so far (at most waitTime) and
// returns the first event pred picked. pred runs with the recorder locked.
func (r *recorder) wait(t *testing.T, what string, pred func(e obsEvent) bool) obsEvent {
	t.Helper()
	return r.waitFrom(t, 0, what, pred)
}

// waitFrom is wait for the events from position from (see mark) on.
func (r *recorder) waitFrom(t *testing.T, from int, what string, pred func(e obsEvent) bool) obsEvent {
	t.Helper()
	timeout := time.After(waitTime)
	for {
		r.mu.Lock()
		for _, e := range r.events[from:] {
			if pred(e) {
				r.mu.Unlock()
				return e
			}
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("observer: no %s within %v; events: %s", what, waitTime, r.dump())
		}
	}
}

func (r *recorder) dump() string {
	var b strings.Builder
	for _, e := range r.snapshot() {
		fmt.Fprintf(&b, "\n  %s conn=%d who=%+v", e.Kind, e.ID, e.Who)
		switch e.Kind {
		case evMessage:
			fmt.Fprintf(&b, " dir=%s text=%v size=%d prefix=%q trunc=%v", e.Dir, e.Msg.Text, e.Msg.Size, e.Msg.Prefix[:min(len(e.Msg.Prefix), 60)], e.Msg.Truncated)
		case evClosed:
			fmt.Fprintf(&b, " reason=%s", e.Reason)
		case evHTTP:
			fmt.Fprintf(&b, " body=%q", e.Body)
		}
	}
	return b.String()
}

// allClosed waits until every connection opened was reported closed.
func (r *recorder) allClosed(timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		open := 0
		for _, e := range r.events {
			switch e.Kind {
			case evOpened:
				open++
			case evClosed:
				open--
			}
		}
		ch := r.changed
		r.mu.Unlock()
		if open == 0 {
			return true
		}
		select {
		case <-ch:
		case <-deadline:
			return false
		}
	}
}

// check reports observer contract violations seen so far: events for a
// connection after its ConnClosed, a second ConnClosed.
func (r *recorder) check(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.errs {
		t.Error(e)
	}
}

func isKind(k evKind) func(obsEvent) bool { return func(e obsEvent) bool { return e.Kind == k } }

// ---------------------------------------------------------------------------
// gorilla/websocket upstream.

// upstreamEnd is what an upstream connection saw when it ended.
type upstreamEnd struct {
	header    http.Header
	closeCode int // from the client's Close frame; 0 if none
	closeText string
	pongs     int   // Pongs the upstream received (it never pings: all unsolicited)
	err       error // what ended the read loop
}

// gorillaUpstream serves WebSockets with u (its 101 sets two cookies) and
// echoes every message, except
// a text "close:CODE:REASON", on which it starts the close handshake with
// that code. Each connection's end is sent on the returned channel.
func gorillaUpstream(t *testing.T, u websocket.Upgrader) (addr string, ends <-chan upstreamEnd) {
	t.Helper()
	ch := make(chan upstreamEnd, 16)
	addr = serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := u.Upgrade(w, r, http.Header{"Set-Cookie": {"ws1=a; Path=/", "ws2=b; Path=/"}})
		if err != nil {
			return // Upgrade answered the client
		}
		defer c.Close()
		end := upstreamEnd{header: r.Header.Clone()}
		c.SetPongHandler(func(string) error { end.pongs++; return nil })
		def := c.CloseHandler()
		c.SetCloseHandler(func(code int, text string) error {
			end.closeCode, end.closeText = code, text
			return def(code, text)
		})
		for {
			mt, data, err := c.ReadMessage()
			if err != nil {
				end.err = err
				break
			}
			if s := string(data); mt == websocket.TextMessage && strings.HasPrefix(s, "close:") {
				parts := strings.SplitN(s, ":", 3)
				var code int
				fmt.Sscan(parts[1], &code)
				_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, parts[2]), time.Now().Add(time.Second))
				continue // the client's answering Close ends the loop
			}
			if err := c.WriteMessage(mt, data); err != nil {
				end.err = err
				break
			}
		}
		ch <- end
	}))
	return addr, ch
}

func waitEnd(t *testing.T, ends <-chan upstreamEnd) upstreamEnd {
	t.Helper()
	select {
	case e := <-ends:
		return e
	case <-time.After(waitTime):
		t.Fatal("the upstream connection did not end")
	}
	return upstreamEnd{}
}

// gorillaDial connects a gorilla client through the proxy.
func gorillaDial(t *testing.T, d *websocket.Dialer, u string, h http.Header) (*websocket.Conn, *http.Response) {
	t.Helper()
	if d == nil {
		d = &websocket.Dialer{}
	}
	d.HandshakeTimeout = waitTime
	c, resp, err := d.Dial(u, h)
	if err != nil {
		status := ""
		if resp != nil {
			status = resp.Status
		}
		t.Fatalf("dial %s: %v %s", u, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c, resp
}

// echo sends one message and checks that the same comes back.
func echo(t *testing.T, c *websocket.Conn, mt int, data []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTime))
	defer c.SetReadDeadline(time.Time{})
	if err := c.WriteMessage(mt, data); err != nil {
		t.Fatalf("write: %v", err)
	}
	gotType, got, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if gotType != mt || string(got) != string(data) {
		t.Fatalf("echo: sent type %d, %d bytes; got type %d, %d bytes", mt, len(data), gotType, len(got))
	}
}

// closeGorilla runs the close handshake from the client side with code and
// reason, closes the socket as a browser does, and returns the Close the
// client got back.
func closeGorilla(t *testing.T, c *websocket.Conn, code int, reason string) *websocket.CloseError {
	t.Helper()
	if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second)); err != nil {
		t.Fatalf("write close: %v", err)
	}
	ce := readUntilClose(t, c)
	c.Close()
	return ce
}

// readUntilClose reads until the connection's Close arrives (gorilla
// answers it) and closes the socket.
func readUntilClose(t *testing.T, c *websocket.Conn) *websocket.CloseError {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTime))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("expected a Close from the other side, got %v", err)
		}
		c.Close()
		return ce
	}
}

// ---------------------------------------------------------------------------
// Python websockets peer (proxy/testdata/wspeer.py).

const python = "/usr/bin/python3"

var pythonCheck = sync.OnceValue(func() error {
	if _, err := os.Stat(python); err != nil {
		return fmt.Errorf("%s is missing: %v", python, err)
	}
	if out, err := exec.Command(python, "-c", "import websockets").CombinedOutput(); err != nil {
		return fmt.Errorf("%s cannot import websockets: %v: %s", python, err, out)
	}
	return nil
})

type pyPeer struct {
	stdin  io.WriteCloser
	events chan map[string]any
	stderr *testutil.Buffer
}

// startPython runs testdata/wspeer.py with args. The test fails when the
// Python peer cannot run.
func startPython(t *testing.T, args ...string) *pyPeer {
	t.Helper()
	if err := pythonCheck(); err != nil {
		t.Fatalf("the Python WebSocket peer needs Debian's python3-websockets (apt-get install python3-websockets): %v", err)
	}
	cmd := exec.Command(python, append([]string{"testdata/wspeer.py"}, args...)...)
	py := &pyPeer{events: make(chan map[string]any, 64), stderr: &testutil.Buffer{}}
	cmd.Stderr = py.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	py.stdin = stdin
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer close(py.events)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				py.stderr.Write([]byte("bad line on stdout: " + sc.Text() + "\n"))
				continue
			}
			py.events <- m
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill() // the process this test started, by its id
		for range py.events {  // unread events must not block the reader
		}
		<-readDone
		_ = cmd.Wait()
	})
	return py
}

// next returns the next event named name, skipping others.
func (py *pyPeer) next(t *testing.T, name string) map[string]any {
	t.Helper()
	timeout := time.After(waitTime)
	for {
		select {
		case m, ok := <-py.events:
			if !ok {
				t.Fatalf("python peer exited before %q; stderr:\n%s", name, py.stderr.String())
			}
			if m["event"] == name {
				return m
			}
		case <-timeout:
			t.Fatalf("python peer: no %q within %v; stderr:\n%s", name, waitTime, py.stderr.String())
		}
	}
}

func (py *pyPeer) send(t *testing.T, cmd map[string]any) {
	t.Helper()
	b, _ := json.Marshal(cmd)
	if _, err := py.stdin.Write(append(b, '\n')); err != nil {
		t.Fatalf("python peer stdin: %v", err)
	}
}

// pythonServer starts the Python echo server and returns its address.
func pythonServer(t *testing.T) (string, *pyPeer) {
	t.Helper()
	py := startPython(t, "server")
	m := py.next(t, "listening")
	return fmt.Sprintf("127.0.0.1:%v", m["port"]), py
}

// ---------------------------------------------------------------------------
// Raw RFC 6455 frames for byte-exact peers.

// frame builds one frame; a masked frame gets a random key.
func frame(fin bool, op byte, masked bool, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	var mbit byte
	if masked {
		mbit = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, mbit|byte(n))
	case n < 1<<16:
		b = append(b, mbit|126, byte(n>>8), byte(n))
	default:
		b = append(b, mbit|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if !masked {
		return append(b, payload...)
	}
	var key [4]byte
	rand.Read(key[:])
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i&3])
	}
	return b
}

func closePayload(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

type rawFrame struct {
	fin, rsv1 bool
	op        byte
	payload   []byte // unmasked
	raw       []byte // the frame's bytes as they came
}

// parseFrame parses one frame at the start of b; ok is false when b holds
// less than a whole frame.
func parseFrame(b []byte) (f rawFrame, n int, ok bool) {
	if len(b) < 2 {
		return f, 0, false
	}
	f.fin, f.rsv1, f.op = b[0]&0x80 != 0, b[0]&0x40 != 0, b[0]&0x0f
	masked := b[1]&0x80 != 0
	length := uint64(b[1] & 0x7f)
	i := 2
	switch length {
	case 126:
		if len(b) < 4 {
			return f, 0, false
		}
		length, i = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return f, 0, false
		}
		length, i = binary.BigEndian.Uint64(b[2:]), 10
	}
	var key []byte
	if masked {
		if len(b) < i+4 {
			return f, 0, false
		}
		key, i = b[i:i+4], i+4
	}
	if uint64(len(b)-i) < length {
		return f, 0, false
	}
	n = i + int(length)
	f.payload = append([]byte{}, b[i:n]...)
	for j := range f.payload {
		if key != nil {
			f.payload[j] ^= key[j&3]
		}
	}
	f.raw = b[:n]
	return f, n, true
}

// parseFrames parses a whole stream; rest is a trailing incomplete frame.
func parseFrames(b []byte) (frames []rawFrame, rest []byte) {
	for {
		f, n, ok := parseFrame(b)
		if !ok {
			return frames, b
		}
		frames = append(frames, f)
		b = b[n:]
	}
}

// rawDial opens a TCP connection to addr and performs a WebSocket client
// handshake by hand. The returned reader holds any bytes that followed the 101.
func rawDial(t testing.TB, addr, path string, extra http.Header) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var key [16]byte
	rand.Read(key[:])
	var req strings.Builder
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", path, addr, base64.StdEncoding.EncodeToString(key[:]))
	extra.Write(&req)
	req.WriteString("\r\n")
	if _, err := io.WriteString(c, req.String()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(waitTime))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("raw handshake: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("raw handshake: %s", resp.Status)
	}
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), acceptKey(base64.StdEncoding.EncodeToString(key[:])); got != want {
		t.Fatalf("raw handshake: Sec-WebSocket-Accept %q, want %q", got, want)
	}
	return c, br
}

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// rawConn is an upstream connection accepted and upgraded by hand.
type rawConn struct {
	net.Conn
	br  *bufio.Reader // holds any bytes that followed the request
	req *http.Request
}

// acceptLoop listens on a free port and hands every connection to handle,
// one after the other or, with each, on a goroutine of its own, until the
// test ends.
func acceptLoop(t testing.TB, each bool, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if each {
				wg.Go(func() { handle(c) })
			} else {
				handle(c)
			}
		}
	})
	return ln.Addr().String()
}

// rawUpstream listens and upgrades every connection by hand, handing it to
// the test on the returned channel.
func rawUpstream(t testing.TB) (string, <-chan rawConn) {
	t.Helper()
	ch := make(chan rawConn, 4)
	addr := acceptLoop(t, false, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			c.Close()
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			acceptKey(req.Header.Get("Sec-WebSocket-Key")))
		ch <- rawConn{Conn: c, br: br, req: req}
	})
	return addr, ch
}

func acceptRaw(t testing.TB, ch <-chan rawConn) rawConn {
	t.Helper()
	select {
	case c := <-ch:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(waitTime):
		t.Fatal("the upstream got no connection")
	}
	return rawConn{}
}

// deadAddr returns an address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// ---------------------------------------------------------------------------
// Raw TCP peers that pace their writes and record every byte, and an
// upstream that floods.

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// pacedWriter writes to a socket in pieces, recording every byte written.
type pacedWriter struct {
	t    *testing.T
	c    net.Conn
	sent []byte
}

// write writes b in pieces of the given sizes (cycled), pausing between
// pieces so that they reach the proxy as separate reads where possible.
func (w *pacedWriter) write(b []byte, pause time.Duration, sizes ...int) {
	if len(sizes) == 0 {
		sizes = []int{len(b)}
	}
	for i := 0; len(b) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(b))
		if _, err := w.c.Write(b[:n]); err != nil {
			w.t.Errorf("write: %v", err)
			return
		}
		w.sent = append(w.sent, b[:n]...)
		b = b[n:]
		if len(b) > 0 && pause > 0 {
			time.Sleep(pause) // pacing, not synchronisation
		}
	}
}

// streamReader reads a socket until it ends, keeping every byte and
// calling onFrame for each whole frame as it completes.
func streamReader(r interface{ Read([]byte) (int, error) }, onFrame func(rawFrame)) <-chan []byte {
	done := make(chan []byte, 1)
	go func() {
		var all []byte
		off := 0
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Read(buf)
			all = append(all, buf[:n]...)
			for {
				f, m, ok := parseFrame(all[off:])
				if !ok {
					break
				}
				off += m
				onFrame(f)
			}
			if err != nil {
				done <- all
				return
			}
		}
	}()
	return done
}

// floodUpstream writes 64 KiB binary messages to each connection until a
// write fails, then reports the end.
func floodUpstream(t *testing.T) (string, <-chan error) {
	ends := make(chan error, 4)
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		msg := randomBytes(64 << 10)
		for {
			if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				ends <- err
				return
			}
		}
	}))
	return addr, ends
}
