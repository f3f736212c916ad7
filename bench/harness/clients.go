package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
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

// echoMessage is a size-byte JSON text message shaped like the seed's.
func echoMessage(session string, size int) []byte {
	head := fmt.Sprintf(`{"action":"message","data":{"sessionId":%q,"text":"`, session)
	tail := `"}}`
	pad := size - len(head) - len(tail)
	if pad < 0 {
		// Long session ids: keep the size exact; the text shrinks to fit.
		head = `{"action":"message","data":{"text":"`
		pad = size - len(head) - len(tail)
	}
	return []byte(head + strings.Repeat("x", pad) + tail)
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
	c, resp, err := d.DialContext(ctx, url, nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %w (HTTP %s)", url, err, resp.Status)
		}
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	link := linkFrame(session)
	c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if err := c.WriteMessage(websocket.TextMessage, link); err != nil {
		c.Close()
		return nil, fmt.Errorf("sending link: %w", err)
	}
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	_, got, err := c.ReadMessage()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("reading the link's echo: %w", err)
	}
	if string(got) != string(link) {
		c.Close()
		return nil, fmt.Errorf("the link's echo differs: %q", got)
	}
	c.SetReadDeadline(time.Time{})
	c.SetWriteDeadline(time.Time{})
	return c, nil
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

type echoResult struct {
	msgs     int
	perSec   float64
	p50, p99 time.Duration
	max      time.Duration
	cpu      float64
	foreign  float64
}

// runEcho runs cfg.Clients closed-loop clients: send a message, wait for its
// echo, again, for Warmup+Duration. Round trips that start inside the
// measured window count.
func runEcho(ctx context.Context, p *proxyProc, up *upstreamProc, tag string, cfg Config) (echoResult, error) {
	var res echoResult
	d := websocket.Dialer{HandshakeTimeout: ioTimeout, ReadBufferSize: 4096, WriteBufferSize: 4096}
	conns := make([]*websocket.Conn, cfg.Clients)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.NetConn().Close()
			}
		}
	}()
	for i := range conns {
		c, err := dialLinked(ctx, &d, p.url(), fmt.Sprintf("bench-%s-echo-%d", tag, i))
		if err != nil {
			return res, fmt.Errorf("echo client %d: %w", i+1, err)
		}
		conns[i] = c
	}

	start := time.Now()
	from := start.Add(cfg.Warmup)
	until := from.Add(cfg.Duration)
	lat := make([][]time.Duration, len(conns))
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		lat[i] = make([]time.Duration, 0, 1<<14)
		wg.Go(func() {
			msg := echoMessage(fmt.Sprintf("bench-%s-echo-%d", tag, i), cfg.MsgSize)
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(until) {
					return
				}
				c.SetWriteDeadline(t0.Add(ioTimeout))
				c.SetReadDeadline(t0.Add(ioTimeout))
				if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
					errs[i] = fmt.Errorf("echo client %d: write: %w", i+1, err)
					return
				}
				_, r, err := c.NextReader()
				if err != nil {
					errs[i] = fmt.Errorf("echo client %d: read: %w", i+1, err)
					return
				}
				n, err := io.Copy(io.Discard, r)
				if err != nil {
					errs[i] = fmt.Errorf("echo client %d: read: %w", i+1, err)
					return
				}
				if n != int64(len(msg)) {
					errs[i] = fmt.Errorf("echo client %d: echo of %d bytes, sent %d", i+1, n, len(msg))
					return
				}
				if !t0.Before(from) {
					lat[i] = append(lat[i], time.Since(t0))
				}
			}
		})
	}

	// CPU over the measured window: the proxy's, and that of everything on
	// the machine that is not this benchmark (noise).
	cpuDone := make(chan [2]float64, 1)
	go func() {
		time.Sleep(time.Until(from))
		ours := func() int64 { return procTicks(append(p.pids(), os.Getpid(), up.cmd.Process.Pid)...) }
		t0, p0, o0, m0 := time.Now(), p.cpuTicks(), ours(), machineBusyTicks()
		time.Sleep(time.Until(until))
		secs := time.Since(t0).Seconds()
		proxy := float64(p.cpuTicks()-p0) / clockTicks / secs
		foreign := float64((machineBusyTicks()-m0)-(ours()-o0)) / clockTicks / secs
		cpuDone <- [2]float64{proxy, max(foreign, 0)}
	}()
	wg.Wait()
	cpus := <-cpuDone
	res.cpu, res.foreign = cpus[0], cpus[1]
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}

	all := slices.Concat(lat...)
	if len(all) == 0 {
		return res, errors.New("no echo completed in the measured window")
	}
	slices.Sort(all)
	res.msgs = len(all)
	res.perSec = float64(len(all)) / cfg.Duration.Seconds()
	res.p50 = percentile(all, 0.50)
	res.p99 = percentile(all, 0.99)
	res.max = all[len(all)-1]
	return res, nil
}

// percentile of a sorted sample (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
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
