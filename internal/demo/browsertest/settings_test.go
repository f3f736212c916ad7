package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/presence-sidecar/presence-sidecar/internal/demo"
	"github.com/presence-sidecar/presence-sidecar/store"
)

// adminTab opens path on the admin listener as an operator with ADMIN_TOKEN
// (sent with every request of the tab, the page's own fetches too).
func adminTab(t *testing.T, s *demo.Stack, path string) *tab {
	t.Helper()
	st := newTab(t)
	ctx, cancel := context.WithTimeout(st.ctx, 10*time.Second)
	defer cancel()
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Authorization": "Bearer " + s.Config.AdminToken}}); err != nil {
		t.Fatal(err)
	}
	st.do("opening "+path, chromedp.Navigate(s.StatusURL+path))
	return st
}

// The seed's settings screen: on the status page, the operator changes the
// bot's interval and return message. 11 minutes is refused beside the field
// in the API's words; 1 minute and a new message are saved, kept by the API,
// and used: the client's absence is decided after 1 minute, not the 2 of the
// environment, and the return message is the new one. Meanwhile the page
// updates itself without closing an open section or losing a half-typed
// field. Screenshots: docs/settings.png, docs/status-charts.png.
func TestBrowserSettingsScreen(t *testing.T) {
	t.Parallel()
	// The seed's range: no PRESENCE_ALLOW_ANY_INTERVAL, so the check interval is in minutes.
	s := startStack(t, "PRESENCE_ALLOW_ANY_INTERVAL=false", "PRESENCE_CHECK_INTERVAL=2m")
	session := sessionID(t)
	chat := openChat(t, s, session)
	handOver(t, s, chat, session)

	st := adminTab(t, s, "/?refresh=1")
	cardSel := fmt.Sprintf(`form.bot[data-bot=%q]`, demo.DefaultBotID)
	card := "document.querySelector('" + cardSel + "')"
	st.waitJS("the bot's settings card", card+` !== null`, 10*time.Second)
	if v := eval[string](st, card+`.elements.checkInterval.value`); v != "2" {
		t.Fatalf("the card shows an interval of %q minutes, want 2", v)
	}

	// An open section and a half-typed field survive live updates.
	st.do("opening the effective configuration", chromedp.Click(chromedp.CSS(`#settings summary`)))
	st.do("typing a message without saving", chromedp.SendKeys(chromedp.CSS(cardSel+` textarea`), "rascunho"))
	st.do("marking this document", chromedp.Evaluate[chromedp.Void](`window.sameDocument = true`))
	first := eval[string](st, `document.getElementById('now').title`)
	for i := range 3 {
		prev := eval[string](st, `document.getElementById('now').title`)
		st.waitJS(fmt.Sprintf("live update %d", i+1), fmt.Sprintf(`document.getElementById('now').title !== %q`, prev), 5*time.Second)
	}
	if eval[string](st, `document.getElementById('now').title`) == first {
		t.Fatal("the page did not update")
	}
	if !eval[bool](st, `document.getElementById('settings').open`) {
		t.Error("a live update closed the expanded configuration")
	}
	if v := eval[string](st, card+`.elements.returnMessage.value`); v != "rascunho" {
		t.Errorf("a live update replaced the half-typed return message with %q", v)
	}
	if !eval[bool](st, `window.sameDocument === true`) {
		t.Error("the page reloaded rather than updating in place")
	}

	// 11 minutes: refused, beside the field, in the API's words.
	setField := func(name, value string) {
		st.do("setting "+name, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(
			`(() => { const f = %s.elements[%q]; f.focus(); f.value = %q; f.dispatchEvent(new Event('input', {bubbles: true})); })()`,
			card, name, value)))
	}
	setField("checkInterval", "11")
	st.do("saving", chromedp.Evaluate[chromedp.Void](card+`.querySelector('button[type=submit]').click()`))
	errSel := card + `.querySelector('[data-error-for="checkInterval"]').textContent`
	st.waitJS("the interval's error", errSel+` !== ''`, 5*time.Second)
	if msg := eval[string](st, errSel); !strings.Contains(msg, "want 1m0s to 10m0s") || !strings.Contains(msg, `checkInterval "11m0s"`) {
		t.Errorf("the error beside the interval reads %q", msg)
	}
	if got := botSettings(t, s); got.CheckInterval != 2*time.Minute {
		t.Fatalf("a refused change was applied: %+v", got)
	}

	const text = "O cliente voltou: pode retomar o atendimento."
	setField("checkInterval", "1")
	setField("returnMessage", text)
	st.do("saving", chromedp.Evaluate[chromedp.Void](card+`.querySelector('button[type=submit]').click()`))
	st.waitJS("saved", card+`.querySelector('.saved').textContent === 'Saved'`, 5*time.Second)
	if got := botSettings(t, s); got.CheckInterval != time.Minute || got.ReturnMessage != text {
		t.Fatalf("the API has %+v after saving", got)
	}
	// The card comes back from the server with the values in force.
	st.waitJS("the card re-rendered", card+`.elements.checkInterval.defaultValue === '1' && !`+card+`.hasAttribute('data-dirty')`, 5*time.Second)
	root := repoRoot(t)
	elementShot(t, st, cardSel, filepath.Join(root, "test-artifacts", "settings.png"), filepath.Join(root, "docs", "settings.png"))

	closed := time.Now()
	chat.close()
	off := waitNote(t, s, store.KindOffline, session, time.Minute+15*time.Second)
	if d := off.At.Sub(closed); d < time.Minute-time.Second || d > time.Minute+15*time.Second {
		t.Errorf("/expire %s after the close; the saved interval is 1m", d)
	}
	openChat(t, s, session)
	on := waitNote(t, s, store.KindOnline, session, 10*time.Second)
	if on.Text != text {
		t.Errorf("the return message reads %q, want the one saved on the screen", on.Text)
	}

	// The charts have the hour's absence, return and deliveries.
	st.waitJS("the charts to show the return", `document.querySelector('#chart-transitions').textContent.includes('came back')`, 5*time.Second)
	st.waitJS("a delivery on the charts", `[...document.querySelectorAll('#chart-deliveries title')].some(t => /\d+ delivered/.test(t.textContent))`, 10*time.Second)
	elementShot(t, st, `#charts`, filepath.Join(root, "test-artifacts", "status-charts.png"), filepath.Join(root, "docs", "status-charts.png"))
}

