package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

const ioTimeout = 10 * time.Second

const botID = "clusterproxy-bot"

// linkFrame is what the seed's WebChat sends first; the sidecar takes the
// session id from it (SESSION_ID_FROM's default has frame:data.sessionId).
func linkFrame(session string) []byte {
	return fmt.Appendf(nil, `{"action":"link","data":{"sessionId":%q,"botId":%q}}`, session, botID)
}

var dialer = websocket.Dialer{
	HandshakeTimeout: ioTimeout,
	ReadBufferSize:   512,
	WriteBufferSize:  512,
	NetDialContext:   (&net.Dialer{Timeout: ioTimeout}).DialContext,
}

// Error kinds of a connect.
const (
	errDial      = "dial"            // TCP connect, or the handshake's I/O
	errHandshake = "handshake"       // an answer other than 101
	errClosed    = "closed"          // the connection ended before the echo
	errEcho      = "echo"            // no echo in time, or a different one
	errCloseHS   = "close handshake" // our Close was not answered with a normal Close
)

var errKinds = []string{errDial, errHandshake, errClosed, errEcho, errCloseHS}

// connectErr is a failed connect, by kind.
type connectErr struct {
	kind string
	err  error
}

func (e *connectErr) Error() string { return e.kind + ": " + e.err.Error() }

// linked dials url, sends the link frame and waits for its echo.
func linked(ctx context.Context, url, session string) (*websocket.Conn, error) {
	c, resp, err := dialer.DialContext(ctx, url, nil)
	if err != nil {
		if resp != nil {
			return nil, &connectErr{errHandshake, fmt.Errorf("HTTP %s: %w", resp.Status, err)}
		}
		return nil, &connectErr{errDial, err}
	}
	link := linkFrame(session)
	c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if err := c.WriteMessage(websocket.TextMessage, link); err != nil {
		c.Close()
		return nil, &connectErr{errClosed, fmt.Errorf("sending link: %w", err)}
	}
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	_, got, err := c.ReadMessage()
	if err != nil {
		c.Close()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, &connectErr{errEcho, fmt.Errorf("no echo of the link within %v", ioTimeout)}
		}
		return nil, &connectErr{errClosed, fmt.Errorf("reading the link's echo: %w", err)}
	}
	if string(got) != string(link) {
		c.Close()
		return nil, &connectErr{errEcho, fmt.Errorf("the echo differs: %.100q", got)}
	}
	c.SetReadDeadline(time.Time{})
	c.SetWriteDeadline(time.Time{})
	return c, nil
}

// closeClean runs the Close handshake: our Close, the peer's in answer
// (relayed by the sidecar from the upstream), then the TCP close.
func closeClean(c *websocket.Conn) error {
	defer c.Close()
	if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(ioTimeout)); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue // a late data message: not ours to judge here
		}
		if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseNoStatusReceived) {
			return nil
		}
		return err
	}
}

// sample is one connect's outcome.
type sample struct {
	at   time.Time     // its scheduled start
	lat  time.Duration // from the scheduled start to the echo; 0 if it failed
	kind string        // "" or the error kind
	err  error
}

// connectLoad opens a new WebSocket every 1/rate s, alternating replicas,
// each with a fresh session id: dial, handshake, link echo, then a clean
// close. Open loop: attempts start at their scheduled time whether or not
// earlier ones have finished, and latency counts from that time, so a stall
// shows in full (no coordinated omission).
type connectLoad struct {
	rate     float64
	urls     []string
	prefix   string
	mu       sync.Mutex
	samples  []sample
	inflight sync.WaitGroup
	end      atomic.Int64 // Unix ns: no attempt starts at or after; 0: not known yet
	late     atomic.Int64 // scheduler wake-ups more than 1 ms late (the client machine's own noise)
	maxLate  atomic.Int64
}

