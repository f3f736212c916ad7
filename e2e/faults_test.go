package e2e

// Fault tests: the real binary under faults made by the test itself, as
// root (CI runs as root): a client's network cut without FIN or RST, in a
// network namespace with a veth pair; the upstream process killed with
// SIGKILL mid-stream; the data directory full (a small tmpfs) and the data
// file turning read-only (ext4 on a loop device, remounted read-only by the
// kernel), each in a mount namespace of the sidecar's own (unshare -m), so
// that no mount outlives it. Network traffic goes only to loopback and to
// the namespaces made here; every namespace, mount and process is removed
// by t.Cleanup, on failure too.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
)

// helperEnv names the role of a child process these tests start from their
// own binary (TestMain calls runHelper when it is set).
const helperEnv = "E2E_HELPER"

// runHelper runs a child-process role and returns its exit code.
func runHelper(role string) int {
	switch role {
	case "upstream":
		return helperUpstream()
	case "client":
		return helperClient()
	}
	fmt.Fprintf(os.Stderr, "unknown %s=%q\n", helperEnv, role)
	return 2
}

// helperUpstream is a conversation service in a process of its own, so a
// test can SIGKILL it: it listens on E2E_UPSTREAM_ADDR and says where on
// its first line of output.
func helperUpstream() int {
	ln, err := net.Listen("tcp", os.Getenv("E2E_UPSTREAM_ADDR"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "upstream helper:", err)
		return 1
	}
	fmt.Printf("listening %s\n", ln.Addr())
	mux := http.NewServeMux()
	mux.Handle("/ws", &faultUpstream{})
	err = http.Serve(ln, mux)
	fmt.Fprintln(os.Stderr, "upstream helper:", err)
	return 1
}

// helperClient is a WebSocket client in a process of its own, run inside a
// network namespace (ip netns exec): it dials E2E_CLIENT_URL, sends each
// line of its stdin as a text message, and prints each message it reads as
// a line, and the read's final error as {"_end": "..."}.
func helperClient() int {
	out := json.NewEncoder(os.Stdout)
	c, _, err := websocket.DefaultDialer.Dial(os.Getenv("E2E_CLIENT_URL"), nil)
	if err != nil {
		out.Encode(map[string]any{"_end": err.Error()})
		return 1
	}
	go func() {
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			c.WriteMessage(websocket.TextMessage, in.Bytes())
		}
	}()
	for {
		_, raw, err := c.ReadMessage()
		if err != nil {
			out.Encode(map[string]any{"_end": err.Error()})
			return 0
		}
		os.Stdout.Write(append(bytes.TrimSpace(raw), '\n'))
	}
}

// faultUpstream is a conversation service speaking the seed platform's
// socket protocol: "link" is answered with a socketId; "transfer" makes it
// hand the conversation over ({"action":"end_conversation","data":
// {"isTransfer":true}}, which the sidecar's default rule recognises);
// "stream" starts a frame every 5 ms until the connection ends; anything
// else is echoed. links and closed, when not nil, get each connection's
// session id when it links and when it ends.
type faultUpstream struct {
	links, closed chan string
}

func (u *faultUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{}
	c, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	var wmu sync.Mutex
	write := func(v any) error {
		wmu.Lock()
		defer wmu.Unlock()
		return c.WriteJSON(v)
	}
	var sid string
	ended := make(chan struct{})
	defer func() {
		close(ended)
		if u.closed != nil && sid != "" {
			u.closed <- sid
		}
	}()
	for {
		_, raw, err := c.ReadMessage()
		if err != nil {
			return
		}
		var m struct {
			Action string `json:"action"`
			Data   struct {
				SessionID string `json:"sessionId"`
			} `json:"data"`
		}
		if json.Unmarshal(raw, &m) != nil {
			continue
		}
		switch m.Action {
		case "link":
			sid = m.Data.SessionID
			write(map[string]any{"action": "link", "data": map[string]any{"socketId": "sock-" + sid}})
			if u.links != nil {
				u.links <- sid
			}
		case "transfer":
			write(map[string]any{"action": "end_conversation", "data": map[string]any{"isTransfer": true}})
		case "stream":
			go func() {
				for n := 0; ; n++ {
					select {
					case <-ended:
						return
					case <-time.After(5 * time.Millisecond):
					}
					if write(map[string]any{"action": "tick", "data": map[string]any{"n": n}}) != nil {
						return
					}
				}
			}()
		default:
			wmu.Lock()
			c.WriteMessage(websocket.TextMessage, raw)
			wmu.Unlock()
		}
	}
}

