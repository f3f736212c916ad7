// Command soak runs the sidecar binary under a churn of WebSocket sessions
// with presence on, and checks that nothing grows and nothing is lost.
//
//	go run ./cmd/soak                      # about 35 s, ~2,000 sessions (CI runs this)
//	SOAK_DURATION=10m go run ./cmd/soak    # longer; SOAK_SESSIONS sets the count (default: 100 a second)
//
// It builds cmd/presence-sidecar (SOAK_SIDECAR names a built binary
// instead) and runs it between an echo upstream speaking the seed
// platform's socket protocol and a receiver standing in for the
// human-service platform, both in this process. Every session links,
// talks (echoed messages, while the probe pings it), drops (a Close
// handshake or a bare TCP close) and, by its kind, comes back:
//
//	within    handed over; back within the interval, then gone   → one /expire (the last absence only)
//	after     handed over; back after its /expire, hand-over ends → one /expire, then one return message
//	gone      handed over; gone                                  → one /expire
//	ended     handed over; the bot ends the hand-over; gone       → nothing
//	bot-only  never handed over; gone                            → nothing
//
// (docs/ARCHITECTURE.md, Presence invariants 1–4.) The hand-over is the
// seed's: the upstream sends {"action":"end_conversation","data":
// {"isTransfer":true}} when the client asks for it. At the end the
// receiver's notifications must equal the expected ones exactly, per
// session and in order, with no duplicate. (On a loaded machine a client
// may be slower than its kind means: a "within" client back only after a
// whole interval, an "after" client back only after the interval and
// PRESENCE_FORGET_AFTER; such a session may have either outcome, and is
// counted and printed; more than a tenth of the sessions late fails the
// run.) And,
// compared with a baseline taken after a warm-up, the sidecar's goroutines,
// open file descriptors, live heap and anonymous RSS must not grow beyond
// the tolerances below. It prints a table of figures and exits non-zero on
// any failure.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// Timing of the sidecar under soak. The interval is short so that sessions
// cycle quickly; the "within" clients return well inside it.
const (
	interval      = 3 * time.Second  // PRESENCE_CHECK_INTERVAL
	forgetAfter   = 5 * time.Second  // PRESENCE_FORGET_AFTER: sessions leave memory, so state does not grow with the run
	probeInterval = time.Second      // every connection that talks for more than a second is probed...
	probeTimeout  = 10 * time.Second // ...and only one that cannot answer for 10 s is closed: the soak must not fail on a loaded machine
	warmupConns   = 300
	// tail is the time after the last session starts for it to finish, be
	// absent and be forgotten.
	tail = 12 * time.Second
)

// Tolerances of growth from the baseline to the end (all connections
// closed, all sessions forgotten). Goroutines and descriptors must come
// back to what they were but for a few (timers, a runtime worker, a
// connection being accepted); the live heap (estimated as the heap goal
// after a GC, halved: GOGC=100) and the anonymous RSS may keep a little of
// what a peak needed (maps do not shrink, the runtime returns memory
// lazily), but not a share of every connection: a leak of 2 KiB per
// connection (6 MiB over the short run's 3,100 connections, 180 MiB over a
// 10-minute run's) fails the heap check.
const (
	tolGoroutines = 8
	tolFDs        = 4
	tolHeapBytes  = 3 << 20 // plus tolHeapShare of the baseline
	tolHeapShare  = 0.25
	tolRSSBytes   = 16 << 20 // plus tolRSSShare of the baseline
	tolRSSShare   = 0.25
)

type kind int

const (
	kWithin kind = iota
	kAfter
	kGone
	kEnded
	kBotOnly
	numKinds
)

var kindNames = [numKinds]string{"within", "after", "gone", "ended", "bot-only"}

// kindOf spreads the kinds over the sessions: 30/25/20/10/15 %.
func kindOf(i int) kind {
	switch r := i % 20; {
	case r < 6:
		return kWithin
	case r < 11:
		return kAfter
	case r < 15:
		return kGone
	case r < 17:
		return kEnded
	default:
		return kBotOnly
	}
}

// expected is what the receiver must get for a kind, in order.
func (k kind) expected() []string {
	switch k {
	case kWithin, kGone:
		return []string{"client.offline"}
	case kAfter:
		return []string{"client.offline", "client.online"}
	}
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "soak: FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("soak: PASS")
}

