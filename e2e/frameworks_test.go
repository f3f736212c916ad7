package e2e

// The sidecar in front of the chat frameworks people run, each with its own
// server and client (frameworks/peer.js, frameworks/centrifuge-server/) and
// its PRESET (README, "Presets"): Socket.IO 4, SockJS and Centrifuge. Nothing
// here writes a framework's frames by hand; the wire taps on either side of
// the sidecar only record them.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
)

// framework is one chat stack under test.
type framework struct {
	preset string
	// clientURL is where the framework's client connects, given the address
	// it reaches the server at.
	clientURL func(addr string) string
	// heartbeat tells whether a recorded WebSocket message is the
	// framework's own heartbeat (either direction): the activity test checks
	// they flowed while the client was found inactive.
	heartbeat func(fromClient bool, op byte, payload []byte) bool
}

var frameworks = []framework{
	{
		preset:    "socketio",
		clientURL: func(addr string) string { return "http://" + addr },
		// Engine.IO v4: the server pings (2), the client answers (3).
		heartbeat: func(fromClient bool, op byte, p []byte) bool {
			return op == opText && string(p) == map[bool]string{true: "3", false: "2"}[fromClient]
		},
	},
	{
		preset:    "sockjs",
		clientURL: func(addr string) string { return "http://" + addr + "/chat" },
		// Over WebSocket, sockjs-node's heartbeat is an empty Ping, not the
		// protocol's h frame; the client's WebSocket answers it.
		heartbeat: func(fromClient bool, op byte, p []byte) bool {
			return len(p) == 0 && op == map[bool]byte{true: opPong, false: opPing}[fromClient]
		},
	},
	{
		preset:    "centrifuge",
		clientURL: func(addr string) string { return "ws://" + addr + "/connection/websocket" },
		// Client protocol v2: an empty command each way.
		heartbeat: func(_ bool, op byte, p []byte) bool { return op == opText && string(p) == "{}" },
	},
}

// With each framework and its preset, in connection mode: the ids come from
// the client's first messages (no id in the URL), a server event hands the
// session over, a close makes it absent after the interval, a reconnect
// brings the return message; and on both sides of the sidecar the bytes of
// each WebSocket are the same but for the probe's Pings and their Pongs.
func TestFrameworksConnectionMode(t *testing.T) {
	for _, fw := range frameworks {
		t.Run(fw.preset, func(t *testing.T) {
			t.Parallel()
			st := startStack(t, fw, map[string]string{"PRESENCE_CHECK_INTERVAL": "1500ms"})
			sid, bot := "fw-"+fw.preset, "bot-"+fw.preset

			c := st.client(t, sid, bot)
			link := st.server.wait(t, "link")
			if link["sessionId"] != sid || link["botId"] != bot {
				t.Fatalf("the server got link %v", link)
			}
			waitReplicaView(t, st.sc, sid, "tracked from the link message", func(v replicaView) bool { return v.Connections == 1 })
			st.checkBot(t, sid, bot)

			c.send(map[string]any{"cmd": "send", "action": "message", "data": map[string]any{"text": "oi"}})
			if ev := c.wait(t, "event"); ev["action"] != "message" || ev["data"].(map[string]any)["text"] != "echo: oi" {
				t.Fatalf("the client got %v, want the echo", ev)
			}
			st.server.send(map[string]any{"cmd": "push", "sessionId": sid, "action": "end_conversation", "data": map[string]any{"isTransfer": true}})
			if ev := c.wait(t, "event"); ev["action"] != "end_conversation" {
				t.Fatalf("the client got %v, want the bot's hand-over frame", ev)
			}
			waitReplicaView(t, st.sc, sid, "handed over by the server's event", func(v replicaView) bool { return v.HandedOver })
			// Let the probe ping the client a few times (PROBE_INTERVAL 500ms).
			testutil.Eventually(t, 10*time.Second, "probe pings on the client's side", func() bool {
				return st.down.probePings() >= 2
			})

			closedAt := time.Now()
			c.send(map[string]any{"cmd": "close"})
			c.wait(t, "closed")
			h := st.pf.accepted(t, 10*time.Second)
			if h.Path != "/expire" || h.session() != sid || h.Body["botId"] != bot || h.Body["reason"] != "disconnected" {
				t.Fatalf("offline notification: %s %s", h.Path, h.Raw)
			}
			if waited := h.At.Sub(closedAt); waited < 1500*time.Millisecond {
				t.Fatalf("/expire %v after the close, before the interval", waited)
			}

			c2 := st.client(t, sid, bot)
			r := st.pf.accepted(t, 10*time.Second)
			if r.Path != "/message" || r.event() != "client.online" || r.session() != sid || r.Body["text"] != "O cliente voltou a ficar online." {
				t.Fatalf("return notification: %s %s", r.Path, r.Raw)
			}
			c2.send(map[string]any{"cmd": "close"})
			c2.wait(t, "closed")

			st.compareWires(t, 2)
			// Every message the framework sent was decoded.
			for _, dir := range []string{"client", "server"} {
				if n := metricSum(t, st.sc, "presence_sidecar_unparsed_total", `direction="`+dir+`"`); n != 0 {
					t.Errorf("%v messages from the %s not decoded", n, dir)
				}
			}
		})
	}
}

