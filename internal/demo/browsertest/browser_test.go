// Package browsertest drives the demo WebChat, the sidecar and the demo agent console
// with a real browser: Debian's chromium, headless, over the DevTools
// protocol (chromedp). Each test starts its own stack in-process (conversation
// service, agent console, sidecar) on free loopback ports with a 2 s check
// interval, so the tests run in parallel.
//
//	go test ./internal/demo/browsertest/                      # needs /usr/bin/chromium (apt-get install chromium)
//	CHROMIUM=/path/to/chrome go test ./internal/demo/browsertest/
//	UPDATE_SCREENSHOTS=1 go test ./internal/demo/browsertest/ -run StatusPage   # also refresh docs/status-page.png
//
// The status page's screenshot is written to test-artifacts/status-page.png
// at the repository root.
package browsertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/presence-sidecar/presence-sidecar/internal/demo"
	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
	"github.com/presence-sidecar/presence-sidecar/presence"
	"github.com/presence-sidecar/presence-sidecar/store"
)

const (
	interval     = 2 * time.Second // PRESENCE_CHECK_INTERVAL in these tests
	pageKeepTick = 400 * time.Millisecond
	defaultText  = "O cliente voltou a ficar online."
)

// ---------------------------------------------------------------- browser

var (
	browserOnce   sync.Once
	browserCtx    context.Context
	browserErr    error
	browserCancel context.CancelFunc
	userDataDir   string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if browserCancel != nil {
		browserCancel()
	}
	if userDataDir != "" {
		_ = os.RemoveAll(userDataDir)
	}
	os.Exit(code)
}

func chromiumPath() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// startBrowser starts one headless chromium for the whole package.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the browser tests need Chromium at %s (%v): install it with `apt-get install chromium` (Debian), or set CHROMIUM to its path", path, err)
	}
	browserOnce.Do(func() {
		userDataDir, browserErr = os.MkdirTemp("", "e2e-chromium-")
		if browserErr != nil {
			return
		}
		alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
			chromedp.ExecPath(path),
			chromedp.UserDataDir(userDataDir),
			chromedp.Flag("headless", true),
			chromedp.Flag("no-sandbox", true),
			chromedp.Flag("disable-gpu", true),
			chromedp.Flag("disable-quic", true),
			chromedp.Flag("no-first-run", true),
			chromedp.Flag("no-default-browser-check", true),
			chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true),
			chromedp.Flag("disable-dev-shm-usage", true),
			chromedp.Flag("hide-scrollbars", true),
			chromedp.Flag("mute-audio", true),
			chromedp.WindowSize(1280, 900),
		)
		ctx, cancelCtx := chromedp.NewContext(alloc)
		browserCancel = func() { cancelCtx(); cancelAlloc() }
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		// The first Run starts the browser; bind it to ctx, not to sctx.
		done := make(chan error, 1)
		go func() { done <- chromedp.Do(ctx) }()
		select {
		case browserErr = <-done:
		case <-sctx.Done():
			browserErr = fmt.Errorf("chromium did not start within 30s")
		}
		browserCtx = ctx
	})
	if browserErr != nil {
		t.Fatalf("starting %s: %v (install it with `apt-get install chromium`)", path, browserErr)
	}
	return browserCtx
}

// tab is one browser tab.
type tab struct {
	t   *testing.T
	ctx context.Context
}

func newTab(t *testing.T) *tab {
	t.Helper()
	ctx, _ := chromedp.NewContext(startBrowser(t))
	tb := &tab{t: t, ctx: ctx}
	t.Cleanup(func() { _ = chromedp.Cancel(ctx) })
	if err := chromedp.Do(ctx); err != nil { // opens the tab
		t.Fatalf("opening a tab: %v", err)
	}
	return tb
}

// close closes the tab as a user would; the page's socket goes with it.
func (tb *tab) close() {
	tb.t.Helper()
	if err := chromedp.Cancel(tb.ctx); err != nil {
		tb.t.Logf("closing the tab: %v", err)
	}
}

func (tb *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		tb.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates expr in the page and decodes it into T.
func eval[T any](tb *tab, expr string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		tb.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitJS waits until expr is truthy in the page. It polls on a timer, not on
// animation frames, so that it works in hidden pages too.
func (tb *tab) waitJS(what, expr string, timeout time.Duration) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, timeout+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(timeout))); err != nil {
		tb.t.Fatalf("waiting for %s (%s): %v", what, expr, err)
	}
}