// newFaultUpstream serves a faultUpstream in this process.
func newFaultUpstream(t *testing.T) (*faultUpstream, string) {
	u := &faultUpstream{links: make(chan string, 64), closed: make(chan string, 64)}
	mux := http.NewServeMux()
	mux.Handle("/ws", u)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return u, srv.URL
}

// peer is a WebSocket client whose reads run on their own, so the probe's
// Pings are answered (gorilla answers them from its read loop) whatever the
// test does; each message read arrives on msgs, and the read's final error
// in err once done is closed. It runs in this process (dialPeer) or in a
// child process inside a network namespace (netns.peer).
type peer struct {
	write func(v any) error
	msgs  chan map[string]any
	done  chan struct{}
	err   error
}

func newPeer(write func(v any) error) *peer {
	return &peer{write: write, msgs: make(chan map[string]any, 4096), done: make(chan struct{})}
}

func (p *peer) got(m map[string]any) {
	select {
	case p.msgs <- m:
	default: // a stream nobody reads: drop
	}
}

func (p *peer) link(t *testing.T, sid string) *peer {
	t.Helper()
	p.send(t, map[string]any{"action": "link", "data": map[string]any{"sessionId": sid, "botId": "bot-f"}})
	p.expect(t, "link", 10*time.Second)
	return p
}

// dialPeer opens ws://addr/ws from this process and links session sid.
func dialPeer(t *testing.T, addr, sid string) (*peer, *websocket.Conn) {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	p := newPeer(func(v any) error {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		return c.WriteJSON(v)
	})
	go func() {
		for {
			_, raw, err := c.ReadMessage()
			if err != nil {
				p.err = err
				close(p.done)
				return
			}
			var m map[string]any
			json.Unmarshal(raw, &m)
			p.got(m)
		}
	}()
	return p.link(t, sid), c
}

func (p *peer) send(t *testing.T, v any) {
	t.Helper()
	if err := p.write(v); err != nil {
		t.Fatalf("client write: %v", err)
	}
}

// expect waits for the next message whose action is action, skipping others.
func (p *peer) expect(t *testing.T, action string, within time.Duration) map[string]any {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case m := <-p.msgs:
			if m["action"] == action {
				return m
			}
		case <-p.done:
			t.Fatalf("connection ended waiting for %q: %v", action, p.err)
		case <-deadline:
			t.Fatalf("no %q within %v", action, within)
		}
	}
}

// echo checks that a message goes through the sidecar and back.
func (p *peer) echo(t *testing.T, text string) {
	t.Helper()
	p.send(t, map[string]any{"action": "say", "data": map[string]any{"text": text}})
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-p.msgs:
			if d, _ := m["data"].(map[string]any); m["action"] == "say" && d["text"] == text {
				return
			}
		case <-p.done:
			t.Fatalf("connection ended waiting for the echo of %q: %v", text, p.err)
		case <-deadline:
			t.Fatalf("no echo of %q", text)
		}
	}
}

// metric reads one unlabelled sample from the sidecar's /metrics.
func metric(t *testing.T, sc *sidecar, name string) float64 {
	t.Helper()
	for _, line := range metricLines(t, sc) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not in /metrics", name)
	return 0
}

func readyz(t *testing.T, sc *sidecar) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + sc.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	verdict, _, _ := strings.Cut(string(b), "\n") // then one line per check
	return resp.StatusCode, verdict
}

// sessionView is the part of GET /v1/sessions/{id} these tests read.
type sessionView struct {
	State       string `json:"state"`
	HandedOver  bool   `json:"handedOver"`
	Connections int    `json:"connections"`
	Deadline    string `json:"deadline"`
}

func getSession(t *testing.T, sc *sidecar, id string) (sessionView, bool) {
	t.Helper()
	code, body := sc.api("GET", "/v1/sessions/"+id, nil)
	var v sessionView
	if code != 200 || json.Unmarshal(body, &v) != nil {
		return v, false
	}
	return v, true
}

func waitHandedOver(t *testing.T, sc *sidecar, id string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, "hand-over of "+id, func() bool {
		v, ok := getSession(t, sc, id)
		return ok && v.HandedOver
	})
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// netns is a network namespace joined to this one by a veth pair: host
// holds hostIP (the sidecar listens there), the namespace holds nsIP.
type netns struct {
	name, hostIf, nsIf string
	hostIP, nsIP       string
}

