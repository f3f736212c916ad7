package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// The seed's feature end to end: the bot hands the conversation over
// (server frame data.isTransfer=true), the client closes its tab, and after
// the interval (not before) the platform gets /expire?offline=true; the
// client comes back and the platform gets the default return message.
func TestCleanCloseExpiresAfterIntervalThenReturnMessage(t *testing.T) {
	up, pf := newUpstream(t), newPlatform(t)
	env := baseEnv(up.url(), pf.url(), t.TempDir())
	env["PRESENCE_CHECK_INTERVAL"] = "1500ms"
	env["HANDOFF_SIGNING_SECRET"] = secret
	env["HANDOFF_TOKEN"] = "platform-token"
	sc := start(t, env)

	c := client(t, sc, "s-1", "bot-7")
	<-up.links
	up.push(t, "s-1", map[string]any{"action": "end_conversation", "data": map[string]any{"isTransfer": true}})
	testutil.Eventually(t, 3*time.Second, "hand-over", func() bool {
		code, body := sc.api("GET", "/v1/sessions/s-1", nil)
		return code == 200 && strings.Contains(string(body), `"handedOver": true`)
	})

	closedAt := time.Now()
	closeClean(c)
	h := pf.accepted(t, 5*time.Second)
	if waited := h.At.Sub(closedAt); waited < 1500*time.Millisecond {
		t.Fatalf("/expire came %v after the close, before the 1.5s interval", waited)
	}
	if h.Path != "/expire" || h.Query != "offline=true" {
		t.Fatalf("offline notification went to %s?%s", h.Path, h.Query)
	}
	if h.event() != "client.offline" || h.session() != "s-1" || h.Body["botId"] != "bot-7" || h.Body["offline"] != true || h.Body["reason"] != "disconnected" {
		t.Fatalf("offline body: %s", h.Raw)
	}
	for _, f := range []string{"lastSeenAt", "detectedAt"} {
		if _, err := time.Parse(time.RFC3339, h.Body[f].(string)); err != nil {
			t.Fatalf("%s is not RFC 3339: %v", f, err)
		}
	}
	if h.Header.Get("Authorization") != "Bearer platform-token" || h.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("headers: %v", h.Header)
	}
	verifySignature(t, secret, h)

	c2 := client(t, sc, "s-1", "bot-7")
	defer c2.Close()
	r := pf.accepted(t, 5*time.Second)
	if r.Path != "/message" || r.event() != "client.online" || r.session() != "s-1" || r.Body["text"] != "O cliente voltou a ficar online." {
		t.Fatalf("return notification: %s %s", r.Path, r.Raw)
	}
	if r.id() == h.id() {
		t.Fatal("two notifications share a webhook-id")
	}
	verifySignature(t, secret, r)
	pf.quiet(t, 2*time.Second)
}

// A reconnect inside the interval produces nothing; nor does a session that
// was never handed over.
func TestReconnectInsideIntervalAndNotHandedOverGiveNothing(t *testing.T) {
	up, pf := newUpstream(t), newPlatform(t)
	env := baseEnv(up.url(), pf.url(), t.TempDir())
	env["PRESENCE_CHECK_INTERVAL"] = "4s" // far above the 500ms reconnect, even on a loaded machine
	sc := start(t, env)

	a := client(t, sc, "handed", "b")
	<-up.links
	sc.api("PUT", "/v1/sessions/handed/handoff", nil)
	b := client(t, sc, "bot-only", "b")
	<-up.links
	closeClean(a)
	time.Sleep(500 * time.Millisecond)
	a2 := client(t, sc, "handed", "b")
	defer a2.Close()
	closeClean(b) // never handed over: tracked, absent, silent
	pf.quiet(t, 5*time.Second)
	code, body := sc.api("GET", "/v1/sessions/bot-only", nil)
	if code != 200 || !strings.Contains(string(body), `"absent"`) {
		t.Fatalf("the silent session should still be tracked as absent: %d %s", code, body)
	}
}