// waitReloading is waitJS for a page that reloads itself: evaluation errors
// while it navigates are retried.
func (tb *tab) waitReloading(what, expr string, timeout time.Duration) {
	tb.t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(tb.ctx, 2*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	tb.t.Fatalf("waiting for %s (%s): not true within %s (last error: %v)", what, expr, timeout, last)
}

// openChat opens the WebChat through the sidecar for session and waits until
// its socket is linked.
func openChat(t *testing.T, s *demo.Stack, session string) *tab {
	t.Helper()
	tb := newTab(t)
	u := s.WebChatURL + "/?session=" + url.QueryEscape(session) + "&keepAliveMs=" + fmt.Sprint(pageKeepTick.Milliseconds())
	tb.do("opening the WebChat", chromedp.Navigate(u))
	tb.waitJS("the socket to be linked", `window.demo && window.demo.state === 'linked'`, 10*time.Second)
	return tb
}

// say types text into the WebChat and sends it, then waits for the bot's
// answer over the socket.
func (tb *tab) say(text string) {
	tb.t.Helper()
	before := eval[int](tb, `document.querySelectorAll('#messages li.bot').length`)
	tb.do("typing "+text,
		chromedp.SendKeys(chromedp.ID("input"), text),
		chromedp.Click(chromedp.ID("send")),
	)
	tb.waitJS("the bot's answer", fmt.Sprintf(`document.querySelectorAll('#messages li.bot').length > %d`, before), 10*time.Second)
}

// handOver asks for a human and waits until the sidecar saw the hand-over.
func handOver(t *testing.T, s *demo.Stack, tb *tab, session string) {
	t.Helper()
	tb.say("quero falar com um atendente humano")
	tb.waitJS("the hand-over on the page", `window.demo.handedOver === true`, 5*time.Second)
	waitSession(t, s, session, "the sidecar to see the hand-over", func(v presence.View) bool { return v.HandedOver })
}

func (tb *tab) freeze() {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	if _, err := chromedp.Call(ctx, page.SetWebLifecycleState, page.SetWebLifecycleStateParams{State: page.SetWebLifecycleStateStateFrozen}); err != nil {
		tb.t.Fatalf("freezing the page: %v", err)
	}
}

func (tb *tab) resume() {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	if _, err := chromedp.Call(ctx, page.SetWebLifecycleState, page.SetWebLifecycleStateParams{State: page.SetWebLifecycleStateStateActive}); err != nil {
		tb.t.Fatalf("resuming the page: %v", err)
	}
}

// ---------------------------------------------------------------- stack

// startStack starts the demo service, the console and the sidecar on free
// ports with a short interval and probe; env is laid over that.
func startStack(t *testing.T, env ...string) *demo.Stack {
	t.Helper()
	startBrowser(t) // fail first, and plainly, when there is no browser
	ctx, cancel := context.WithCancel(context.Background())
	logs := &testutil.Buffer{}
	base := []string{
		"PRESENCE_CHECK_INTERVAL=" + interval.String(),
		"PROBE_INTERVAL=1s",
		"PROBE_TIMEOUT=3s",
		"SHUTDOWN_GRACE=1s",
		"LOG_LEVEL=debug",
	}
	s, err := demo.Start(ctx, demo.StackOptions{
		Env:       append(base, env...),
		KeepAlive: pageKeepTick,
		DataDir:   t.TempDir(),
		LogOutput: logs,
	})
	if err != nil {
		cancel()
		t.Fatalf("starting the demo stack: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := s.Wait(); err != nil {
			t.Errorf("the sidecar stopped with an error: %v", err)
		}
		if t.Failed() {
			t.Logf("sidecar and demo logs:\n%s", logs.String())
			b, _ := json.MarshalIndent(s.Console.Notifications(), "", "  ")
			t.Logf("agent console received:\n%s", b)
		}
	})
	return s
}