// newNetns makes a namespace and a /30 in 10.200.0.0/16 that no interface
// here uses yet; t.Cleanup deletes both (after the test's own clean-ups,
// which close the sockets that keep a namespace alive).
func newNetns(t *testing.T) *netns {
	t.Helper()
	pid := os.Getpid()
	n := &netns{
		name:   fmt.Sprintf("psc-e2e-%d", pid),
		hostIf: fmt.Sprintf("psch%d", pid), // at most 11 bytes of IFNAMSIZ's 15
		nsIf:   fmt.Sprintf("pscc%d", pid),
	}
	addrs := run(t, "ip", "-o", "-4", "addr", "show")
	for i := range 250 {
		third := (pid+i)%250 + 1
		if !strings.Contains(addrs, fmt.Sprintf(" 10.200.%d.", third)) {
			n.hostIP, n.nsIP = fmt.Sprintf("10.200.%d.1", third), fmt.Sprintf("10.200.%d.2", third)
			break
		}
	}
	if n.hostIP == "" {
		t.Fatal("no free /30 in 10.200.0.0/16")
	}
	run(t, "ip", "netns", "add", n.name)
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", n.hostIf).Run() // gone with the namespace, unless the move failed
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v %s", n.name, err, out)
		}
	})
	run(t, "ip", "link", "add", n.hostIf, "type", "veth", "peer", "name", n.nsIf, "netns", n.name)
	run(t, "ip", "addr", "add", n.hostIP+"/30", "dev", n.hostIf)
	run(t, "ip", "link", "set", n.hostIf, "up")
	run(t, "ip", "-n", n.name, "addr", "add", n.nsIP+"/30", "dev", n.nsIf)
	run(t, "ip", "-n", n.name, "link", "set", n.nsIf, "up")
	run(t, "ip", "-n", n.name, "link", "set", "lo", "up")
	return n
}

// peer runs a client in the namespace (the client helper under ip netns
// exec) connected to ws://addr/ws, and links session sid. t.Cleanup kills it.
func (n *netns) peer(t *testing.T, addr, sid string) *peer {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", n.name, os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=client", "E2E_CLIENT_URL=ws://"+addr+"/ws")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wmu sync.Mutex
	p := newPeer(func(v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		wmu.Lock()
		defer wmu.Unlock()
		_, err = stdin.Write(append(b, '\n'))
		return err
	})
	exited := make(chan struct{})
	go func() {
		lines := bufio.NewScanner(stdout)
		lines.Buffer(make([]byte, 1<<20), 1<<20)
		p.err = errors.New("the client process ended")
		for lines.Scan() {
			var m map[string]any
			json.Unmarshal(lines.Bytes(), &m)
			if end, ok := m["_end"].(string); ok {
				p.err = errors.New(end)
				break
			}
			p.got(m)
		}
		close(p.done)
		io.Copy(io.Discard, stdout)
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	return p.link(t, sid)
}

