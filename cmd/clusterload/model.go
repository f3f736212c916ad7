package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// awayKind is what a time away means to the sidecar.
type awayKind int

const (
	kReconnect awayKind = iota // back within shortMax of the interval: nothing
	kAbsence                   // away for longMin intervals or more (or for good): one /expire, one return message if it came back
	kAmbiguous                 // a reconnect that took longer than planned (a loaded machine): nothing, or both
)

// away is one time a session spent without a connection.
type away struct {
	start  time.Time // the client went away (for a kill: the kill)
	end    time.Time // it began to come back (its dial); zero: never (the run ended)
	kind   awayKind
	killed bool // its connection was dropped by the kill
	// unseenReturn: it ended a return from an absence that the kill may
	// have cut before it reached Redis; then nothing was decided, and the
	// absence before goes on: no return message for it yet, and no
	// /expire for this away.
	unseenReturn bool
	// unseenFirst: the kill dropped the session's first connection so soon
	// after it opened that its replica may never have told Redis; then
	// Redis never had the session, and there is nothing to decide.
	unseenFirst bool
	age         time.Duration // a killed connection's: from its link to the kill
	gap         time.Duration // a reconnect's: from start to the new connection's answered link
}

// session is one session id. Its aways are written by its goroutine only
// and read once it has ended; its notes are the receiver's.
type session struct {
	idx   int
	id    string
	aways []away

	mu    sync.Mutex
	notes []note
	offs  int
	offCh chan struct{} // closed at the next client.offline
}

func (s *session) received(n note) {
	s.mu.Lock()
	s.notes = append(s.notes, n)
	if n.offline {
		s.offs++
		if s.offCh != nil {
			close(s.offCh)
			s.offCh = nil
		}
	}
	s.mu.Unlock()
}

func (s *session) offCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.offs
}

// waitOff waits for the session's client.offline count to pass n; false if
// until or stop came first.
func (s *session) waitOff(n int, until time.Time, stop <-chan struct{}) bool {
	for {
		s.mu.Lock()
		if s.offs > n {
			s.mu.Unlock()
			return true
		}
		if s.offCh == nil {
			s.offCh = make(chan struct{})
		}
		ch := s.offCh
		s.mu.Unlock()
		t := time.NewTimer(time.Until(until))
		select {
		case <-ch:
			t.Stop()
		case <-t.C:
			return false
		case <-stop:
			t.Stop()
			return false
		}
	}
}

// load is the churn: the sessions, the replicas they connect to, and the
// tokens that bound the connections open at once.
type load struct {
	cfg      config
	replicas []*replica
	tokens   chan struct{}
	stop     chan struct{} // closed at the end of the churn

	open                                               peakGauge
	conns, echoes, refused, dialErrs, drops, killDrops atomic.Int64
	linkErrs, giveUps                                  atomic.Int64
	errMu                                              sync.Mutex
	errs                                               []string
}

func (l *load) fail(format string, args ...any) {
	l.errMu.Lock()
	if len(l.errs) < 20 {
		l.errs = append(l.errs, fmt.Sprintf(format, args...))
	}
	l.errMu.Unlock()
}

func (l *load) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

// sleepUntil sleeps until t; false if the churn ended first.
func (l *load) sleepUntil(t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return !l.stopped()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-l.stop:
		return false
	}
}

func (l *load) acquire() bool {
	select {
	case l.tokens <- struct{}{}:
		return true
	case <-l.stop:
		return false
	}
}

func (l *load) release() { <-l.tokens }

func uniform(lo, hi float64) float64 { return lo + (hi-lo)*rand.Float64() }

func scale(d time.Duration, f float64) time.Duration { return time.Duration(float64(d) * f) }

