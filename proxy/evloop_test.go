//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The event loop's own cases (evloop_linux.go): what the goroutine relay
// got from blocking writes and parked reads, the loop must get from
// pending buffers and edge-triggered events.

func onTheLoop(o *Options) { o.GoroutineRelay = false }

// rawUpgradeUpstream answers every upgrade to "x-raw" with a 101 and hands
// the connection, past the handshake, to serveConn on its own goroutine.
func rawUpgradeUpstream(t *testing.T, serveConn func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	return acceptLoop(t, true, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-raw\r\nConnection: Upgrade\r\n\r\n")
		serveConn(c, br)
	})
}

// rawUpgrade opens a connection through the proxy and upgrades it to x-raw.
func rawUpgrade(t testing.TB, addr string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /raw HTTP/1.1\r\nHost: x\r\nUpgrade: x-raw\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(waitTime))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		c.Close()
		t.Fatalf("handshake: %v %v", err, resp)
	}
	c.SetReadDeadline(time.Time{})
	return c.(*net.TCPConn), br
}

// TestLoopHoldsIdleConnectionsWithoutGoroutines: once open, a connection
// costs the proxy no goroutine (the upstream's handlers are the only new
// ones), and every one is relayed by the loop.
func TestLoopHoldsIdleConnectionsWithoutGoroutines(t *testing.T) {
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, data, err := c.ReadMessage()
			if err != nil || c.WriteMessage(mt, data) != nil {
				return
			}
		}
	}))
	tp := startProxy(t, up, onTheLoop)
	const n = 100
	before := runtime.NumGoroutine()
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		conns[i], _ = gorillaDial(t, nil, tp.ws(fmt.Sprintf("/?sessionId=s%d", i)), nil)
		echo(t, conns[i], websocket.TextMessage, []byte(`{"hello":1}`))
	}
	time.Sleep(50 * time.Millisecond) // handler goroutines finish
	grown := runtime.NumGoroutine() - before
	// The upstream runs one handler per connection; the proxy adds none.
	if grown > n+10 {
		t.Errorf("%d goroutines more for %d open connections; the loop should hold them with none of the proxy's", grown, n)
	}
	tp.p.connsMu.Lock()
	for c := range tp.p.conns {
		if !c.looped {
			t.Errorf("conn %d is not on the event loop", c.id)
		}
	}
	tp.p.connsMu.Unlock()
	// And they still work after sitting idle.
	time.Sleep(100 * time.Millisecond)
	for _, c := range conns {
		echo(t, c, websocket.TextMessage, []byte(`{"again":1}`))
		c.Close()
	}
}

// TestIdleLoopParksOnThePoller: a loop with nothing to do waits like a
// goroutine blocked on a socket ("IO wait"), not in epoll_wait holding a P
// ("syscall"), which with GOMAXPROCS=1 starves every goroutine it wakes
// until sysmon steps in (evloop_linux.go, wait).
func TestIdleLoopParksOnThePoller(t *testing.T) {
	up, ups := rawUpstream(t)
	tp := startProxy(t, up, onTheLoop)
	rawDial(t, tp.addr, "/?sessionId=idle", nil)
	acceptRaw(t, ups)
	deadline := time.Now().Add(waitTime)
	for {
		states := loopStates()
		if len(states) == 0 {
			t.Fatal("no event loop goroutine is running")
		}
		parked := 0
		for _, st := range states {
			if strings.HasPrefix(st, "IO wait") {
				parked++
			}
		}
		if parked == len(states) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("idle loops are %q, want all in IO wait", states)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// loopStates returns the scheduler state of every event-loop goroutine.
func loopStates() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var states []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "proxy.(*eventLoop).run(") {
			continue
		}
		// "goroutine 7 [IO wait, 2 minutes]:"
		head, _, _ := strings.Cut(g, "\n")
		if i, j := strings.IndexByte(head, '['), strings.IndexByte(head, ']'); i >= 0 && j > i {
			states = append(states, head[i+1:j])
		}
	}
	return states
}