// botSettings reads the demo bot's settings through the API.
func botSettings(t *testing.T, s *demo.Stack) struct {
	CheckInterval time.Duration
	ReturnMessage string
} {
	t.Helper()
	var out struct {
		CheckInterval string `json:"checkInterval"`
		ReturnMessage string `json:"returnMessage"`
	}
	req, _ := http.NewRequest(http.MethodGet, s.StatusURL+"/v1/bots/"+demo.DefaultBotID+"/presence", nil)
	req.Header.Set("Authorization", "Bearer "+s.Config.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the bot's settings: %s, %v", resp.Status, err)
	}
	d, err := time.ParseDuration(out.CheckInterval)
	if err != nil {
		t.Fatalf("checkInterval %q: %v", out.CheckInterval, err)
	}
	return struct {
		CheckInterval time.Duration
		ReturnMessage string
	}{d, out.ReturnMessage}
}

// elementShot writes one element's picture to path, and to docsPath too
// when UPDATE_SCREENSHOTS is set.
func elementShot(t *testing.T, tb *tab, sel, path, docsPath string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("screenshot of %s: %v", sel, err)
	}
	writeFile(t, path, png)
	if docsPath != "" && os.Getenv("UPDATE_SCREENSHOTS") != "" {
		writeFile(t, docsPath, png)
	}
}

// TestBrowserSettingsNeedAdminToken: without ADMIN_TOKEN the screen is
// read-only and says why, and the API refuses a change.
func TestBrowserSettingsNeedAdminToken(t *testing.T) {
	t.Parallel()
	s := startStack(t, "ADMIN_TOKEN=")
	chat := openChat(t, s, sessionID(t))
	chat.say("oi")
	st := newTab(t)
	st.do("opening the status page", chromedp.Navigate(s.StatusURL+"/"))
	st.waitJS("the bot's card", `document.querySelector('form.bot') !== null`, 10*time.Second)
	if !eval[bool](st, `document.querySelector('form.bot fieldset').disabled && document.getElementById('settings-locked') !== null`) {
		t.Error("the settings are editable without ADMIN_TOKEN")
	}
	ctx, cancel := context.WithTimeout(st.ctx, 10*time.Second)
	defer cancel()
	status, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(
		`fetch('/v1/bots/%s/presence', {method: 'PUT', headers: {'Content-Type': 'application/json'}, body: '{"checkInterval":"3m"}'}).then(r => r.status)`,
		demo.DefaultBotID), chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusForbidden {
		t.Errorf("PUT without ADMIN_TOKEN: %d, want 403", status)
	}
}