// In activity mode, a client that is connected but sends nothing is found
// inactive after the interval, although the framework's heartbeats go on
// both ways (the preset ignores the client's); its next message is a
// return.
func TestFrameworksActivityModeIgnoresHeartbeats(t *testing.T) {
	for _, fw := range frameworks {
		t.Run(fw.preset, func(t *testing.T) {
			t.Parallel()
			st := startStack(t, fw, map[string]string{"PRESENCE_MODE": "activity", "PRESENCE_CHECK_INTERVAL": "2500ms"})
			sid, bot := "act-"+fw.preset, "bot-"+fw.preset

			c := st.client(t, sid, bot)
			st.server.wait(t, "link")
			st.server.send(map[string]any{"cmd": "push", "sessionId": sid, "action": "end_conversation", "data": map[string]any{"isTransfer": true}})
			c.wait(t, "event")
			waitReplicaView(t, st.sc, sid, "handed over", func(v replicaView) bool { return v.HandedOver })

			silentFrom := time.Now()
			h := st.pf.accepted(t, 10*time.Second)
			if h.Path != "/expire" || h.session() != sid || h.Body["reason"] != "inactive" {
				t.Fatalf("offline notification: %s %s", h.Path, h.Raw)
			}
			if v, _ := replicaViewOf(t, st.sc, sid); v.Connections != 1 {
				t.Fatalf("the client should still be connected: %+v", v)
			}
			// The heartbeats did flow while it was silent.
			fromClient, fromServer := st.down.heartbeats(fw.heartbeat, silentFrom)
			if fromServer < 2 || fromClient < 2 {
				t.Fatalf("heartbeats while silent: %d from the client, %d from the server", fromClient, fromServer)
			}

			c.send(map[string]any{"cmd": "send", "action": "message", "data": map[string]any{"text": "voltei"}})
			r := st.pf.accepted(t, 10*time.Second)
			if r.Path != "/message" || r.event() != "client.online" || r.session() != sid {
				t.Fatalf("return notification: %s %s", r.Path, r.Raw)
			}
			c.send(map[string]any{"cmd": "close"})
			c.wait(t, "closed")
			st.compareWires(t, 1)
		})
	}
}

// stack is one framework's server, a sidecar with its preset in front of it,
// and a wire tap on each side of the sidecar.
type stack struct {
	fw         framework
	server     *fwPeer
	up, down   *wiretap // sidecar to server; client to sidecar
	sc         *sidecar
	pf         *platform
	clientAddr string
}

func startStack(t *testing.T, fw framework, extra map[string]string) *stack {
	st := &stack{fw: fw, pf: newPlatform(t)}
	if fw.preset == "centrifuge" {
		st.server = startFwPeer(t, centrifugeServer(t))
	} else {
		st.server = startFwPeer(t, nodeCommand(t, "server", fw.preset))
	}
	port := st.server.wait(t, "listening")["port"]
	st.up = newWiretap(t, fmt.Sprintf("127.0.0.1:%v", port))
	env := baseEnv("http://"+st.up.addr(), st.pf.url(), t.TempDir())
	env["PRESET"] = fw.preset
	for k, v := range extra {
		env[k] = v
	}
	st.sc = start(t, env)
	st.down = newWiretap(t, st.sc.addr)
	return st
}

// client starts the framework's client, which links sid at once, and waits
// until the server has answered the link.
func (st *stack) client(t *testing.T, sid, bot string) *fwPeer {
	t.Helper()
	c := startFwPeer(t, nodeCommand(t, "client", st.fw.preset, st.fw.clientURL(st.down.addr()), sid, bot))
	c.wait(t, "linked")
	return c
}