// play runs session s from startAt until the churn ends. Each turn: a
// connection to a random replica (linked, echoing, probed) held for a while,
// then away, either briefly (a reconnect, keeping its token) or for long (an
// absence: the token goes back, and the client returns only once its
// /expire came, so that a loaded machine's late decision is not taken for a
// missing one). A connection dropped by the kill is away from the kill on.
func (l *load) play(s *session, startAt time.Time) {
	if !l.sleepUntil(startAt) || !l.acquire() {
		return
	}
	holding := true
	defer func() {
		if holding {
			l.release()
		}
	}()
	cur := -1 // index of the away in progress
	final := func() {
		if cur >= 0 {
			s.aways[cur].end = time.Time{}
			s.aways[cur].kind = kAbsence // the run ended: away for good
		}
	}
	for {
		if cur >= 0 {
			s.aways[cur].end = time.Now()
		}
		c, rep, gen, err := l.connect(s)
		if err != nil {
			if !l.stopped() {
				l.giveUps.Add(1)
				l.fail("session %s: %v", s.id, err)
			}
			final()
			return
		}
		openedAt := time.Now()
		if cur >= 0 {
			a := &s.aways[cur]
			a.gap = openedAt.Sub(a.start)
			if a.kind == kReconnect && a.gap > scale(l.cfg.interval, ambiguousAt) {
				a.kind = kAmbiguous
			}
		}
		// The end of the churn cuts a hold short, but never below holdMin: a
		// connection must last long enough for its replica to tell Redis
		// (it writes a session's connection count, not each open and close).
		dropped, dropAt := c.hold(l.cfg.holdMin+time.Duration(rand.Int64N(int64(l.cfg.holdMax-l.cfg.holdMin)+1)), l.cfg.holdMin, l.stop, &l.echoes)
		a := away{start: dropAt}
		if dropped {
			if k := rep.killedAtGen(gen); !k.IsZero() {
				l.killDrops.Add(1)
				a.killed, a.start, a.age = true, k, k.Sub(openedAt)
				// A connection opened just before the kill may never have
				// reached Redis: then the session has been away since its
				// last close, if that was a reconnect's, or was never there,
				// if this was its first connection.
				switch {
				case a.age >= youngConn:
				case cur < 0:
					a.unseenFirst = true
				case s.aways[cur].kind != kAbsence:
					a.start = s.aways[cur].start
				default:
					a.unseenReturn = true // the absence may go on
				}
			} else {
				l.drops.Add(1)
			}
		} else if rand.IntN(2) == 0 {
			c.closeClean()
		}
		c.close()
		l.open.add(-1)
		s.aways = append(s.aways, a)
		cur = len(s.aways) - 1
		if l.stopped() {
			final()
			return
		}
		if rand.Float64() < l.cfg.reconnectShare {
			s.aways[cur].kind = kReconnect
			hi := shortMax
			if a.killed {
				hi = killShortMax
			}
			if !l.sleepUntil(a.start.Add(scale(l.cfg.interval, uniform(shortMin, hi)))) {
				final()
				return
			}
			continue
		}
		s.aways[cur].kind = kAbsence
		offs := s.offCount() // its /expire is an interval away
		l.release()
		holding = false
		least := scale(l.cfg.interval, longMin)
		if a.killed {
			least += l.cfg.lease // the survivors see it go at the lapse
		}
		if !l.sleepUntil(a.start.Add(least + time.Duration(rand.Int64N(int64(time.Second))))) {
			return
		}
		if !s.waitOff(offs, a.start.Add(l.cfg.offWait), l.stop) && l.stopped() {
			return
		}
		if !l.sleepUntil(time.Now().Add(time.Duration(rand.Int64N(int64(300 * time.Millisecond))))) {
			return
		}
		if !l.acquire() {
			return
		}
		holding = true
	}
}

