package harness

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

const ioTimeout = 10 * time.Second

// linkFrame is what the seed's WebChat sends first on its socket; the
// presence candidate takes the session and bot ids from it (the default
// SESSION_ID_FROM has frame:data.sessionId). Every candidate gets it, so
// every candidate carries the same traffic.
func linkFrame(session string) []byte {
	return fmt.Appendf(nil, `{"action":"link","data":{"sessionId":%q,"botId":"bench-bot"}}`, session)
}

var idleDialer = websocket.Dialer{
	HandshakeTimeout: ioTimeout,
	ReadBufferSize:   256,
	WriteBufferSize:  256,
	WriteBufferPool:  &sync.Pool{},
	NetDial:          func(network, addr string) (net.Conn, error) { return net.DialTimeout(network, addr, ioTimeout) },
}

// dialLinked opens a WebSocket, sends the link frame and waits for its echo:
// the connection is proxied end to end and, for the presence candidate,
// tracked.
func dialLinked(ctx context.Context, d *websocket.Dialer, url, session string) (*websocket.Conn, error) {
	c, _, err := dial(ctx, d, url)
	if err != nil {
		return nil, err
	}
	if err := link(c, session); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// dial opens a WebSocket and returns the handshake's response headers.
func dial(ctx context.Context, d *websocket.Dialer, url string) (*websocket.Conn, http.Header, error) {
	c, resp, err := d.DialContext(ctx, url, nil)
	if err != nil {
		if resp != nil {
			return nil, nil, fmt.Errorf("dial %s: %w (HTTP %s)", url, err, resp.Status)
		}
		return nil, nil, fmt.Errorf("dial %s: %w", url, err)
	}
	return c, resp.Header, nil
}

// link sends the link frame and waits for its echo.
func link(c *websocket.Conn, session string) error {
	msg := linkFrame(session)
	c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
		return fmt.Errorf("sending link: %w", err)
	}
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	_, got, err := c.ReadMessage()
	if err != nil {
		return fmt.Errorf("reading the link's echo: %w", err)
	}
	if string(got) != string(msg) {
		return fmt.Errorf("the link's echo differs: %q", got)
	}
	c.SetReadDeadline(time.Time{})
	c.SetWriteDeadline(time.Time{})
	return nil
}

// warmUp checks the whole path with one connection before the memory baseline.
func warmUp(ctx context.Context, url string) error {
	var err error
	for range 50 {
		var c *websocket.Conn
		if c, err = dialLinked(ctx, &idleDialer, url, "bench-warmup"); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("warm-up connection: %w", err)
}

// openIdle opens n linked connections, a few at a time, and leaves them idle.
func openIdle(ctx context.Context, url, tag string, n int) ([]*websocket.Conn, error) {
	conns := make([]*websocket.Conn, n)
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(32, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				c, err := dialLinked(ctx, &idleDialer, url, fmt.Sprintf("bench-%s-idle-%d", tag, i))
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("idle connection %d of %d: %w", i+1, n, err)
					}
					mu.Unlock()
					next.Store(int64(n)) // stop the others
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	conns = slices.DeleteFunc(conns, func(c *websocket.Conn) bool { return c == nil })
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return conns, firstErr
}

func closeAll(conns []*websocket.Conn) {
	for _, c := range conns {
		c.NetConn().Close()
	}
}

// holdIdle keeps the idle connections open for d, reading them so that the
// sidecar's liveness probe (a Ping every PROBE_INTERVAL) gets its Pong, as a
// browser would answer it. A connection that ends meanwhile, or a data
// message, is an error.
func holdIdle(ctx context.Context, conns []*websocket.Conn, d time.Duration) error {
	var done atomic.Bool // after d: the ends that follow are closeAll's
	var gone atomic.Int64
	errc := make(chan error, 1)
	for i, c := range conns {
		go func() {
			c.SetReadDeadline(time.Time{})
			for {
				mt, _, err := c.NextReader() // answers Pings, returns data
				if err == nil {
					err = fmt.Errorf("an unexpected message (type %d)", mt)
				}
				if !done.Load() {
					gone.Add(1)
					select {
					case errc <- fmt.Errorf("idle connection %d: %w", i+1, err):
					default:
					}
				}
				return
			}
		}()
	}
	defer done.Store(true)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-errc:
		return fmt.Errorf("while holding the idle connections: %w", err)
	case <-time.After(d):
	}
	done.Store(true)
	if n := gone.Load(); n > 0 {
		return fmt.Errorf("%d idle connections ended while held for %s", n, d)
	}
	return nil
}

// handshakeWorkers open and drop connections in closed loops for the
// handshake rate: few enough that the clients do not starve the proxy.
const handshakeWorkers = 8

// runHandshakes measures new connections per second through the proxy:
// each worker dials, sends a link frame with a new session id (with
// presence on, each a new tracked session), waits for its echo and drops
// the connection, for d. It returns the rate and the proxy's CPU per
// handshake, in seconds.
func runHandshakes(ctx context.Context, p *proxyProc, tag string, d time.Duration) (perSec, cpuPer float64, err error) {
	dialer := websocket.Dialer{HandshakeTimeout: ioTimeout, ReadBufferSize: 1024, WriteBufferSize: 1024}
	var n atomic.Int64
	var firstErr atomic.Pointer[error]
	stop := time.Now().Add(d)
	ticks0 := p.cpuTicks()
	begin := time.Now()
	var wg sync.WaitGroup
	for w := range handshakeWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop) && ctx.Err() == nil; i++ {
				c, err := dialLinked(ctx, &dialer, p.url(), fmt.Sprintf("bench-%s-hs-%d-%d", tag, w, i))
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				c.Close()
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin).Seconds()
	if e := firstErr.Load(); e != nil {
		return 0, 0, fmt.Errorf("handshake: %w", *e)
	}
	perSec = float64(n.Load()) / elapsed
	if p.measured() && n.Load() > 0 {
		cpuPer = float64(p.cpuTicks()-ticks0) / clockTicks / float64(n.Load())
	}
	return perSec, cpuPer, nil
}