func run() error {
	duration := 35 * time.Second
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 25*time.Second {
			return fmt.Errorf("SOAK_DURATION=%q: want a duration of 25s or more", v)
		}
		duration = d
	}
	active := duration - tail - 3*time.Second // the warm-up and baselines take about 3 s
	sessions := int(active.Seconds() * 100)
	if v := os.Getenv("SOAK_SESSIONS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < int(numKinds) {
			return fmt.Errorf("SOAK_SESSIONS=%q: want a number of %d or more", v, numKinds)
		}
		sessions = n
	}

	tmp, err := os.MkdirTemp("", "presence-soak")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := os.Getenv("SOAK_SIDECAR")
	if bin == "" {
		bin = filepath.Join(tmp, "presence-sidecar")
		build := exec.Command("go", "build", "-o", bin, "github.com/presence-sidecar/presence-sidecar/cmd/presence-sidecar")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building the sidecar: %w", err)
		}
	}

	upAddr, err := serve(http.HandlerFunc(echoUpstream))
	if err != nil {
		return err
	}
	rcv := newReceiver()
	rcvAddr, err := serve(rcv)
	if err != nil {
		return err
	}
	sc, err := startSidecar(bin, tmp, upAddr, rcvAddr)
	if err != nil {
		return err
	}
	defer sc.stop()
	fail := func(err error) error {
		return fmt.Errorf("%w (sidecar log: last lines below)\n%s", err, sc.logTail(20))
	}

	// Warm-up: a peak of untracked connections (no session id) brings the
	// sidecar's pools and the runtime to their working size.
	fmt.Printf("soak: %v, %d sessions; warm-up with %d connections\n", duration, sessions, warmupConns)
	var wg sync.WaitGroup
	var warmErrs atomic.Int64
	for i := range warmupConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dial(sc.addr)
			if err != nil {
				warmErrs.Add(1)
				return
			}
			defer c.close()
			for j := range 3 {
				if c.echo(fmt.Sprintf("warm %d.%d", i, j)) != nil {
					warmErrs.Add(1)
					return
				}
			}
			c.closeClean()
		}()
	}
	wg.Wait()
	if n := warmErrs.Load(); n > 0 {
		return fail(fmt.Errorf("%d warm-up connections failed", n))
	}
	if err := sc.waitIdle(false, 30*time.Second); err != nil {
		return fail(err)
	}
	base, err := sc.measure()
	if err != nil {
		return fail(err)
	}

	// The run: sessions start evenly over the active window.
	runID := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	ids := make([]string, sessions)
	var perKind [numKinds]int
	for i := range ids {
		ids[i] = fmt.Sprintf("soak-%s-%d", runID, i)
		if kindOf(i) == kAfter {
			rcv.watch(ids[i])
		}
		perKind[kindOf(i)]++
	}
	var st stats
	stopPeak := sc.samplePeak()
	began := time.Now()
	for i := range sessions {
		time.Sleep(time.Until(began.Add(time.Duration(i) * active / time.Duration(sessions))))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := session(sc.addr, ids[i], kindOf(i), rcv, &st); err != nil {
				st.fail(fmt.Errorf("session %s (%s): %w", ids[i], kindNames[kindOf(i)], err))
			}
		}()
	}
	wg.Wait()
	ran := time.Since(began)

	// Every notification expected, then nothing left: no connection, no
	// session in memory, an empty outbox.
	want := map[string][]string{}
	var wantExpire, wantMessage int
	for i, id := range ids {
		want[id] = kindOf(i).expected()
		for _, e := range want[id] {
			if e == "client.offline" {
				wantExpire++
			} else {
				wantMessage++
			}
		}
	}
	deadline := time.Now().Add(interval + 30*time.Second)
	for rcv.total() < wantExpire+wantMessage && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	idleErr := sc.waitIdle(true, forgetAfter+interval+30*time.Second)
	time.Sleep(time.Second) // and nothing more comes
	peak := stopPeak()
	final, err := sc.measure()
	if err != nil {
		return fail(err)
	}
	counters, err := sc.metrics()
	if err != nil {
		return fail(err)
	}

	// The figures.
	got, dups := rcv.snapshot()
	var gotExpire, gotMessage int
	for _, evs := range got {
		for _, e := range evs {
			if e == "client.offline" {
				gotExpire++
			} else {
				gotMessage++
			}
		}
	}
	fmt.Printf("soak: %d sessions (within %d, after %d, gone %d, ended %d, bot-only %d) over %.1f s; %d connections, %d echoes, peak %d open\n",
		sessions, perKind[kWithin], perKind[kAfter], perKind[kGone], perKind[kEnded], perKind[kBotOnly],
		ran.Seconds(), st.conns.Load(), st.echoes.Load(), peak)
	fmt.Printf("soak: sidecar counters: %.0f upgrades, %.0f frames relayed, %.0f probe timeouts, %.0f upstream errors, %.0f rejected, %.0f store errors\n",
		counters["presence_sidecar_upgrades_total"],
		counters[`presence_sidecar_frames_total{direction="client"}`]+counters[`presence_sidecar_frames_total{direction="server"}`],
		counters["presence_sidecar_probe_timeouts_total"], counters["presence_sidecar_upstream_errors_total"],
		counters["presence_sidecar_rejected_total"], counters["presence_sidecar_store_errors_total"])
	fmt.Printf("%-22s %12s %12s %12s %s\n", "sidecar", "baseline", "end", "growth", "tolerance")
	row := func(name string, b, f int64, tol int64, unit func(int64) string, tolText string) bool {
		g := f - b
		ok := g <= tol
		mark := ""
		if !ok {
			mark = "  <- FAIL"
		}
		sign := "+"
		if g < 0 {
			sign = "-"
		}
		fmt.Printf("%-22s %12s %12s %12s %s%s\n", name, unit(b), unit(f), sign+unit(max(g, -g)), tolText, mark)
		return ok
	}
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	mib := func(v int64) string { return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20)) }
	heapTol := tolHeapBytes + int64(tolHeapShare*float64(base.heapLive))
	rssTol := tolRSSBytes + int64(tolRSSShare*float64(base.rssAnon))
	var problems []string
	if !row("goroutines", base.goroutines, final.goroutines, tolGoroutines, n, "+"+n(tolGoroutines)) {
		problems = append(problems, "goroutines grew")
	}
	if !row("open fds", base.fds, final.fds, tolFDs, n, "+"+n(tolFDs)) {
		problems = append(problems, "file descriptors grew")
	}
	if !row("live heap (est.)", base.heapLive, final.heapLive, heapTol, mib, fmt.Sprintf("+%s (3 MiB + 25%%)", mib(heapTol))) {
		problems = append(problems, "the live heap grew")
	}
	if !row("RSS anon", base.rssAnon, final.rssAnon, rssTol, mib, fmt.Sprintf("+%s (16 MiB + 25%%)", mib(rssTol))) {
		problems = append(problems, "the anonymous RSS grew")
	}
	fmt.Printf("%-22s %12s %12s %12s %s\n", "RSS with mapped files", mib(base.rss), mib(final.rss), "", "(the store's pages; not checked)")
	// A late "within" client (see session) may rightly have been absent.
	late := st.lateIDs // all session goroutines are done
	lateOther := 0
	for id, alt := range late {
		if equal(got[id], alt) {
			for _, e := range want[id] {
				if e == "client.offline" {
					wantExpire--
				} else {
					wantMessage--
				}
			}
			for _, e := range alt {
				if e == "client.offline" {
					wantExpire++
				} else {
					wantMessage++
				}
			}
			want[id] = alt
			lateOther++
		}
	}
	fmt.Printf("%-22s %12s %12s\n", "notifications", "expected", "received")
	fmt.Printf("%-22s %12d %12d\n", "  /expire", wantExpire, gotExpire)
	fmt.Printf("%-22s %12d %12d\n", "  return message", wantMessage, gotMessage)
	fmt.Printf("%-22s %12d %12d\n", "  duplicates", 0, dups)
	if len(late) > 0 {
		fmt.Printf("soak: %d clients were slower to return than their kind means (a loaded machine); %d of them got the other right outcome\n", len(late), lateOther)
	}

	if errs := st.errors(); len(errs) > 0 {
		for _, e := range errs[:min(len(errs), 5)] {
			fmt.Fprintln(os.Stderr, "soak:", e)
		}
		problems = append(problems, fmt.Sprintf("%d sessions failed on the client side", len(errs)))
	}
	if dups > 0 {
		problems = append(problems, fmt.Sprintf("%d duplicate deliveries", dups))
	}
	if len(late) > sessions/10 {
		problems = append(problems, fmt.Sprintf("%d of %d clients were slower to return than their kind means: the machine is too loaded for the soak to judge", len(late), sessions))
	}
	var wrong []string
	for _, id := range ids {
		if !equal(got[id], want[id]) {
			wrong = append(wrong, fmt.Sprintf("%s: want %v, got %v", id, want[id], got[id]))
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			wrong = append(wrong, fmt.Sprintf("%s: not a session of this run, got %v", id, got[id]))
		}
	}
	if len(wrong) > 0 {
		sort.Strings(wrong)
		for _, w := range wrong[:min(len(wrong), 10)] {
			fmt.Fprintln(os.Stderr, "soak:", w)
		}
		problems = append(problems, fmt.Sprintf("%d sessions got other notifications than expected", len(wrong)))
	}
	if idleErr != nil {
		problems = append(problems, idleErr.Error())
	}
	if w := sc.logCount(`"level":"error"`); w > 0 {
		problems = append(problems, fmt.Sprintf("the sidecar logged %d errors", w))
	}
	if len(problems) > 0 {
		return fail(errors.New(strings.Join(problems, "; ")))
	}
	return nil
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

