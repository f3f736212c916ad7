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
		"UPSTREAM_URL", "http://127.0.0.1:3000", `<meta http-equiv="refresh" content="2">`)
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
		`id="n-sessions">4<`, `id="n-absent">1<`, `id="n-handed">2<`,
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

func TestRefresh(t *testing.T) {
	h := New(Options{Config: loadConfig(t)})
	for q, want := range map[string]string{
		"/":             `<meta http-equiv="refresh" content="2">`,
		"/?refresh=5":   `<meta http-equiv="refresh" content="5">`,
		"/?refresh=bad": `<meta http-equiv="refresh" content="2">`,
	} {
		_, body := get(t, h, q)
		mustContain(t, body, want)
	}
	_, body := get(t, h, "/?refresh=0")
	if strings.Contains(body, `http-equiv="refresh"`) {
		t.Error("?refresh=0 still reloads")
	}
	mustContain(t, body, "not reloading")
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
