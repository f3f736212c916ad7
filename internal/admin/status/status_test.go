package status

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/internal/config"
	"github.com/presence-sidecar/presence-sidecar/internal/history"
	"github.com/presence-sidecar/presence-sidecar/presence"
	"github.com/presence-sidecar/presence-sidecar/store"
)

var now = time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC)

func loadConfig(t *testing.T, env ...string) config.Config {
	t.Helper()
	base := []string{"UPSTREAM_URL=http://127.0.0.1:3000"}
	c, err := config.Load(append(base, env...))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type fakePresence struct {
	views []presence.View
	def   presence.Settings
}

func (f *fakePresence) Sessions() []presence.View { return f.views }
func (f *fakePresence) Stats() presence.Stats {
	st := presence.Stats{Sessions: len(f.views)}
	for _, v := range f.views {
		if v.State == store.Absent {
			st.Absent++
		} else {
			st.Present++
		}
		if v.HandedOver {
			st.HandedOver++
		}
		st.Connections += v.Connections
	}
	return st
}
func (f *fakePresence) BotSettings(string) presence.Settings { return f.def }
func (f *fakePresence) BotIDs() []string                     { return nil }

func get(t *testing.T, h http.Handler, target string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Result(), string(b)
}

func mustContain(t *testing.T, body string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("page lacks %q", w)
		}
	}
}

func TestPresenceOff(t *testing.T) {
	// The wiring path: a sidecar with PRESENCE_ENABLED=false has no engine and no store.
	h := New(Options{Config: loadConfig(t)})
	resp, body := get(t, h, "/")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	mustContain(t, body, `id="presence-off"`, "Presence monitoring is off", "PRESENCE_ENABLED=false",
		"UPSTREAM_URL", "http://127.0.0.1:3000", `<noscript><meta http-equiv="refresh" content="2"></noscript>`)
	if strings.Contains(body, `id="sessions"`) {
		t.Error("a sessions table with presence off")
	}
}