type stats struct {
	conns, echoes atomic.Int64
	mu            sync.Mutex
	errs          []error
	lateIDs       map[string][]string // sessions whose client was slower than its kind means (see session): the other right outcome
}

func (s *stats) late(id string, alt ...string) {
	s.mu.Lock()
	if s.lateIDs == nil {
		s.lateIDs = map[string][]string{}
	}
	s.lateIDs[id] = alt
	s.mu.Unlock()
}

func (s *stats) fail(err error) {
	s.mu.Lock()
	s.errs = append(s.errs, err)
	s.mu.Unlock()
}

func (s *stats) errors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.errs...)
}

// session plays one session of kind k.
func session(addr, id string, k kind, rcv *receiver, st *stats) error {
	// visit is one connection; it returns when it began to drop. linked,
	// if set, is called once the session is linked.
	visit := func(handover, endHandover bool, linked func()) (time.Time, error) {
		c, err := dial(addr)
		if err != nil {
			return time.Time{}, err
		}
		defer c.close()
		st.conns.Add(1)
		if err := c.link(id); err != nil {
			return time.Time{}, err
		}
		if linked != nil {
			linked()
		}
		if handover {
			if err := c.ask("transfer", "end_conversation"); err != nil {
				return time.Time{}, err
			}
		}
		// Talk for 0.5–1.5 s: the probe pings the connection meanwhile.
		for j := range 3 {
			time.Sleep(time.Duration(150+rand.IntN(350)) * time.Millisecond)
			if err := c.echo(fmt.Sprintf("%s says %d", id, j)); err != nil {
				return time.Time{}, err
			}
			st.echoes.Add(1)
		}
		if endHandover {
			if err := c.ask("end", "end_conversation"); err != nil {
				return time.Time{}, err
			}
		}
		dropAt := time.Now()
		if rand.IntN(2) == 0 {
			c.closeClean()
		}
		return dropAt, nil // the deferred close: a bare TCP close if no Close handshake came first
	}
	var err error
	switch k {
	case kWithin:
		var dropAt, backAt time.Time
		if dropAt, err = visit(true, false, nil); err != nil {
			return err
		}
		time.Sleep(time.Duration(float64(interval) * (0.1 + 0.2*rand.Float64()))) // back well within the interval
		if _, err = visit(false, false, func() { backAt = time.Now() }); err == nil && backAt.Sub(dropAt) >= interval {
			// The sidecar saw a shorter absence than this, but maybe not
			// short enough: absent and back is right too (a loaded machine).
			st.late(id, "client.offline", "client.online", "client.offline")
		}
	case kAfter:
		var dropAt, backAt time.Time
		if dropAt, err = visit(true, false, nil); err != nil {
			return err
		}
		select {
		case <-rcv.expired(id):
		case <-time.After(interval + 30*time.Second):
			return errors.New("no /expire came while away")
		}
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		if _, err = visit(false, true, func() { backAt = time.Now() }); err == nil && backAt.Sub(dropAt) >= interval+forgetAfter {
			// Maybe forgotten before it came back (a loaded machine), and
			// then a new session: no return message is right too.
			st.late(id, "client.offline")
		}
	case kGone:
		_, err = visit(true, false, nil)
	case kEnded:
		_, err = visit(true, true, nil)
	default:
		_, err = visit(false, false, nil)
	}
	return err
}