// A client whose network is cut without FIN or RST (its link goes down: it
// neither closes nor answers) is found by the liveness probe within
// PROBE_INTERVAL + PROBE_TIMEOUT: the sidecar closes both sides, the
// session's interval starts then, and one /expire follows it
// (docs/ARCHITECTURE.md, Presence invariants 2 and 5: only a dead
// connection is closed). When the network comes back the client learns its
// connection is gone, and its return brings the return message.
func TestNetworkCutWithoutFINIsFoundByTheProbe(t *testing.T) {
	const probeInterval, probeTimeout, interval = 500 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second
	const slack = 3 * time.Second // a loaded 2-core machine, a race-enabled binary
	ns := newNetns(t)
	up, upURL := newFaultUpstream(t)
	pf := newPlatform(t)
	env := baseEnv(upURL, pf.url(), t.TempDir())
	env["LISTEN_ADDR"] = freeAddrOn(t, ns.hostIP)
	env["PROBE_INTERVAL"], env["PROBE_TIMEOUT"] = probeInterval.String(), probeTimeout.String()
	env["PRESENCE_CHECK_INTERVAL"] = interval.String()
	sc := start(t, env)

	c := ns.peer(t, sc.addr, "cut-1")
	<-up.links
	c.send(t, map[string]any{"action": "transfer"})
	c.expect(t, "end_conversation", 10*time.Second)
	waitHandedOver(t, sc, "cut-1")

	// Several probe rounds cross the veth and are answered: a live client
	// on this path is left alone.
	time.Sleep(4 * (probeInterval + probeTimeout))
	if v, _ := getSession(t, sc, "cut-1"); v.Connections != 1 {
		t.Fatalf("a client answering the probe lost its connection: %+v", v)
	}
	if n := metric(t, sc, "presence_sidecar_probe_timeouts_total"); n != 0 {
		t.Fatalf("probe timeouts before the cut: %v", n)
	}
	c.echo(t, "before the cut")

	// The cut: the client's side of the link goes down. Nothing is sent
	// to the sidecar, and the client process keeps its socket open.
	run(t, "ip", "-n", ns.name, "link", "set", ns.nsIf, "down")
	cutAt := time.Now()
	testutil.Eventually(t, 30*time.Second, "the sidecar to close the cut connection", func() bool {
		v, ok := getSession(t, sc, "cut-1")
		return ok && v.Connections == 0
	})
	found := time.Since(cutAt)
	t.Logf("cut connection closed %v after the cut (PROBE_INTERVAL+PROBE_TIMEOUT = %v)", found, probeInterval+probeTimeout)
	if found > probeInterval+probeTimeout+slack {
		t.Fatalf("the cut was found after %v, beyond PROBE_INTERVAL+PROBE_TIMEOUT (%v) + %v", found, probeInterval+probeTimeout, slack)
	}
	select {
	case sid := <-up.closed:
		if sid != "cut-1" {
			t.Fatalf("upstream connection of %s closed", sid)
		}
	case <-time.After(slack):
		t.Fatal("the sidecar did not close the upstream side of the cut connection")
	}
	if v, _ := getSession(t, sc, "cut-1"); v.State != "present" || v.Deadline == "" {
		t.Fatalf("after the close the session should be present with its interval running: %+v", v)
	}
	if n := metric(t, sc, "presence_sidecar_probe_timeouts_total"); n != 1 {
		t.Fatalf("probe timeouts: %v, want 1", n)
	}
	select {
	case <-c.done:
		t.Fatalf("the client saw its connection end through a cut network: %v", c.err)
	default:
	}

	h := pf.accepted(t, found+interval+2*slack)
	if h.Path != "/expire" || h.session() != "cut-1" || h.Body["reason"] != "disconnected" {
		t.Fatalf("want /expire for cut-1, got %s %s", h.Path, h.Raw)
	}
	if waited := h.At.Sub(cutAt); waited < interval {
		t.Fatalf("/expire %v after the cut, before the %v interval", waited, interval)
	}

	// The network returns: the client's next frame meets a socket the
	// sidecar has closed, and its connection ends (RST, or the FIN retransmitted).
	run(t, "ip", "-n", ns.name, "link", "set", ns.nsIf, "up")
	c.write(map[string]any{"action": "say", "data": map[string]any{"text": "after the cut"}})
	select {
	case <-c.done:
		t.Logf("the client learned its connection was gone: %v", c.err)
	case <-time.After(20 * time.Second):
		t.Fatal("after the network returned, the client's connection did not end")
	}
	c2 := ns.peer(t, sc.addr, "cut-1")
	c2.echo(t, "back")
	r := pf.accepted(t, 10*time.Second)
	if r.Path != "/message" || r.session() != "cut-1" || r.event() != "client.online" {
		t.Fatalf("want the return message for cut-1, got %s %s", r.Path, r.Raw)
	}
	pf.quiet(t, time.Second)
}

// freeAddrOn picks a free port on ip.
func freeAddrOn(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// upstreamProc is a faultUpstream in a child process.
type upstreamProc struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

// startUpstreamProc runs the upstream helper on addr ("127.0.0.1:0": any port).
func startUpstreamProc(t *testing.T, addr string) *upstreamProc {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=upstream", "E2E_UPSTREAM_ADDR="+addr)
	out, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	u := &upstreamProc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); w.Close(); close(u.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-u.done })
	line, err := bufio.NewReader(out).ReadString('\n')
	go io.Copy(io.Discard, out)
	a, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		t.Fatalf("upstream helper did not start: %q %v", line, err)
	}
	u.addr = a
	return u
}