// sessionOf reads the sidecar's view of a session through the admin API.
func sessionOf(t *testing.T, s *demo.Stack, id string) (presence.View, bool) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.StatusURL+"/v1/sessions/"+url.PathEscape(id), nil)
	req.Header.Set("Authorization", "Bearer "+s.Config.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("admin API: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return presence.View{}, false
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("admin API: GET /v1/sessions/%s: %s", id, resp.Status)
	}
	var v presence.View
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("admin API: %v", err)
	}
	return v, true
}

func waitSession(t *testing.T, s *demo.Stack, id, what string, ok func(presence.View) bool) presence.View {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, found := sessionOf(t, s, id)
		if found && ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: session %s is %+v (found %v)", what, id, v, found)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitNote waits for a notification of kind about session at the console.
func waitNote(t *testing.T, s *demo.Stack, kind store.Kind, session string, timeout time.Duration) demo.Received {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	n, err := s.Console.Wait(ctx, func(n demo.Received) bool { return n.SessionID == session && n.Event == string(kind) })
	if err != nil {
		t.Fatalf("no %s for session %s at the agent console within %s", kind, session, timeout)
	}
	return n
}

// notesFor lists what the console received about session.
func notesFor(s *demo.Stack, session string) []demo.Received {
	var out []demo.Received
	for _, n := range s.Console.Notifications() {
		if n.SessionID == session {
			out = append(out, n)
		}
	}
	return out
}

// sessionID is a fresh id shaped like the WebChat page's own ("web-" + hex).
// Each test has its own stack, so its logs tell the tests apart.
func sessionID(t *testing.T) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "web-" + hex.EncodeToString(b[:])
}

func checkOffline(t *testing.T, n demo.Received, session, reason string) {
	t.Helper()
	if n.Path != "/expire" || !n.Offline || n.Query != "offline=true" {
		t.Errorf("offline notification went to %s?%s, want /expire?offline=true", n.Path, n.Query)
	}
	if n.SessionID != session || n.BotID != demo.DefaultBotID || n.Reason != reason {
		t.Errorf("offline notification: session %q bot %q reason %q, want %q %q %q", n.SessionID, n.BotID, n.Reason, session, demo.DefaultBotID, reason)
	}
	if !n.Verified || n.Refused != "" {
		t.Errorf("offline notification: signature verified %v, refused %q", n.Verified, n.Refused)
	}
}

// ---------------------------------------------------------------- tests

// The WebChat works through the sidecar: the page's socket links, a message
// posted over HTTP gets the bot's answer over the socket, and the sidecar
// tracks the session from the link frame.
func TestBrowserWebChatThroughSidecar(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	session := sessionID(t)
	tb := openChat(t, s, session)

	tb.say("olá")
	got := eval[string](tb, `[...document.querySelectorAll('#messages li.bot')].pop().textContent`)
	if !strings.Contains(got, "olá") {
		t.Errorf("bot answered %q, want an echo of olá", got)
	}
	if id := eval[string](tb, `window.demo.socketId`); !strings.HasPrefix(id, "sock-") {
		t.Errorf("link answer carried socketId %q", id)
	}
	v := waitSession(t, s, session, "the sidecar to track the session", func(v presence.View) bool { return v.Connections == 1 })
	if v.BotID != demo.DefaultBotID || v.State != store.Present || v.HandedOver {
		t.Errorf("sidecar's view: %+v", v)
	}
	if n := s.Service.Sockets(session); n != 1 {
		t.Errorf("the service has %d sockets for the session, want 1", n)
	}
}

