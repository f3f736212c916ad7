package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/handoff"
	"github.com/presence-sidecar/presence-sidecar/internal/readiness"
	"github.com/presence-sidecar/presence-sidecar/presence"
	"github.com/presence-sidecar/presence-sidecar/store"
)

func newEngine(t *testing.T, st store.Store) *presence.Engine {
	t.Helper()
	e, err := presence.New(presence.Options{
		Defaults: presence.Settings{Enabled: true, CheckInterval: 2 * time.Minute, Mode: presence.ModeConnection},
		Store:    st,
		Detect:   presence.Detect{Rules: true, API: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func deliverer(t *testing.T, st store.Store) *handoff.Deliverer {
	t.Helper()
	d, err := handoff.New(handoff.Options{URL: "http://127.0.0.1:1", Store: st})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func do(t *testing.T, h http.Handler, method, path, token, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

func TestTokenGuardsV1(t *testing.T) {
	st := store.NewMemory()
	s := &Server{Token: "sekret", Presence: newEngine(t, st), Outbox: deliverer(t, st)}
	h := s.Handler()
	if code, _ := do(t, h, "GET", "/v1/sessions", "", ""); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	if code, _ := do(t, h, "GET", "/v1/sessions", "sekreT", ""); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", code)
	}
	if code, body := do(t, h, "GET", "/v1/sessions", "sekret", ""); code != http.StatusOK || !strings.Contains(body, `"sessions"`) {
		t.Fatalf("right token: %d %s", code, body)
	}
	// Health probes never need the token.
	if code, _ := do(t, h, "GET", "/healthz", "", ""); code != http.StatusOK {
		t.Fatalf("healthz: %d", code)
	}
}

func TestNoTokenMeansAPIOff(t *testing.T) {
	st := store.NewMemory()
	h := (&Server{Presence: newEngine(t, st), Outbox: deliverer(t, st)}).Handler()
	code, body := do(t, h, "GET", "/v1/sessions", "anything", "")
	if code != http.StatusForbidden || !strings.Contains(body, "ADMIN_TOKEN") {
		t.Fatalf("%d %s", code, body)
	}
}

// TestProfilesNeedTheToken: Go's profiles are served under /debug/pprof/
// with the /v1/ API's token, and only with it.
func TestProfilesNeedTheToken(t *testing.T) {
	h := (&Server{Token: "sekret"}).Handler()
	if code, _ := do(t, h, "GET", "/debug/pprof/heap", "", ""); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	code, body := do(t, h, "GET", "/debug/pprof/heap", "sekret", "")
	if code != http.StatusOK || !strings.HasPrefix(body, "\x1f\x8b") { // a gzipped profile.proto
		t.Fatalf("heap profile: %d %q", code, body[:min(len(body), 80)])
	}
	if code, body := do(t, h, "GET", "/debug/pprof/goroutine?debug=1", "sekret", ""); code != http.StatusOK || !strings.Contains(body, "goroutine profile:") {
		t.Fatalf("goroutines: %d %q", code, body[:min(len(body), 80)])
	}
	if code, _ := do(t, (&Server{}).Handler(), "GET", "/debug/pprof/heap", "", ""); code != http.StatusForbidden {
		t.Fatalf("no ADMIN_TOKEN: %d", code)
	}
}

func TestHandoffAndBotSettings(t *testing.T) {
	st := store.NewMemory()
	h := (&Server{Token: "t", Presence: newEngine(t, st), Outbox: deliverer(t, st)}).Handler()
	if code, body := do(t, h, "PUT", "/v1/sessions/s1/handoff?botId=b1", "t", ""); code != 200 || !strings.Contains(body, `"handedOver": true`) {
		t.Fatalf("PUT handoff: %d %s", code, body)
	}
	if code, body := do(t, h, "DELETE", "/v1/sessions/s1/handoff", "t", ""); code != 200 || !strings.Contains(body, `"handedOver": false`) {
		t.Fatalf("DELETE handoff: %d %s", code, body)
	}
	if code, _ := do(t, h, "GET", "/v1/sessions/nope", "t", ""); code != 404 {
		t.Fatalf("unknown session: %d", code)
	}
	if code, body := do(t, h, "PUT", "/v1/bots/b1/presence", "t", `{"checkInterval":"30s"}`); code != 400 || !strings.Contains(body, "checkInterval") {
		t.Fatalf("out-of-range interval must be refused: %d %s", code, body)
	}
	if code, body := do(t, h, "PUT", "/v1/bots/b1/presence", "t", `{"checkIntervall":"3m"}`); code != 400 {
		t.Fatalf("unknown field must be refused: %d %s", code, body)
	}
	if code, body := do(t, h, "PUT", "/v1/bots/b1/presence", "t", `{"checkInterval":"3m","returnMessage":"voltou","mode":"activity"}`); code != 200 || !strings.Contains(body, `"3m0s"`) {
		t.Fatalf("PUT bot: %d %s", code, body)
	}
	if code, body := do(t, h, "GET", "/v1/bots/b1/presence", "t", ""); code != 200 || !strings.Contains(body, `"voltou"`) || !strings.Contains(body, `"activity"`) {
		t.Fatalf("GET bot: %d %s", code, body)
	}
	bots, _ := st.Bots()
	if bots["b1"].ReturnMessage != "voltou" {
		t.Fatalf("bot settings not persisted: %+v", bots)
	}
	// null or "" clears a field: back to the environment's value.
	if code, body := do(t, h, "PUT", "/v1/bots/b1/presence", "t", `{"returnMessage":null,"mode":""}`); code != 200 ||
		!strings.Contains(body, `"returnMessage": ""`) || !strings.Contains(body, `"connection"`) || !strings.Contains(body, `"3m0s"`) {
		t.Fatalf("clearing fields: %d %s", code, body)
	}
}

func TestPresenceOffAndReadiness(t *testing.T) {
	s := &Server{Token: "t", Ready: func() []readiness.Status {
		return []readiness.Status{{Name: "upstream", OK: true, Critical: true, Detail: "up"}, {Name: "state", Detail: "state store: disk on fire"}}
	}}
	h := s.Handler()
	if code, body := do(t, h, "GET", "/v1/sessions", "t", ""); code != http.StatusConflict || !strings.Contains(body, "PRESENCE_ENABLED") {
		t.Fatalf("presence off: %d %s", code, body)
	}
	if code, body := do(t, h, "GET", "/readyz", "", ""); code != 200 || !strings.HasPrefix(body, "ready, presence degraded: state store: disk on fire\n[+]upstream ok: up\n[-]state failing") {
		t.Fatalf("degraded readyz: %d %s", code, body)
	}
	s.Drain()
	if code, _ := do(t, h, "GET", "/readyz", "", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("draining readyz: %d", code)
	}
}

// An id over the bound in the path gets 414, as nginx answers an over-long
// request line, and nothing is tracked or stored.
func TestOverlongIDInPathIs414(t *testing.T) {
	st := store.NewMemory()
	s := &Server{Token: "sekret", Presence: newEngine(t, st), Outbox: deliverer(t, st)}
	h := s.Handler()
	long := strings.Repeat("x", store.MaxIDBytes+1)
	if code, body := do(t, h, "PUT", "/v1/sessions/"+long+"/handoff", "sekret", ""); code != http.StatusRequestURITooLong {
		t.Fatalf("PUT handoff with a long session id: %d %s", code, body)
	}
	if code, body := do(t, h, "PUT", "/v1/bots/"+long+"/presence", "sekret", `{"mode":"activity"}`); code != http.StatusRequestURITooLong {
		t.Fatalf("PUT bot settings with a long bot id: %d %s", code, body)
	}
	if list, _ := st.Sessions(); len(list) != 0 {
		t.Fatalf("%d sessions stored", len(list))
	}
}

// The token is accepted as the password of Basic authentication too, which
// a browser sends by itself once asked (the status page's login).
func TestTokenAsBasicPassword(t *testing.T) {
	st := store.NewMemory()
	h := (&Server{Token: "sekret", Presence: newEngine(t, st), Outbox: deliverer(t, st)}).Handler()
	for pw, want := range map[string]int{"sekret": http.StatusOK, "wrong": http.StatusUnauthorized} {
		req := httptest.NewRequest("GET", "/v1/sessions", nil)
		req.SetBasicAuth("admin", pw)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("Basic password %q: %d, want %d", pw, rec.Code, want)
		}
	}
}