// The upstream process killed (SIGKILL) while frames flow to the client.
// The kernel closes its sockets, and the sidecar ends the client's side the
// same way: at the TCP level, with no Close frame of its own (it writes
// only the probe's Ping and the shutdown's Close 1001: docs/ARCHITECTURE.md,
// Wire bytes), so a WebSocket client reports 1006 (abnormal closure, RFC
// 6455 §7.1.5), at once rather than after the probe or the linger. The
// sidecar stays up: while the upstream is down a handshake is answered 502,
// and once it is back the next connection is relayed. (What presence makes
// of the outage is invariant 7 of docs/ARCHITECTURE.md, pinned by
// TestUpstreamOutageWithClientRetryingGivesNoExpire.)
func TestUpstreamKilledMidStream(t *testing.T) {
	upA := startUpstreamProc(t, "127.0.0.1:0")
	pf := newPlatform(t)
	env := baseEnv("http://"+upA.addr, pf.url(), t.TempDir())
	env["PROBE_INTERVAL"], env["PROBE_TIMEOUT"] = "1s", "2s"
	sc := start(t, env)

	c, conn := dialPeer(t, sc.addr, "kill-up-1")
	c.send(t, map[string]any{"action": "stream"})
	for range 50 {
		c.expect(t, "tick", 10*time.Second)
	}
	upA.cmd.Process.Signal(syscall.SIGKILL)
	killedAt := time.Now()
	<-upA.done
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the client's connection did not end within 5s of the upstream's death")
	}
	t.Logf("client's connection ended %v after the kill: %v", time.Since(killedAt), c.err)
	var ce *websocket.CloseError
	switch {
	case errors.As(c.err, &ce) && ce.Code == websocket.CloseAbnormalClosure:
	case errors.Is(c.err, syscall.ECONNRESET):
	default:
		t.Fatalf("want the connection to end without a Close frame (1006) or with a reset, got %v", c.err)
	}
	conn.Close()
	testutil.Eventually(t, 15*time.Second, "no open connection left", func() bool {
		return metric(t, sc, "presence_sidecar_open_connections") == 0
	})

	// Still serving: the upstream is down, so the handshake is refused 502.
	resp, err := http.Get("http://" + sc.admin + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz after the upstream died: %v %v", resp, err)
	}
	resp.Body.Close()
	_, resp, err = websocket.DefaultDialer.Dial("ws://"+sc.addr+"/ws", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("handshake while the upstream is down: want 502, got %v %v", resp, err)
	}

	// The upstream comes back on the same address: the next connection is relayed.
	startUpstreamProc(t, upA.addr)
	c2, _ := dialPeer(t, sc.addr, "kill-up-2")
	c2.echo(t, "after the restart")
	c2.send(t, map[string]any{"action": "stream"})
	for range 20 {
		c2.expect(t, "tick", 10*time.Second)
	}
	if strings.Contains(sc.logs.String(), "panic") {
		t.Fatalf("the sidecar logged a panic:\n%s", sc.logs.String())
	}
}

// mountedSidecar starts the sidecar in a mount namespace of its own, where
// setup (a shell command given the data directory as $1, then the args in
// extra) mounts its DATA_DIR. The mount exists only in that namespace (never
// in the test's) and goes when the sidecar exits. It returns the data directory as this process reaches it
// (through /proc/PID/root, which resolves in the sidecar's mounts).
func mountedSidecar(t *testing.T, env map[string]string, setup string, extra ...string) (*sidecar, string) {
	t.Helper()
	dir := env["DATA_DIR"]
	script := setup + ` && shift ` + strconv.Itoa(1+len(extra)) + ` && exec "$@"`
	wrap := append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", dir}, extra...)
	sc := startWrapped(t, env, wrap)
	seen := fmt.Sprintf("/proc/%d/root%s", sc.cmd.Process.Pid, dir)
	mounts, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", sc.cmd.Process.Pid))
	if err != nil || !strings.Contains(string(mounts), " "+dir+" ") {
		t.Fatalf("the sidecar's DATA_DIR %s is not a mount of its own: %v\n%s", dir, err, mounts)
	}
	if hostMounts, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(hostMounts), " "+dir+" ") {
		t.Fatalf("the mount of %s leaked into the test's namespace", dir)
	}
	return sc, seen
}