// client is one WebSocket connection through the sidecar; its reads run on
// their own goroutine, which answers the probe's Pings.
type client struct {
	c    *websocket.Conn
	msgs chan []byte
	done chan struct{}
}

var dialer = &websocket.Dialer{HandshakeTimeout: 15 * time.Second}

func dial(addr string) (*client, error) {
	c, _, err := dialer.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		return nil, err
	}
	cl := &client{c: c, msgs: make(chan []byte, 16), done: make(chan struct{})}
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

// wait reads until a message with action arrives.
func (c *client) wait(action string, match func(map[string]any) bool) error {
	timeout := time.After(step)
	for {
		select {
		case raw := <-c.msgs:
			var m map[string]any
			if json.Unmarshal(raw, &m) == nil && m["action"] == action && (match == nil || match(m)) {
				return nil
			}
		case <-c.done:
			return fmt.Errorf("connection ended waiting for %q", action)
		case <-timeout:
			return fmt.Errorf("no %q within %v", action, step)
		}
	}
}

func (c *client) link(id string) error {
	if err := c.send(map[string]any{"action": "link", "data": map[string]any{"sessionId": id, "botId": "soak-bot"}}); err != nil {
		return err
	}
	return c.wait("link", nil)
}

func (c *client) ask(action, reply string) error {
	if err := c.send(map[string]any{"action": action}); err != nil {
		return err
	}
	return c.wait(reply, nil)
}