// The admin API starts a hand-over; the platform answering 503 for a while
// still gets the notification, with the same webhook-id on every try.
func TestAPIHandoffAndPlatformOutage(t *testing.T) {
	up, pf := newUpstream(t), newPlatform(t)
	pf.setStatus(func(h hook, n int) int {
		if n < 3 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	sc := start(t, baseEnv(up.url(), pf.url(), t.TempDir()))
	c := client(t, sc, "api-1", "b")
	<-up.links
	if code, body := sc.api("PUT", "/v1/sessions/api-1/handoff", nil); code != 200 {
		t.Fatalf("PUT handoff: %d %s", code, body)
	}
	closeClean(c)
	h := pf.accepted(t, 15*time.Second)
	all := pf.all()
	if len(all) != 4 {
		t.Fatalf("want 3 refused tries and 1 accepted, got %d", len(all))
	}
	for _, x := range all {
		if x.id() != h.id() {
			t.Fatalf("retries changed the webhook-id: %s vs %s", x.id(), h.id())
		}
	}
	// And the API ends it again.
	if code, _ := sc.api("DELETE", "/v1/sessions/api-1/handoff", nil); code != 200 {
		t.Fatalf("DELETE handoff: %d", code)
	}
	c2 := client(t, sc, "api-1", "b")
	defer c2.Close()
	pf.quiet(t, 1500*time.Millisecond) // hand-over ended: no return message
}

// Session ids also come from HTTP: POST /webchat/message with a JSON body
// counts as the session's activity in activity mode.
func TestActivityModeHTTPMessagesAndIgnoredKeepAlives(t *testing.T) {
	up, pf := newUpstream(t), newPlatform(t)
	env := baseEnv(up.url(), pf.url(), t.TempDir())
	env["PRESENCE_MODE"] = "activity"
	env["PRESENCE_CHECK_INTERVAL"] = "1500ms"
	env["HANDOFF_DETECT"] = "always"
	sc := start(t, env)
	c := client(t, sc, "act-1", "b")
	defer c.Close()
	<-up.links
	// HTTP messages keep the session present...
	for range 4 {
		resp, err := http.Post("http://"+sc.addr+"/webchat/message", "application/json", strings.NewReader(`{"sessionId":"act-1","text":"oi"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("proxied POST: %d", resp.StatusCode)
		}
		time.Sleep(500 * time.Millisecond)
	}
	pf.quiet(t, 100*time.Millisecond)
	// ...keep-alives do not: the client is connected but inactive.
	stop := time.After(2500 * time.Millisecond)
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	var got *hook
	for got == nil {
		select {
		case <-tick.C:
			c.WriteJSON(map[string]any{"action": "keep_alive"})
		case h := <-pf.notify:
			got = &h
		case <-stop:
			t.Fatal("no /expire while only keep-alives flowed")
		}
	}
	if got.Body["reason"] != "inactive" || got.session() != "act-1" {
		t.Fatalf("offline body: %s", got.Raw)
	}
	// A real message brings the client back.
	c.WriteJSON(map[string]any{"action": "message", "data": map[string]any{"text": "voltei"}})
	r := pf.accepted(t, 3*time.Second)
	if r.event() != "client.online" {
		t.Fatalf("want the return message, got %s", r.Raw)
	}
}

// Per-bot settings from the API: a custom return message.
func TestBotSettingsAPI(t *testing.T) {
	up, pf := newUpstream(t), newPlatform(t)
	env := baseEnv(up.url(), pf.url(), t.TempDir())
	env["HANDOFF_DETECT"] = "always"
	sc := start(t, env)
	code, body := sc.api("PUT", "/v1/bots/b9/presence", map[string]any{"returnMessage": "O cliente voltou!", "checkInterval": "1s"})
	if code != 200 {
		t.Fatalf("PUT bot settings: %d %s", code, body)
	}
	if code, body := sc.api("PUT", "/v1/bots/b9/presence", map[string]any{"checkInterval": "banana"}); code != 400 || !strings.Contains(string(body), "checkInterval") {
		t.Fatalf("a bad interval must be refused with its name: %d %s", code, body)
	}
	c := client(t, sc, "s9", "b9")
	<-up.links
	closeClean(c)
	if h := pf.accepted(t, 5*time.Second); h.event() != "client.offline" {
		t.Fatalf("got %s", h.Raw)
	}
	c2 := client(t, sc, "s9", "b9")
	defer c2.Close()
	r := pf.accepted(t, 5*time.Second)
	var body2 struct{ Text string }
	json.Unmarshal(r.Raw, &body2)
	if body2.Text != "O cliente voltou!" {
		t.Fatalf("return message text %q", body2.Text)
	}
}

// The admin API is closed without the token.
func TestAdminAPINeedsToken(t *testing.T) {
	up, pf := newUpstream(t), newPlatform(t)
	sc := start(t, baseEnv(up.url(), pf.url(), t.TempDir()))
	resp, err := http.Get("http://" + sc.admin + "/v1/sessions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
}