func (st *stack) checkBot(t *testing.T, sid, bot string) {
	t.Helper()
	_, body := st.sc.api("GET", "/v1/sessions/"+sid, nil)
	var v struct {
		BotID string `json:"botId"`
	}
	if json.Unmarshal(body, &v); v.BotID != bot {
		t.Fatalf("the bot id was not taken from the message: %s", body)
	}
}

// compareWires checks the n WebSocket connections recorded on each side:
// the upgrade answered 101 on both, and after it the frames are byte for
// byte the same, but for the probe's Pings to the client and the client's
// Pongs to them, which the sidecar sends and absorbs itself.
func (st *stack) compareWires(t *testing.T, n int) {
	t.Helper()
	down, up := st.down.websockets(t, n), st.up.websockets(t, n)
	for i := range n {
		d, u := down[i], up[i]
		if !bytes.HasPrefix(d.s2cHead, []byte("HTTP/1.1 101")) || !bytes.HasPrefix(u.s2cHead, []byte("HTTP/1.1 101")) {
			t.Fatalf("connection %d: upgrade answered %q and %q", i, firstLine(d.s2cHead), firstLine(u.s2cHead))
		}
		for _, dir := range []struct {
			name      string
			near, far []byte
			probe     byte
		}{
			{"client to server", d.c2s, u.c2s, opPong},
			{"server to client", d.s2c, u.s2c, opPing},
		} {
			if len(dir.far) == 0 {
				t.Fatalf("connection %d, %s: nothing recorded", i, dir.name)
			}
			if err := sameButProbes(dir.near, dir.far, dir.probe); err != nil {
				t.Fatalf("connection %d, %s: %v", i, dir.name, err)
			}
		}
	}
}

// sameButProbes checks that far's frames are near's, byte for byte and in
// order, once some of near's frames of opcode probe are taken out: the
// probe's. The framework's own Pings and Pongs (SockJS's server pings) pass
// the sidecar, so they must be on both sides.
func sameButProbes(near, far []byte, probe byte) error {
	nf, ff := splitFrames(near), splitFrames(far)
	if err := whole(near, nf); err != nil {
		return err
	}
	if err := whole(far, ff); err != nil {
		return err
	}
	j := 0
	for i, f := range nf {
		switch {
		case j < len(ff) && bytes.Equal(f.raw, ff[j].raw):
			j++
		case f.op == probe:
		default:
			if j < len(ff) {
				return fmt.Errorf("frame %d on the client's side (opcode %#x, %q) is not the next one on the server's side (opcode %#x, %q)", i, f.op, f.payload, ff[j].op, ff[j].payload)
			}
			return fmt.Errorf("frame %d on the client's side (opcode %#x, %q) never reached the server's side", i, f.op, f.payload)
		}
	}
	if j < len(ff) {
		return fmt.Errorf("frame %d on the server's side (opcode %#x, %q) is not on the client's side", j, ff[j].op, ff[j].payload)
	}
	return nil
}

func whole(b []byte, frames []wsFrame) error {
	n := 0
	for _, f := range frames {
		n += len(f.raw)
	}
	if n != len(b) {
		return fmt.Errorf("%d bytes after the last whole frame", len(b)-n)
	}
	return nil
}

func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\r'); i >= 0 {
		return b[:i]
	}
	return b
}

// ---------------------------------------------------------------------------
// Peers: the framework's programs, driven by JSON lines (frameworks/peer.js).

type fwPeer struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan map[string]any
	stderr *testutil.Buffer
	name   string
}

func frameworksDir(t *testing.T) string {
	dir, err := filepath.Abs("frameworks")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// nodeCommand runs frameworks/peer.js with the machine's Node.js and the
// packages `npm ci` installed from the committed lock file.
func nodeCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("Node.js is not on PATH; ./scripts/test.sh installs it (apt-get install nodejs npm)")
	}
	dir := frameworksDir(t)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "socket.io")); err != nil {
		t.Fatalf("the framework peers are not installed; ./scripts/test.sh does it: (cd e2e/frameworks && npm ci --ignore-scripts)")
	}
	cmd := exec.Command(node, append([]string{"peer.js"}, args...)...)
	cmd.Dir = dir
	return cmd
}