func (l *connectLoad) run(ctx context.Context, start time.Time) {
	period := time.Duration(float64(time.Second) / l.rate)
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * period)
		if end := l.end.Load(); end != 0 && at.UnixNano() >= end || ctx.Err() != nil {
			return
		}
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		if late := time.Since(at); late > time.Millisecond {
			l.late.Add(1)
			if int64(late) > l.maxLate.Load() {
				l.maxLate.Store(int64(late))
			}
		}
		url := l.urls[i%len(l.urls)]
		session := fmt.Sprintf("%s%d", l.prefix, i)
		l.inflight.Go(func() { l.one(ctx, at, url, session) })
	}
}

func (l *connectLoad) one(ctx context.Context, at time.Time, url, session string) {
	s := sample{at: at}
	ctx, cancel := context.WithTimeout(ctx, 2*ioTimeout)
	defer cancel()
	c, err := linked(ctx, url, session)
	if err != nil {
		s.kind, s.err = err.(*connectErr).kind, err
	} else {
		s.lat = time.Since(at)
		if err := closeClean(c); err != nil {
			s.kind, s.err = errCloseHS, err
		}
	}
	l.mu.Lock()
	l.samples = append(l.samples, s)
	l.mu.Unlock()
}

func (l *connectLoad) wait() { l.inflight.Wait() }

// heldConn is one of the sessions held for the whole run. Its reader
// answers the sidecar's liveness Pings (gorilla does, inside reads) and
// hands data messages on.
type heldConn struct {
	c       *websocket.Conn
	session string
	msgs    chan []byte
	ended   chan struct{}
	endErr  error
}

// held is the set of held sessions.
type held struct {
	conns    []*heldConn
	closing  atomic.Bool
	endedN   atomic.Int64 // connections that ended while held
	firstErr atomic.Pointer[string]
	firstAt  atomic.Int64
}

func openHeld(ctx context.Context, urls []string, prefix string, n int) (*held, error) {
	h := &held{conns: make([]*heldConn, n)}
	var next atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range min(32, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				session := fmt.Sprintf("%s%d", prefix, i)
				c, err := linked(ctx, urls[i%len(urls)], session)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("held connection %d of %d: %w", i+1, n, err)
					}
					mu.Unlock()
					next.Store(int64(n))
					return
				}
				hc := &heldConn{c: c, session: session, msgs: make(chan []byte, 1), ended: make(chan struct{})}
				h.conns[i] = hc
				go h.read(hc)
			}
		})
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		h.close()
		return nil, firstErr
	}
	return h, nil
}

func (h *held) read(hc *heldConn) {
	defer close(hc.ended)
	for {
		_, m, err := hc.c.ReadMessage()
		if err != nil {
			hc.endErr = err
			if !h.closing.Load() {
				h.endedN.Add(1)
				msg := fmt.Sprintf("held session %s: %v", hc.session, err)
				if h.firstErr.CompareAndSwap(nil, &msg) {
					h.firstAt.Store(time.Now().UnixNano())
				}
			}
			return
		}
		select {
		case hc.msgs <- m:
		default:
		}
	}
}

// echoAll sends one message on every held connection and waits for its
// echo: the path through each replica still works end to end. It returns
// the failures.
func (h *held) echoAll() (failed int, first error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, hc := range h.conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			msg := fmt.Appendf(nil, `{"action":"message","data":{"sessionId":%q,"text":"still here"}}`, hc.session)
			var err error
			hc.c.SetWriteDeadline(time.Now().Add(ioTimeout))
			if err = hc.c.WriteMessage(websocket.TextMessage, msg); err == nil {
				select {
				case got := <-hc.msgs:
					if string(got) != string(msg) {
						err = fmt.Errorf("the echo differs: %.100q", got)
					}
				case <-hc.ended:
					err = fmt.Errorf("ended: %v", hc.endErr)
				case <-time.After(ioTimeout):
					err = errors.New("no echo within 10 s")
				}
			}
			if err != nil {
				mu.Lock()
				failed++
				if first == nil {
					first = fmt.Errorf("held session %s: %w", hc.session, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return failed, first
}

func (h *held) close() {
	h.closing.Store(true)
	for _, hc := range h.conns {
		if hc != nil {
			hc.c.NetConn().Close()
		}
	}
}