// storeTrouble is what the disk-full and read-only tests share: with the
// store's writes failing, the failure is logged naming the file and the
// system's error, /readyz stays 200 and says presence is degraded, the API
// refuses a change it cannot store with a clear error, and WebSocket
// traffic is relayed, on open connections and new ones alike (README, State
// and durability; docs/ARCHITECTURE.md, Durability).
// sysErrs are the system's error as the log and /readyz may word it (any one).
func storeTrouble(t *testing.T, sc *sidecar, dbPath string, sysErrs []string, before *peer) {
	t.Helper()
	// Changes the API must store before answering, until one fails (a few
	// may still fit in pages the file already has).
	var code int
	var body []byte
	for i := 0; i < 500 && code != http.StatusConflict; i++ {
		code, body = sc.api("PUT", fmt.Sprintf("/v1/sessions/filler-%d-%s/handoff", i, strings.Repeat("x", 200)), nil)
	}
	if code != http.StatusConflict || !strings.Contains(string(body), "store did not accept") {
		t.Fatalf("the API kept storing changes on a failing store: %d %s", code, body)
	}
	says := func(s string) bool {
		for _, e := range sysErrs {
			if strings.Contains(s, e) {
				return true
			}
		}
		return false
	}
	what := strings.Join(sysErrs, " or ")
	testutil.Eventually(t, 10*time.Second, "an error log line naming "+dbPath+" and "+what, func() bool {
		for _, line := range strings.Split(sc.logs.String(), "\n") {
			if strings.Contains(line, `"level":"error"`) && strings.Contains(line, dbPath) && says(line) {
				return true
			}
		}
		return false
	})
	testutil.Eventually(t, 10*time.Second, "/readyz to say presence is degraded, naming "+dbPath+" and "+what, func() bool {
		code, body := readyz(t, sc)
		return code == 200 && strings.Contains(body, "presence degraded") && strings.Contains(body, dbPath) && says(body)
	})
	_, body2 := readyz(t, sc)
	t.Logf("/readyz: %s", body2)
	if n := metric(t, sc, "presence_sidecar_store_errors_total"); n == 0 {
		t.Fatal("presence_sidecar_store_errors_total stayed 0")
	}

	// Traffic still flows: the connection opened before, and a new one
	// whose session and hand-over cannot be stored.
	before.echo(t, "during the outage")
	c, _ := dialPeer(t, sc.addr, "during-"+filepath.Base(filepath.Dir(dbPath)))
	c.send(t, map[string]any{"action": "transfer"})
	c.expect(t, "end_conversation", 10*time.Second)
	for i := range 20 {
		c.echo(t, fmt.Sprintf("message %d", i))
	}
	if code, _ := readyz(t, sc); code != 200 {
		t.Fatalf("/readyz %d: a failing store must not take the sidecar out of its load balancer", code)
	}
}

// DATA_DIR full (a 512 KiB tmpfs filled up while the sidecar runs): see
// storeTrouble. When space returns, the decisions kept in memory are
// written and /readyz is plain "ready" again.
func TestDiskFullKeepsRelaying(t *testing.T) {
	up, upURL := newFaultUpstream(t)
	pf := newPlatform(t)
	env := baseEnv(upURL, pf.url(), filepath.Join(t.TempDir(), "data"))
	os.MkdirAll(env["DATA_DIR"], 0o750)
	sc, dir := mountedSidecar(t, env, `mount -t tmpfs -o size=512k,mode=0750 presence-e2e "$1"`)
	dbPath := filepath.Join(env["DATA_DIR"], "presence-sidecar.db")

	a, aConn := dialPeer(t, sc.addr, "full-a")
	<-up.links
	a.send(t, map[string]any{"action": "transfer"})
	a.expect(t, "end_conversation", 10*time.Second)
	waitHandedOver(t, sc, "full-a")
	if _, body := readyz(t, sc); body != "ready" {
		t.Fatalf("/readyz before the disk filled: %q", body)
	}

	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Write(make([]byte, 1<<20)) // twice the file system
	f.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling %s: want ENOSPC, got %v", filler, err)
	}
	storeTrouble(t, sc, dbPath, []string{"no space left on device"}, a)

	// Space returns: the writes kept for retry go through.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "/readyz to be plain ready again", func() bool {
		_, body := readyz(t, sc)
		return body == "ready"
	})
	closeClean(aConn)
	deadline := time.Now().Add(20 * time.Second)
	for {
		// The API's sessions, handed over and never connected, expire too.
		h := pf.accepted(t, time.Until(deadline))
		if h.session() == "full-a" {
			if h.Path != "/expire" {
				t.Fatalf("want /expire for full-a, got %s %s", h.Path, h.Raw)
			}
			break
		}
	}
}