// connect dials random replicas until one links the session.
func (l *load) connect(s *session) (*client, *replica, int, error) {
	var last error
	for try := 0; try < 40; try++ {
		if l.stopped() {
			return nil, nil, 0, errors.New("stopped")
		}
		r := l.replicas[rand.IntN(len(l.replicas))]
		c, err := dial(r.addr, s.id)
		if err != nil {
			last = err
			if errors.Is(err, syscall.ECONNREFUSED) {
				l.refused.Add(1) // the killed replica: try another at once
				continue
			}
			l.dialErrs.Add(1)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		l.open.add(1)
		if err := c.link(s.id); err != nil {
			c.close()
			l.open.add(-1)
			l.linkErrs.Add(1)
			last = err
			continue
		}
		gen, _ := r.current()
		l.conns.Add(1)
		return c, r, gen, nil
	}
	return nil, nil, 0, fmt.Errorf("no replica took the session: %w", last)
}

// client is one WebSocket connection through a sidecar; its reads run on
// their own goroutine, which answers the probe's Pings.
type client struct {
	c    *websocket.Conn
	msgs chan []byte
	done chan struct{}
}

var dialer = &websocket.Dialer{HandshakeTimeout: 15 * time.Second}

func dial(addr, sid string) (*client, error) {
	u := "ws://" + addr + "/ws?" + url.Values{"sessionId": {sid}, "botId": {botID}}.Encode()
	c, _, err := dialer.Dial(u, http.Header{})
	if err != nil {
		return nil, err
	}
	cl := &client{c: c, msgs: make(chan []byte, 4), done: make(chan struct{})}
	go func() {
		defer close(cl.done)
		for {
			_, m, err := c.ReadMessage()
			if err != nil {
				return
			}
			select {
			case cl.msgs <- m:
			default:
			}
		}
	}()
	return cl, nil
}

const step = 15 * time.Second // a loaded machine's worst answer time for one message

func (c *client) send(v any) error {
	c.c.SetWriteDeadline(time.Now().Add(step))
	return c.c.WriteJSON(v)
}

// wait reads until a message with action (and matching, if match is set)
// arrives.
func (c *client) wait(action string, match func(map[string]any) bool) error {
	timeout := time.NewTimer(step)
	defer timeout.Stop()
	for {
		select {
		case raw := <-c.msgs:
			var m map[string]any
			if json.Unmarshal(raw, &m) == nil && m["action"] == action && (match == nil || match(m)) {
				return nil
			}
		case <-c.done:
			return fmt.Errorf("connection ended waiting for %q", action)
		case <-timeout.C:
			return fmt.Errorf("no %q within %v", action, step)
		}
	}
}

func (c *client) link(id string) error {
	if err := c.send(map[string]any{"action": "link", "data": map[string]any{"sessionId": id, "botId": botID}}); err != nil {
		return err
	}
	return c.wait("link", nil)
}

// hold keeps the connection for d (or, once stop is closed, for least),
// echoing a message about every 0.5–1 s; it returns whether the connection ended by itself, and when the client
// went away (when it began to close, or saw its connection end).
func (c *client) hold(d, least time.Duration, stop <-chan struct{}, echoes *atomic.Int64) (dropped bool, at time.Time) {
	begin := time.Now()
	end := begin.Add(d)
	for n := 0; ; n++ {
		left := time.Until(end)
		if left <= 0 {
			return false, time.Now()
		}
		t := time.NewTimer(min(left, time.Duration(500+rand.IntN(500))*time.Millisecond))
		select {
		case <-c.done:
			t.Stop()
			return true, time.Now()
		case <-stop:
			t.Stop()
			if time.Since(begin) >= least {
				return false, time.Now()
			}
			end, stop = begin.Add(least), nil // hold on to holdMin, then go
			continue
		case <-t.C:
		}
		text := fmt.Sprintf("say %d", n)
		if err := c.send(map[string]any{"action": "say", "data": map[string]any{"text": text}}); err != nil {
			return true, time.Now()
		}
		if err := c.wait("say", func(m map[string]any) bool {
			d, _ := m["data"].(map[string]any)
			return d["text"] == text
		}); err != nil {
			return true, time.Now()
		}
		echoes.Add(1)
	}
}

// closeClean runs the Close handshake (RFC 6455 §7.1.2).
func (c *client) closeClean() {
	c.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
	}
}

func (c *client) close() { c.c.Close() }

// echoUpstream is the conversation service, speaking the seed platform's
// socket protocol as cmd/soak's does: link is answered with a socketId,
// anything else is echoed.
func echoUpstream(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{}
	c, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	for {
		_, raw, err := c.ReadMessage()
		if err != nil {
			return
		}
		var m struct {
			Action string `json:"action"`
		}
		json.Unmarshal(raw, &m)
		if m.Action == "link" {
			err = c.WriteMessage(websocket.TextMessage, []byte(`{"action":"link","data":{"socketId":"clusterload"}}`))
		} else {
			err = c.WriteMessage(websocket.TextMessage, raw)
		}
		if err != nil {
			return
		}
	}
}