func seedStore(t *testing.T) *store.Memory {
	t.Helper()
	m := store.NewMemory()
	notes := []store.Notification{
		{ID: "msg_delivered", Kind: store.KindOffline, SessionID: "s-absent", BotID: "bot-a", Episode: 1, Reason: "disconnected", DetectedAt: now.Add(-30 * time.Second), CreatedAt: now.Add(-30 * time.Second)},
		{ID: "msg_retrying", Kind: store.KindOnline, SessionID: "s-back", BotID: "bot-a", Episode: 2, Text: "voltou", DetectedAt: now.Add(-5 * time.Second), CreatedAt: now.Add(-5 * time.Second)},
		{ID: "msg_dead", Kind: store.KindOffline, SessionID: "s-dead", BotID: "bot-a", Episode: 1, Reason: "inactive", DetectedAt: now.Add(-time.Minute), CreatedAt: now.Add(-time.Minute)},
	}
	if err := m.Commit(nil, nil, notes); err != nil {
		t.Fatal(err)
	}
	if err := m.Delivered(notes[0]); err != nil {
		t.Fatal(err)
	}
	retry := notes[1]
	retry.Attempts, retry.LastStatus, retry.LastError, retry.NextAttemptAt = 2, 503, "service unavailable", now.Add(4*time.Second)
	if err := m.Attempted(retry); err != nil {
		t.Fatal(err)
	}
	dead := notes[2]
	dead.Attempts, dead.LastStatus, dead.LastError = 1, 400, "bad request"
	if err := m.DeadLetter(dead); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSessionsAndNotifications(t *testing.T) {
	def := presence.Settings{Enabled: true, CheckInterval: 2 * time.Minute, Mode: presence.ModeConnection}
	fp := &fakePresence{def: def, views: []presence.View{
		{Session: store.Session{ID: "s-bot", BotID: "bot-a", LastSeenAt: now.Add(-1 * time.Second)}, Connections: 3, Settings: def,
			Replicas: map[string]int64{"pod-b": 2, "pod-a": 1}},
		{Session: store.Session{ID: "s-absent", BotID: "bot-a", State: store.Absent, HandedOver: true, Episode: 1, ExpireSent: true,
			LastSeenAt: now.Add(-150 * time.Second), AbsentAt: now.Add(-30 * time.Second), Reason: "disconnected"}, Settings: def},
		{Session: store.Session{ID: "s-leaving", BotID: "bot-a", HandedOver: true, LastSeenAt: now.Add(-10 * time.Second),
			Deadline: now.Add(110 * time.Second)}, Settings: def},
		{Session: store.Session{ID: `<script>alert("x")</script>`, LastSeenAt: now}, Connections: 2, Settings: def},
		{Session: store.Session{ID: "s-returned/1", BotID: "bot-b", Episode: 1, LastSeenAt: now, ReturnedAt: now.Add(-75 * time.Second)}, Connections: 1, Settings: def},
	}}
	cfg := loadConfig(t, "PRESENCE_ENABLED=true", "HANDOFF_URL=https://agent:pw@human.example/api",
		"HANDOFF_TOKEN=tok-SECRET-1", "HANDOFF_SIGNING_SECRET=whsec_c2VjcmV0LWtleS1zZWNyZXQ=")
	h := New(Options{Config: cfg, Presence: fp, Outbox: storeOutbox{seedStore(t)}, Now: func() time.Time { return now }})
	resp, body := get(t, h, "/")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	mustContain(t, body,
		`<tr data-session="s-absent" data-state="absent" data-handed-over="true">`,
		`<tr data-session="s-bot" data-state="present" data-handed-over="false">`,
		"absent in 1m50s unless seen", // the deadline of s-leaving
		"(30s ago), disconnected, /expire sent",
		"2m30s ago", // s-absent last seen
		`id="n-sessions">5<`, `id="n-absent">1<`, `id="n-handed">2<`,
		"back at "+now.Add(-75*time.Second).Local().Format("15:04:05")+" (1m15s ago)", // s-returned/1
		`href="/sessions/s-returned%2F1"`, `href="/sessions/s-absent"`,                // each session's timeline
		`id="n-pending">1<`, `id="n-dead">1<`,
		"3 <span class=\"small replicas\">on pod-a ×1, pod-b ×2</span>", // cluster mode: who holds the connections
		// recent outcomes: delivered and dead-lettered; the outbox: retrying
		`data-session="s-absent" data-kind="client.offline" data-outcome="delivered"`,
		`data-session="s-dead" data-kind="client.offline" data-outcome="dead-lettered"`,
		`data-session="s-back" data-kind="client.online" data-outcome="retrying"`,
		"HTTP 503 service unavailable", "next attempt in 4s", "HTTP 400 bad request", "msg_dead",
		"O cliente voltou a ficar online.", // the default return text
		"https://agent:xxxxx@human.example/api", "(set, hidden)",
	)
	// Hand-overs come first.
	if strings.Index(body, `data-session="s-absent"`) > strings.Index(body, `data-session="s-bot"`) {
		t.Error("handed-over sessions should be listed first")
	}
	// Session ids come from clients: escaped.
	if strings.Contains(body, `<script>alert`) {
		t.Error("a session id was not escaped")
	}
	mustContain(t, body, `&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;`)
	for _, secret := range []string{"tok-SECRET-1", "c2VjcmV0LWtleS1zZWNyZXQ", ":pw@"} {
		if strings.Contains(body, secret) {
			t.Errorf("the page shows the secret %q", secret)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q", csp)
	}
}

func TestEmptyAndLimits(t *testing.T) {
	def := presence.Settings{Enabled: true, CheckInterval: time.Minute}
	fp := &fakePresence{def: def}
	for i := range 5 {
		fp.views = append(fp.views, presence.View{Session: store.Session{ID: "s" + string(rune('a'+i)), LastSeenAt: now}, Settings: def})
	}
	h := New(Options{Config: loadConfig(t, "PRESENCE_ENABLED=true", "HANDOFF_URL=http://h"), Presence: fp, Outbox: storeOutbox{store.NewMemory()},
		Now: func() time.Time { return now }, MaxSessions: 3})
	_, body := get(t, h, "/")
	mustContain(t, body, "… and 2 more", `id="notes-empty"`)
	if n := len(regexp.MustCompile(`<tr data-session=`).FindAllString(body, -1)); n != 3 {
		t.Errorf("%d session rows, want 3", n)
	}

	fp.views = nil
	_, body = get(t, h, "/")
	mustContain(t, body, `id="sessions-empty"`)
}

// storeOutbox is the embedded deliverer's view of a store (handoff.Deliverer
// reads its Store the same way).
type storeOutbox struct{ store.Store }

func (o storeOutbox) Pending(limit int) ([]store.Notification, int, error) {
	p, err := o.Store.Pending()
	return p[:min(len(p), limit)], len(p), err
}

type brokenStore struct{ store.Store }

func (brokenStore) Pending() ([]store.Notification, error)   { return nil, errors.New("disk on fire") }
func (brokenStore) Recent(int) ([]store.Notification, error) { return nil, errors.New("disk on fire") }
func (brokenStore) DeadLetters() ([]store.Notification, error) {
	return nil, errors.New("disk on fire")
}
func (brokenStore) Bots() (map[string]store.BotSettings, error) {
	return nil, errors.New("disk on fire")
}

func TestStoreErrorsShowButDoNotBreak(t *testing.T) {
	h := New(Options{Config: loadConfig(t, "PRESENCE_ENABLED=true", "HANDOFF_URL=http://h"), Presence: &fakePresence{}, Outbox: storeOutbox{brokenStore{}}})
	resp, body := get(t, h, "/")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	mustContain(t, body, "State store trouble — outbox: disk on fire")
}

// TestRefresh: the script updates the page every ?refresh=N seconds
// (data-refresh); without JavaScript the page reloads itself as often.
func TestRefresh(t *testing.T) {
	h := New(Options{Config: loadConfig(t)})
	for q, n := range map[string]string{"/": "2", "/?refresh=5": "5", "/?refresh=bad": "2"} {
		_, body := get(t, h, q)
		mustContain(t, body, `<noscript><meta http-equiv="refresh" content="`+n+`"></noscript>`,
			`data-refresh="`+n+`"`, `<script src="/assets/status.js" defer></script>`, "updates every "+n+" s")
	}
	_, body := get(t, h, "/?refresh=0")
	if strings.Contains(body, `http-equiv="refresh"`) {
		t.Error("?refresh=0 still reloads")
	}
	mustContain(t, body, "not updating", `data-refresh="0"`)
}

// TestAssets: the script is served from the binary, and the page's CSP lets
// it run and fetch from the admin listener only.
func TestAssets(t *testing.T) {
	resp, body := get(t, Assets(), "/assets/status.js")
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	mustContain(t, body, "data-live", "/v1/bots/")
	resp, _ = get(t, New(Options{Config: loadConfig(t)}), "/")
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %s", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-eval") || strings.Contains(csp, "script-src 'unsafe-inline'") {
		t.Errorf("CSP %q lets other scripts run", csp)
	}
}

func TestAdminTokenGuardsThePage(t *testing.T) {
	h := New(Options{Config: loadConfig(t, "ADMIN_TOKEN=s3cret")})
	for _, c := range []struct {
		name string
		hdr  []string
		want int
	}{
		{"none", nil, http.StatusUnauthorized},
		{"wrong bearer", []string{"Authorization", "Bearer nope"}, http.StatusUnauthorized},
		{"bearer", []string{"Authorization", "Bearer s3cret"}, http.StatusOK},
		{"basic, any user", []string{"Authorization", "Basic YWRtaW46czNjcmV0"}, http.StatusOK}, // admin:s3cret
		{"basic, wrong", []string{"Authorization", "Basic YWRtaW46bm9wZQ=="}, http.StatusUnauthorized},
	} {
		resp, body := get(t, h, "/", c.hdr...)
		if resp.StatusCode != c.want {
			t.Errorf("%s: status %d, want %d", c.name, resp.StatusCode, c.want)
		}
		if c.want == http.StatusUnauthorized {
			if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("%s: WWW-Authenticate %q", c.name, resp.Header.Get("WWW-Authenticate"))
			}
			if strings.Contains(body, "<table") {
				t.Errorf("%s: the page leaked", c.name)
			}
		}
	}
}