func (c *client) echo(text string) error {
	if err := c.send(map[string]any{"action": "say", "data": map[string]any{"text": text}}); err != nil {
		return err
	}
	return c.wait("say", func(m map[string]any) bool {
		d, _ := m["data"].(map[string]any)
		return d["text"] == text
	})
}

// closeClean runs the Close handshake (RFC 6455 §7.1.2): the upstream's
// Close comes back through the sidecar and ends the read.
func (c *client) closeClean() {
	c.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(step))
	select {
	case <-c.done:
	case <-time.After(step):
	}
}

func (c *client) close() { c.c.Close() }

// echoUpstream is the conversation service: link is answered with a
// socketId, transfer with the seed's hand-over frame, end with the end of
// the conversation (which ends a hand-over), anything else is echoed.
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
		switch m.Action {
		case "link":
			err = c.WriteMessage(websocket.TextMessage, []byte(`{"action":"link","data":{"socketId":"soak"}}`))
		case "transfer":
			err = c.WriteMessage(websocket.TextMessage, []byte(`{"action":"end_conversation","data":{"isTransfer":true}}`))
		case "end":
			err = c.WriteMessage(websocket.TextMessage, []byte(`{"action":"end_conversation","data":{}}`))
		default:
			err = c.WriteMessage(websocket.TextMessage, raw)
		}
		if err != nil {
			return
		}
	}
}

// receiver is the human-service platform: it records each notification's
// event per session, in arrival order, once per webhook-id, and answers
// 200 with Connection: close, so that the sidecar keeps no idle
// connections to it and the goroutine and descriptor figures compare.
type receiver struct {
	mu      sync.Mutex
	seen    map[string]bool     // webhook-ids
	events  map[string][]string // session → events
	dups    int
	n       int
	watched map[string]chan struct{} // closed on the session's first /expire
}

func newReceiver() *receiver {
	return &receiver{seen: map[string]bool{}, events: map[string][]string{}, watched: map[string]chan struct{}{}}
}

func (r *receiver) watch(id string) {
	r.mu.Lock()
	r.watched[id] = make(chan struct{})
	r.mu.Unlock()
}

func (r *receiver) expired(id string) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.watched[id]
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var body struct {
		Event     string `json:"event"`
		SessionID string `json:"sessionId"`
	}
	raw, _ := io.ReadAll(req.Body)
	json.Unmarshal(raw, &body)
	r.mu.Lock()
	id := req.Header.Get("webhook-id")
	if r.seen[id] {
		r.dups++
	} else {
		r.seen[id] = true
		r.n++
		evs := r.events[body.SessionID]
		r.events[body.SessionID] = append(evs, body.Event)
		if ch := r.watched[body.SessionID]; ch != nil && body.Event == "client.offline" && len(evs) == 0 {
			close(ch)
		}
	}
	r.mu.Unlock()
	w.Header().Set("Connection", "close")
	w.WriteHeader(http.StatusOK)
}

func (r *receiver) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

func (r *receiver) snapshot() (map[string][]string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string][]string, len(r.events))
	for k, v := range r.events {
		out[k] = append([]string(nil), v...)
	}
	return out, r.dups
}

// serve runs h on a loopback port.
func serve(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go http.Serve(ln, h)
	return ln.Addr().String(), nil
}

// sidecar is the running binary.
type sidecar struct {
	cmd         *exec.Cmd
	addr, admin string
	logPath     string
	done        chan struct{}
}