// The client asks for a human, closes the tab: /expire?offline=true reaches
// the console after the interval. The client opens the conversation again:
// the return message follows.
func TestBrowserCloseTabExpireThenReturn(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	session := sessionID(t)
	console := newTab(t)
	console.do("opening the agent console", chromedp.Navigate(s.ConsoleURL+"/"))
	console.waitJS("the console's live stream", `document.getElementById('stream').textContent === 'live'`, 10*time.Second)
	tb := openChat(t, s, session)
	handOver(t, s, tb, session)
	root := repoRoot(t)
	screenshot(t, tb, filepath.Join(root, "test-artifacts", "webchat.png"), filepath.Join(root, "docs", "webchat.png"))

	closed := time.Now()
	tb.close()
	off := waitNote(t, s, store.KindOffline, session, interval+8*time.Second)
	if d := off.At.Sub(closed); d < interval-200*time.Millisecond {
		t.Errorf("/expire came %s after the tab closed, before the %s interval", d, interval)
	}
	checkOffline(t, off, session, "disconnected")
	if v, _ := sessionOf(t, s, session); v.State != store.Absent || v.Connections != 0 {
		t.Errorf("sidecar's view after /expire: %+v", v)
	}

	again := openChat(t, s, session)
	on := waitNote(t, s, store.KindOnline, session, 8*time.Second)
	if on.Path != "/message" || on.Text != defaultText || on.BotID != demo.DefaultBotID || !on.Verified {
		t.Errorf("return message: %+v", on)
	}
	if on.Seq <= off.Seq {
		t.Errorf("return message (#%d) arrived before the /expire (#%d)", on.Seq, off.Seq)
	}
	// Nothing reached the page because of presence: only the link answer and
	// the service's own greeting.
	for _, m := range eval[[]map[string]any](again, `window.demo.received`) {
		if a := m["action"]; a != "link" && a != "message" {
			t.Errorf("the reopened page got %v", m)
		}
	}
	if n := notesFor(s, session); len(n) != 2 {
		t.Errorf("console got %d notifications for the session, want 2: %+v", len(n), n)
	}
	// The agent console's page showed both, live.
	for _, ev := range []string{"client.offline", "client.online"} {
		console.waitJS("the console page to show "+ev,
			fmt.Sprintf(`document.querySelector('.event[data-event=%q][data-session=%q]') !== null`, ev, session), 5*time.Second)
	}
	screenshot(t, console, filepath.Join(root, "test-artifacts", "agent-console.png"), filepath.Join(root, "docs", "agent-console.png"))
}

// screenshot writes the whole page to path, and to docsPath too when
// UPDATE_SCREENSHOTS is set.
func screenshot(t *testing.T, tb *tab, path, docsPath string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	writeFile(t, path, png)
	if os.Getenv("UPDATE_SCREENSHOTS") != "" && docsPath != "" {
		writeFile(t, docsPath, png)
	}
}

// Two tabs of the same session, one closed: the session still has a
// connection, so nothing is sent. Closing the second one then does send
// /expire (so the first silence was not for lack of a hand-over).
func TestBrowserTwoTabsOneClosed(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	session := sessionID(t)
	a := openChat(t, s, session)
	b := openChat(t, s, session)
	handOver(t, s, a, session)
	waitSession(t, s, session, "two connections", func(v presence.View) bool { return v.Connections == 2 })

	a.close()
	waitSession(t, s, session, "one connection left", func(v presence.View) bool { return v.Connections == 1 })
	time.Sleep(2*interval + 500*time.Millisecond)
	if n := notesFor(s, session); len(n) != 0 {
		t.Fatalf("one tab of two closed, yet the console got %+v", n)
	}
	if v, _ := sessionOf(t, s, session); v.State != store.Present {
		t.Errorf("sidecar's view with one tab open: %+v", v)
	}
	b.say("ainda estou aqui") // the remaining tab works

	b.close()
	checkOffline(t, waitNote(t, s, store.KindOffline, session, interval+8*time.Second), session, "disconnected")
}

// Connection mode: a frozen (and hidden) page keeps its socket open and the
// browser still answers the probe, so the client stays present: no /expire.
//
// Chromium closes the socket of a DevTools-frozen page with 1006 when the
// page resumes; the page reconnects at once, well within the interval, so that
// produces no notification either (invariant 1).
func TestBrowserFrozenPageConnectionModeStaysPresent(t *testing.T) {
	t.Parallel()
	s := startStack(t) // PRESENCE_MODE=connection (the default)
	session := sessionID(t)
	tb := openChat(t, s, session)
	handOver(t, s, tb, session)

	k0 := eval[int](tb, `window.demo.keepAlives`)
	tb.freeze()
	for end := time.Now().Add(2*interval + time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		v, _ := sessionOf(t, s, session)
		if v.State != store.Present || v.Connections != 1 || s.Service.Sockets(session) != 1 {
			t.Fatalf("while the page is frozen the socket must stay open and the client present: sidecar %+v, service sockets %d",
				v, s.Service.Sockets(session))
		}
	}
	if n := notesFor(s, session); len(n) != 0 {
		t.Fatalf("frozen page in connection mode, yet the console got %+v", n)
	}
	tb.resume()
	// The freeze was real: the page's timers stopped (running, it would have
	// sent a keep-alive every 400 ms).
	if k := eval[int](tb, `window.demo.keepAlives`) - k0; k > 3 {
		t.Errorf("the page sent %d keep-alives while frozen: the freeze did not take", k)
	}
	tb.waitJS("the page to be linked again", `window.demo.state === 'linked'`, 5*time.Second)
	t.Logf("socket closes seen by the page: %s", eval[string](tb, `JSON.stringify(window.demo.closes)`))
	tb.say("voltei")
	time.Sleep(interval)
	if n := notesFor(s, session); len(n) != 0 {
		t.Errorf("console got %+v", n)
	}
}