func TestShort(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:           "0s",
		850 * time.Millisecond: "850ms",
		4 * time.Second:        "4s",
		80 * time.Second:       "1m20s",
		2 * time.Minute:        "2m",
		2*time.Hour + 5*time.Minute + 7*time.Second: "2h5m",
		3 * time.Hour: "3h",
	} {
		if got := short(d); got != want {
			t.Errorf("short(%s) = %q, want %q", d, got, want)
		}
	}
}

// TestBotSettingsCards: one card per bot with its values, the interval in
// minutes, the default return text as the placeholder; editable only with
// ADMIN_TOKEN (the /v1/ API is off without it).
func TestBotSettingsCards(t *testing.T) {
	def := presence.Settings{Enabled: true, CheckInterval: 3 * time.Minute, Mode: presence.ModeActivity, ReturnMessage: "Voltei!"}
	fp := &fakePresence{def: def, views: []presence.View{
		{Session: store.Session{ID: "s1", BotID: "bot-a", LastSeenAt: now}, Settings: def},
		{Session: store.Session{ID: "s2", BotID: `b"<x>`, LastSeenAt: now}, Settings: def},
	}}
	env := []string{"PRESENCE_ENABLED=true", "HANDOFF_URL=http://h"}
	h := New(Options{Config: loadConfig(t, append(env, "ADMIN_TOKEN=tok")...), Presence: fp, Outbox: storeOutbox{store.NewMemory()}, Now: func() time.Time { return now }})
	_, body := get(t, h, "/", "Authorization", "Bearer tok")
	mustContain(t, body,
		`<form class="bot" id="bot-626f742d61" data-live data-bot="bot-a" data-interval="3m0s" novalidate>`,
		`name="checkInterval" value="3" min="1" max="10" step="1"`,
		`<input type="checkbox" name="enabled" checked>`,
		`<option value="activity" selected>`,
		`placeholder="Voltei!"></textarea>`, // the default's text, inherited
		`data-bot="b&#34;&lt;x&gt;"`,        // bot ids come from clients: escaped
		`data-error-for="checkInterval"`, "Monitor client presence", "Save")
	if strings.Contains(body, `id="settings-locked"`) || strings.Contains(body, " disabled>") {
		t.Error("settings locked with ADMIN_TOKEN set")
	}

	h = New(Options{Config: loadConfig(t, append(env, "PRESENCE_ALLOW_ANY_INTERVAL=true")...), Presence: fp, Outbox: storeOutbox{store.NewMemory()}, Now: func() time.Time { return now }})
	_, body = get(t, h, "/")
	mustContain(t, body, `id="settings-locked"`, `<fieldset style="border:0;padding:0;margin:0" disabled>`, `min="0" step="any"`)

	fp.def.ReturnMessage = ""
	h = New(Options{Config: loadConfig(t, env...), Presence: &ownReturn{fp, "bot-a", "Já voltei"}, Outbox: storeOutbox{store.NewMemory()}, Now: func() time.Time { return now }})
	_, body = get(t, h, "/")
	mustContain(t, body, `placeholder="O cliente voltou a ficar online.">Já voltei</textarea>`)

	fp.views, fp.def.CheckInterval = nil, 20*time.Second
	_, body = get(t, h, "/")
	mustContain(t, body, `id="bots-empty"`)
}