var (
	centrifugeOnce sync.Once
	centrifugeBin  string
	centrifugeErr  error
)

// centrifugeServer builds frameworks/centrifuge-server (a module of its
// own) once per run.
func centrifugeServer(t *testing.T) *exec.Cmd {
	t.Helper()
	centrifugeOnce.Do(func() {
		centrifugeBin = filepath.Join(filepath.Dir(binary), "centrifuge-server")
		build := exec.Command("go", "build", "-o", centrifugeBin, ".")
		build.Dir = filepath.Join(frameworksDir(t), "centrifuge-server")
		out, err := build.CombinedOutput()
		if err != nil {
			centrifugeErr = fmt.Errorf("building frameworks/centrifuge-server: %v\n%s", err, out)
		}
	})
	if centrifugeErr != nil {
		t.Fatal(centrifugeErr)
	}
	return exec.Command(centrifugeBin)
}

func startFwPeer(t *testing.T, cmd *exec.Cmd) *fwPeer {
	t.Helper()
	p := &fwPeer{cmd: cmd, events: make(chan map[string]any, 256), stderr: &testutil.Buffer{}, name: strings.Join(cmd.Args[1:], " ")}
	cmd.Stderr = p.stderr
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				fmt.Fprintf(p.stderr, "not a JSON line on stdout: %s\n", sc.Text())
				continue
			}
			p.events <- ev
		}
	}()
	t.Cleanup(func() {
		p.stdin.Close() // the peers exit when their stdin ends
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		cmd.Wait()
		if t.Failed() && p.stderr.String() != "" {
			t.Logf("%s stderr:\n%s", p.name, p.stderr.String())
		}
	})
	return p
}

func (p *fwPeer) send(cmd map[string]any) {
	b, _ := json.Marshal(cmd)
	p.stdin.Write(append(b, '\n'))
}

// wait returns the peer's next event named ev, failing on an error event or
// after 10 s. Other events before it are skipped.
func (p *fwPeer) wait(t *testing.T, ev string) map[string]any {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-p.events:
			if e["ev"] == ev {
				return e
			}
			if e["ev"] == "error" {
				t.Fatalf("%s: %v (waiting for %s)", p.name, e["error"], ev)
			}
			t.Logf("%s: %v (waiting for %s)", p.name, e, ev)
		case <-timeout:
			t.Fatalf("%s: no %q event within 10s; stderr:\n%s", p.name, ev, p.stderr.String())
		}
	}
}

// ---------------------------------------------------------------------------
// Wire taps: a TCP relay that records every byte, each way, of each
// connection through it.

type wiretap struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []*tapped
}

type tapped struct {
	mu       sync.Mutex
	c2s, s2c bytes.Buffer
	at       []stamp // when each s2c/c2s length was reached, for heartbeats()
	done     sync.WaitGroup
}

type stamp struct {
	c2s, s2c int
	at       time.Time
}

func newWiretap(t *testing.T, target string) *wiretap {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &wiretap{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			tc := &tapped{}
			tc.done.Add(2)
			w.mu.Lock()
			w.conns = append(w.conns, tc)
			w.mu.Unlock()
			go tc.copy(s, c, &tc.c2s)
			go tc.copy(c, s, &tc.s2c)
		}
	}()
	return w
}

func (w *wiretap) addr() string { return w.ln.Addr().String() }

// copy relays one direction, recording it, and passes its end on as a
// half-close so that each side sees the other's FIN as it would directly.
func (tc *tapped) copy(dst, src net.Conn, rec *bytes.Buffer) {
	defer tc.done.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			tc.mu.Lock()
			rec.Write(buf[:n])
			tc.at = append(tc.at, stamp{tc.c2s.Len(), tc.s2c.Len(), time.Now()})
			tc.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	if cw, ok := dst.(*net.TCPConn); ok {
		cw.CloseWrite()
	}
	src.(*net.TCPConn).CloseRead()
}

func (w *wiretap) all() []*tapped {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*tapped(nil), w.conns...)
}

// wire is one recorded WebSocket: the upgrade's request and answer, and the
// frame bytes after them.
type wire struct {
	c2sHead, s2cHead []byte
	c2s, s2c         []byte
}