// Activity mode: while the page runs, its keep-alives count as activity
// (PRESENCE_IGNORE is set to match nothing here), so the client stays
// present; a frozen page sends nothing, so it becomes absent although its
// socket stays open: /expire with reason inactive. Resumed, it comes back.
func TestBrowserFrozenPageActivityModeExpires(t *testing.T) {
	t.Parallel()
	s := startStack(t, "PRESENCE_MODE=activity", "PRESENCE_IGNORE=client:action=none")
	session := sessionID(t)
	tb := openChat(t, s, session)
	handOver(t, s, tb, session)

	time.Sleep(interval + time.Second)
	if n := notesFor(s, session); len(n) != 0 {
		t.Fatalf("a live page in activity mode, yet the console got %+v", n)
	}

	frozenAt := time.Now()
	tb.freeze()
	off := waitNote(t, s, store.KindOffline, session, interval+8*time.Second)
	if d := off.At.Sub(frozenAt); d < interval-pageKeepTick-200*time.Millisecond {
		t.Errorf("/expire came %s after the freeze, before the %s interval", d, interval)
	}
	checkOffline(t, off, session, "inactive")
	if v, _ := sessionOf(t, s, session); v.Connections != 1 {
		t.Errorf("the frozen page's socket should stay open: %+v", v)
	}

	tb.resume()
	on := waitNote(t, s, store.KindOnline, session, 8*time.Second)
	if on.Text != defaultText || on.Seq <= off.Seq {
		t.Errorf("return message: %+v", on)
	}
}

// The status page shows the session going from present to absent, and the
// /expire delivered; a screenshot of it is kept as a test artifact.
func TestBrowserStatusPageShowsStateChange(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	session := "web-7f3a9c" // a realistic id for the screenshot
	chat := openChat(t, s, session)
	handOver(t, s, chat, session)
	other := openChat(t, s, "web-2b81d0") // a session the bot still handles
	other.say("oi")

	st := adminTab(t, s, "/?refresh=1")
	row := func(state string) string {
		return fmt.Sprintf(`document.querySelector('tr[data-session=%q][data-state=%q]') !== null`, session, state)
	}
	st.waitReloading("the session present on the status page", row("present"), 10*time.Second)

	chat.close()
	// The page reloads itself every second; wait for the change to show.
	st.waitReloading("the session absent on the status page", row("absent"), interval+10*time.Second)
	st.waitReloading("the delivered /expire on the status page",
		fmt.Sprintf(`document.querySelector('#recent tr[data-session=%q][data-kind="client.offline"][data-outcome="delivered"]') !== null`, session),
		10*time.Second)
	waitNote(t, s, store.KindOffline, session, 5*time.Second)

	// A still page for the picture.
	st.do("reloading the status page without refresh", chromedp.Navigate(s.StatusURL+"/?refresh=0"))
	// A reload the old page had scheduled may still land: wait on the still page itself.
	st.waitReloading("the still status page", `location.search === '?refresh=0' && `+row("absent"), 10*time.Second)
	root := repoRoot(t)
	screenshot(t, st, filepath.Join(root, "test-artifacts", "status-page.png"), filepath.Join(root, "docs", "status-page.png"))

	text := eval[string](st, `document.body.innerText`)
	for _, want := range []string{"absent", "present", "/expire", "delivered", "web-2b81d0"} {
		if !strings.Contains(text, want) {
			t.Errorf("the status page lacks %q", want)
		}
	}
	if strings.Contains(text, demo.SigningSecret) {
		t.Errorf("the status page shows a secret")
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", dir)
		}
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", path, len(b))
}