// TestCharts: the hour is drawn as inline SVG, one chart per figure, with
// the latest minute in words and a tooltip per minute.
func TestCharts(t *testing.T) {
	hour := make([]history.Minute, history.Minutes)
	for i := range hour {
		hour[i] = history.Minute{Start: now.Add(time.Duration(i-59) * time.Minute), Sampled: i >= 30, Connections: int64(i), OutboxDepth: 2}
	}
	hour[58].Absences, hour[58].Returns = 3, 1
	hour[58].Outcomes[history.Delivered], hour[58].Outcomes[history.Dead] = 4, 1
	hour[58].P95 = 120 * time.Millisecond
	hour[59].Connections = 7
	h := New(Options{Config: loadConfig(t, "PRESENCE_ENABLED=true", "HANDOFF_URL=http://h"), Presence: &fakePresence{}, Outbox: storeOutbox{store.NewMemory()},
		History: func() []history.Minute { return hour }})
	_, body := get(t, h, "/")
	mustContain(t, body, `id="charts" data-live`,
		`id="chart-connections"`, "Open connections <span>· 7 now</span>",
		`id="chart-transitions"`, "<title>1 min ago: 3 went absent, 1 came back</title>",
		`id="chart-deliveries"`, "<title>1 min ago: 4 delivered, 1 dead-lettered</title>",
		`id="chart-latency"`, "<title>1 min ago: 120ms</title>", "no delivery this minute",
		`id="chart-outbox"`, "2 now")
	if n := strings.Count(body, "<svg "); n != 5 {
		t.Errorf("%d charts, want 5", n)
	}
	// Connections were sampled from minute 30 on: a line from there.
	if n := strings.Count(body, `<circle`); n != 30+30+1 { // connections, outbox depth, one p95
		t.Errorf("%d points", n)
	}

	_, body = get(t, New(Options{Config: loadConfig(t)}), "/")
	if strings.Contains(body, "<svg") {
		t.Error("charts without a history")
	}
}

func TestScale(t *testing.T) {
	for top, want := range map[float64]float64{0: 1, 0.3: 0.5, 1: 1, 3: 5, 7: 10, 12: 20, 150: 200, 999: 1000} {
		s := series{values: []float64{top}, has: []bool{true}}
		if got := scale(s); got != want {
			t.Errorf("scale(%v) = %v, want %v", top, got, want)
		}
	}
}

// ownReturn gives one bot a return message of its own.
type ownReturn struct {
	*fakePresence
	bot, text string
}

func (o *ownReturn) BotSettings(id string) presence.Settings {
	s := o.def
	if id == o.bot {
		s.ReturnMessage = o.text
	}
	return s
}