var admin = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func startSidecar(bin, tmp, upAddr, rcvAddr string) (*sidecar, error) {
	free := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	s := &sidecar{addr: free(), admin: free(), logPath: filepath.Join(tmp, "sidecar.log"), done: make(chan struct{})}
	logf, err := os.Create(s.logPath)
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin)
	s.cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"UPSTREAM_URL=http://" + upAddr,
		"HANDOFF_URL=http://" + rcvAddr,
		"DATA_DIR=" + filepath.Join(tmp, "data"),
		"LISTEN_ADDR=" + s.addr,
		"ADMIN_ADDR=" + s.admin,
		"ADMIN_TOKEN=" + soakToken, // for /debug/pprof/heap?gc=1 (measure)
		"PRESENCE_ENABLED=true",
		"PRESENCE_ALLOW_ANY_INTERVAL=true",
		"PRESENCE_CHECK_INTERVAL=" + interval.String(),
		"PRESENCE_FORGET_AFTER=" + forgetAfter.String(),
		"PROBE_INTERVAL=" + probeInterval.String(),
		"PROBE_TIMEOUT=" + probeTimeout.String(),
		"HANDOFF_RETRY_MAX_DELAY=1s",
		"LOG_LEVEL=warn",
		"SHUTDOWN_GRACE=1s",
	}
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.cmd.Wait(); logf.Close(); close(s.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if resp, err := admin.Get("http://" + s.admin + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s, nil
			}
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("the sidecar exited at start:\n%s", s.logTail(20))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("the sidecar did not become healthy:\n%s", s.logTail(20))
		}
	}
}

func (s *sidecar) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

func (s *sidecar) logLines() []string {
	b, _ := os.ReadFile(s.logPath)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func (s *sidecar) logTail(n int) string {
	l := s.logLines()
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

func (s *sidecar) logCount(sub string) int {
	n := 0
	for _, l := range s.logLines() {
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

// metrics reads /metrics into series → value.
func (s *sidecar) metrics() (map[string]float64, error) {
	resp, err := admin.Get("http://" + s.admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// samplePeak samples the open connections every 200 ms until the returned
// function is called, which returns the peak.
func (s *sidecar) samplePeak() func() int {
	ctx, cancel := context.WithCancel(context.Background())
	var peak atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if m, err := s.metrics(); err == nil {
				peak.Store(max(peak.Load(), int64(m["presence_sidecar_open_connections"])))
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return func() int { cancel(); <-done; return int(peak.Load()) }
}

// waitIdle waits for no open connection and, when sessions is set, no
// tracked session and an empty outbox.
func (s *sidecar) waitIdle(sessions bool, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		m, err := s.metrics()
		if err != nil {
			return err
		}
		open := m["presence_sidecar_open_connections"]
		tracked := m[`presence_sidecar_sessions{state="present"}`] + m[`presence_sidecar_sessions{state="absent"}`]
		depth := m["presence_sidecar_outbox_depth"]
		if open == 0 && (!sessions || tracked == 0 && depth == 0) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v still %v open connections, %v tracked sessions, %v notifications in the outbox", within, open, tracked, depth)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// soakToken is the sidecar's ADMIN_TOKEN in the soak.
const soakToken = "soak"

type figures struct {
	goroutines, fds        int64
	heapLive, rssAnon, rss int64
}

// measure has the sidecar collect its garbage (its heap profile with
// gc=1 runs runtime.GC), then reads the figures: the heap goal is then set
// from what is live now, not from a past peak or a collection that came
// early.
func (s *sidecar) measure() (figures, error) {
	var f figures
	for range 2 { // the second one also frees what the first one's finalizers let go
		req, _ := http.NewRequest("GET", "http://"+s.admin+"/debug/pprof/heap?gc=1", nil)
		req.Header.Set("Authorization", "Bearer "+soakToken)
		resp, err := admin.Do(req)
		if err != nil {
			return f, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return f, fmt.Errorf("/debug/pprof/heap?gc=1: %s", resp.Status)
		}
	}
	m, err := s.metrics()
	if err != nil {
		return f, err
	}
	f.goroutines = int64(m["go_goroutines"])
	f.heapLive = int64(m["go_memstats_next_gc_bytes"] / 2)
	pid := s.cmd.Process.Pid
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return f, err
	}
	f.fds = int64(len(fds))
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return f, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			f.rss = kb << 10
		case "RssAnon":
			f.rssAnon = kb << 10
		}
	}
	return f, nil
}