// The data file turning read-only while the sidecar runs: ext4 on a loop
// device mounted errors=remount-ro, with a file-system error triggered
// (what the kernel does on a failing disk). Writes fail with EIO or EROFS,
// reads still work: see storeTrouble. (Remounting a tmpfs or a bind mount
// read-only is refused while the sidecar holds the file open for writing,
// so the kernel's own emergency remount is the way to get there.)
func TestDataFileTurnsReadOnlyKeepsRelaying(t *testing.T) {
	up, upURL := newFaultUpstream(t)
	pf := newPlatform(t)
	tmp := t.TempDir()
	img := filepath.Join(tmp, "data.img")
	run(t, "truncate", "-s", "16M", img)
	run(t, "mkfs.ext4", "-q", "-F", img)
	t.Cleanup(func() { // the loop device goes with the last mount of it: check
		testutil.Eventually(t, 10*time.Second, "the loop device to be released", func() bool {
			out, _ := exec.Command("losetup", "-j", img).Output()
			return len(strings.TrimSpace(string(out))) == 0
		})
	})
	env := baseEnv(upURL, pf.url(), filepath.Join(tmp, "data"))
	os.MkdirAll(env["DATA_DIR"], 0o750)
	sc, _ := mountedSidecar(t, env, `mount -o loop,errors=remount-ro "$2" "$1"`, img)
	dbPath := filepath.Join(env["DATA_DIR"], "presence-sidecar.db")

	a, _ := dialPeer(t, sc.addr, "ro-a")
	<-up.links
	a.send(t, map[string]any{"action": "transfer"})
	a.expect(t, "end_conversation", 10*time.Second)
	waitHandedOver(t, sc, "ro-a")

	dev := ""
	mounts, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", sc.cmd.Process.Pid))
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == env["DATA_DIR"] {
			if _, after, ok := strings.Cut(line, " - "); ok {
				if g := strings.Fields(after); len(g) > 1 && g[0] == "ext4" {
					dev = filepath.Base(g[1])
				}
			}
		}
	}
	if dev == "" {
		t.Fatalf("no ext4 mount at %s:\n%s", env["DATA_DIR"], mounts)
	}
	if err := os.WriteFile("/sys/fs/ext4/"+dev+"/trigger_fs_error", []byte("presence-sidecar e2e\n"), 0); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the file system to turn read-only", func() bool {
		m, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mounts", sc.cmd.Process.Pid))
		for _, line := range strings.Split(string(m), "\n") {
			if f := strings.Fields(line); len(f) > 3 && f[1] == env["DATA_DIR"] {
				return strings.HasPrefix(f[3], "ro") || strings.Contains(f[3], "emergency_ro")
			}
		}
		return false
	})
	storeTrouble(t, sc, dbPath, []string{"input/output error", "read-only file system"}, a)
}

// A data directory that is read-only at start (the file chmod 0444, and,
// since root ignores permissions, a read-only bind mount) stops start-up
// with a message naming the file: the README's promise (State and
// durability) that the sidecar never starts over a store it cannot keep,
// rather than relaying without presence.
func TestReadOnlyDataDirAtStartIsRefused(t *testing.T) {
	_, upURL := newFaultUpstream(t)
	pf := newPlatform(t)
	env := baseEnv(upURL, pf.url(), t.TempDir())
	first := start(t, env)
	if code := first.stop(); code != 0 {
		t.Fatalf("first run exited %d", code)
	}
	dbPath := filepath.Join(env["DATA_DIR"], "presence-sidecar.db")
	if err := os.Chmod(dbPath, 0o444); err != nil {
		t.Fatal(err)
	}
	env["LISTEN_ADDR"], env["ADMIN_ADDR"] = "", ""
	script := `mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"`
	args := []string{"--mount", "--propagation", "private", "sh", "-c", script, "sh", env["DATA_DIR"], binary}
	cmd := exec.Command("unshare", args...)
	for k, v := range env {
		if v == "" {
			v = freeAddr(t)
		}
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, "PATH="+os.Getenv("PATH"))
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the sidecar started over a read-only store:\n%s", out)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("want a non-zero exit, got %v\n%s", err, out)
	}
	if !strings.Contains(string(out), dbPath) || !strings.Contains(string(out), "read-only file system") {
		t.Fatalf("the error should name %s and say it is read-only:\n%s", dbPath, out)
	}
	t.Logf("start-up refused: %s", lastLine(string(out)))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