// TestLoopBackPressureBoundsWhatItHolds: an upstream floods a client that
// reads nothing for a while. The loop stops reading the upstream while the
// client's socket refuses bytes, holding at most one chunk; when the client
// reads, everything arrives in order, then the upstream's end.
func TestLoopBackPressureBoundsWhatItHolds(t *testing.T) {
	const total = 24 << 20
	payload := randomBytes(total)
	sent := make(chan int, 1)
	up := rawUpgradeUpstream(t, func(c net.Conn, br *bufio.Reader) {
		n, _ := c.Write(payload)
		c.(*net.TCPConn).CloseWrite() // the end follows the last byte
		sent <- n
		io.Copy(io.Discard, br)
	})
	tp := startProxy(t, up, onTheLoop)
	c, br := rawUpgrade(t, tp.addr)
	defer c.Close()

	// While the client does not read, the proxy's pending bytes stay within
	// one read's worth.
	conn := waitConn(t, tp.p)
	deadline := time.Now().Add(500 * time.Millisecond)
	maxPending := 0
	for time.Now().Before(deadline) {
		s := &conn.socks.s[clientSide]
		s.mu.Lock()
		if s.pending != nil && len(*s.pending) > maxPending {
			maxPending = len(*s.pending)
		}
		s.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	if maxPending > relayBufSize+maxHeld {
		t.Errorf("the proxy held %d bytes for a client that does not read; want at most one chunk (%d)", maxPending, relayBufSize)
	}
	select {
	case <-sent:
		t.Fatal("the upstream wrote everything while the client read nothing: the loop did not push back")
	default:
	}

	got, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != total || sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("client got %d bytes (want %d), equal: %v", len(got), total, bytes.Equal(got, payload))
	}
	c.Close()
	tp.rec.wait(t, "ConnClosed", isKind(evClosed))
}

// TestLoopHalfCloseDeliversBothWays: the client ends its side; the upstream
// sees every byte and then the end, and its answer still reaches the
// client after that.
func TestLoopHalfCloseDeliversBothWays(t *testing.T) {
	up := rawUpgradeUpstream(t, func(c net.Conn, br *bufio.Reader) {
		all, _ := io.ReadAll(br) // until the client's end
		sum := sha256.Sum256(all)
		fmt.Fprintf(c, "%d %x", len(all), sum[:4])
	})
	tp := startProxy(t, up, onTheLoop)
	c, br := rawUpgrade(t, tp.addr)
	defer c.Close()
	msg := randomBytes(3<<20 + 17)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(waitTime))
	got, err := io.ReadAll(br)
	sum := sha256.Sum256(msg)
	if want := fmt.Sprintf("%d %x", len(msg), sum[:4]); err != nil || string(got) != want {
		t.Fatalf("answer %q, %v; want %q", got, err, want)
	}
	tp.rec.wait(t, "ConnClosed", isKind(evClosed))
}

// TestLoopChurnKeepsStreamsApart: connections open, echo and end (some with
// a reset) at once on every loop, so descriptors and slots are reused
// while events are in flight; each stream gets exactly its own bytes back.
func TestLoopChurnKeepsStreamsApart(t *testing.T) {
	up := rawUpgradeUpstream(t, func(c net.Conn, br *bufio.Reader) { io.Copy(c, br) })
	tp := startProxy(t, up, onTheLoop)
	const workers, rounds = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				c, br := rawUpgrade(t, tp.addr)
				msg := bytes.Repeat([]byte(fmt.Sprintf("[%d.%d]", w, r)), 2000+r*97)
				go c.Write(msg)
				got := make([]byte, len(msg))
				c.SetReadDeadline(time.Now().Add(waitTime))
				if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, msg) {
					errs <- fmt.Errorf("worker %d round %d: %v, equal %v", w, r, err, bytes.Equal(got, msg))
				}
				if r%3 == 0 {
					c.SetLinger(0) // a reset instead of an end
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// waitConn waits for the proxy's one connection.
func waitConn(t *testing.T, p *Proxy) *wsConn {
	t.Helper()
	for deadline := time.Now().Add(waitTime); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		p.connsMu.Lock()
		n := len(p.conns)
		p.connsMu.Unlock()
		if n == 1 {
			return onlyConn(t, p)
		}
	}
	t.Fatal("no connection")
	return nil
}