// websockets waits until the tap has seen n WebSocket connections end, both
// ways, and returns them in the order they were opened. Other connections
// (SockJS's /info request) are left out.
func (w *wiretap) websockets(t *testing.T, n int) []wire {
	t.Helper()
	var out []wire
	deadline := time.Now().Add(10 * time.Second)
	for _, tc := range w.all() {
		ended := make(chan struct{})
		go func() { tc.done.Wait(); close(ended) }()
		select {
		case <-ended:
		case <-time.After(time.Until(deadline)):
			t.Fatalf("a tapped connection did not end")
		}
		tc.mu.Lock()
		c2s, s2c := bytes.Clone(tc.c2s.Bytes()), bytes.Clone(tc.s2c.Bytes())
		tc.mu.Unlock()
		i, j := bytes.Index(c2s, []byte("\r\n\r\n")), bytes.Index(s2c, []byte("\r\n\r\n"))
		if i < 0 || j < 0 || !bytes.Contains(bytes.ToLower(c2s[:i]), []byte("upgrade: websocket")) {
			continue
		}
		out = append(out, wire{c2sHead: c2s[:i+4], s2cHead: s2c[:j+4], c2s: c2s[i+4:], s2c: s2c[j+4:]})
	}
	if len(out) != n {
		t.Fatalf("%d WebSocket connections recorded, want %d", len(out), n)
	}
	return out
}

// probePings counts the Pings sent to the clients so far.
func (w *wiretap) probePings() int {
	n := 0
	for _, tc := range w.all() {
		tc.mu.Lock()
		s2c := bytes.Clone(tc.s2c.Bytes())
		tc.mu.Unlock()
		if j := bytes.Index(s2c, []byte("\r\n\r\n")); j >= 0 {
			for _, f := range splitFrames(s2c[j+4:]) {
				if f.op == opPing {
					n++
				}
			}
		}
	}
	return n
}

// heartbeats counts the data messages, each way, that is says are the
// framework's heartbeats and that passed the tap after since.
func (w *wiretap) heartbeats(is func(fromClient bool, op byte, payload []byte) bool, since time.Time) (fromClient, fromServer int) {
	for _, tc := range w.all() {
		tc.mu.Lock()
		c2s, s2c, at := bytes.Clone(tc.c2s.Bytes()), bytes.Clone(tc.s2c.Bytes()), append([]stamp(nil), tc.at...)
		tc.mu.Unlock()
		// The recorded lengths at since: bytes before them came earlier.
		var c2sFrom, s2cFrom int
		for _, s := range at {
			if s.at.Before(since) {
				c2sFrom, s2cFrom = s.c2s, s.s2c
			}
		}
		count := func(b []byte, from int, fromClient bool) int {
			j := bytes.Index(b, []byte("\r\n\r\n"))
			if j < 0 {
				return 0
			}
			n, off := 0, j+4
			for _, f := range splitFrames(b[off:]) {
				if off >= from && is(fromClient, f.op, f.payload) {
					n++
				}
				off += len(f.raw)
			}
			return n
		}
		fromClient += count(c2s, c2sFrom, true)
		fromServer += count(s2c, s2cFrom, false)
	}
	return fromClient, fromServer
}

// ---------------------------------------------------------------------------
// RFC 6455 section 5.2 framing, written here independently of the sidecar's
// parser: only what the comparison needs (no fragmented control frames
// exist, section 5.5).

const (
	opText = 0x1
	opPing = 0x9
	opPong = 0xA
)

type wsFrame struct {
	op      byte
	payload []byte // unmasked
	raw     []byte
}

func splitFrames(b []byte) []wsFrame {
	var out []wsFrame
	for len(b) >= 2 {
		n, hdr := uint64(b[1]&0x7f), 2
		switch n {
		case 126:
			if len(b) < 4 {
				return out
			}
			n, hdr = uint64(b[2])<<8|uint64(b[3]), 4
		case 127:
			if len(b) < 10 {
				return out
			}
			n = 0
			for _, x := range b[2:10] {
				n = n<<8 | uint64(x)
			}
			hdr = 10
		}
		masked := b[1]&0x80 != 0
		if masked {
			hdr += 4
		}
		if uint64(len(b)) < uint64(hdr)+n {
			return out
		}
		f := wsFrame{op: b[0] & 0x0f, raw: b[:hdr+int(n)], payload: bytes.Clone(b[hdr : hdr+int(n)])}
		if masked {
			key := b[hdr-4 : hdr]
			for i := range f.payload {
				f.payload[i] ^= key[i%4]
			}
		}
		out = append(out, f)
		b = b[hdr+int(n):]
	}
	return out
}
