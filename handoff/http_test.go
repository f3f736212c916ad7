package handoff

import (
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/tracectx"
)

func TestWireFormatBothKinds(t *testing.T) {
	p := newPlatform(t, nil)
	st := store.NewMemory()
	o := baseOptions(st, p.URL+"/api", nil)
	o.Token, o.SigningSecret = "tok-123", testSecret
	d := run(t, o)
	off := offline("sess-1", "msg_off")
	off.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	on := online("sess-1", "msg_on")
	on.Reason = "ignored for online"
	commit(t, st, d, off, on)
	testutil.Eventually(t, 10*time.Second, "two deliveries", func() bool { return p.count() == 2 })

	reqs := p.requests()
	for _, r := range reqs {
		if r.Method != http.MethodPost {
			t.Errorf("method %s", r.Method)
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		if a := r.Header.Get("Authorization"); a != "Bearer tok-123" {
			t.Errorf("Authorization %q", a)
		}
		if ua := r.Header.Get("User-Agent"); !strings.Contains(ua, "presence-sidecar") {
			t.Errorf("User-Agent %q", ua)
		}
		ts, err := strconv.ParseInt(r.Header.Get("webhook-timestamp"), 10, 64)
		if err != nil || time.Since(time.Unix(ts, 0)).Abs() > 5*time.Second {
			t.Errorf("webhook-timestamp %q", r.Header.Get("webhook-timestamp"))
		}
		if err := verifyStandardWebhook(testSecret, r.Header, r.Body, time.Now()); err != nil {
			t.Errorf("signature of %s: %v", r.ID(), err)
		}
	}

	// Offline first (Seq order), to the expire path with ?offline=true.
	r := reqs[0]
	if r.Path != "/api/expire" || r.Query != "offline=true" {
		t.Errorf("offline went to %s?%s", r.Path, r.Query)
	}
	if r.ID() != "msg_off" || r.Header.Get("traceparent") != off.TraceParent {
		t.Errorf("offline id %q traceparent %q", r.ID(), r.Header.Get("traceparent"))
	}
	checkBody(t, r.Body, map[string]any{
		"event": "client.offline", "sessionId": "sess-1", "botId": "bot-1", "offline": true,
		"reason": "disconnected", "lastSeenAt": t0, "detectedAt": t0.Add(2 * time.Minute),
	})

	r = reqs[1]
	if r.Path != "/api/message" || r.Query != "" {
		t.Errorf("online went to %s?%s", r.Path, r.Query)
	}
	// A note without a trace (from an older outbox) still gets a valid one.
	if sc, ok := tracectx.Parse(r.Header.Get("traceparent")); r.ID() != "msg_on" || !ok || sc.TraceID().String() == "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("online id %q traceparent %q", r.ID(), r.Header.Get("traceparent"))
	}
	checkBody(t, r.Body, map[string]any{
		"event": "client.online", "sessionId": "sess-1", "botId": "bot-1", "text": "O cliente voltou a ficar online.",
		"offlineSince": t0.Add(2 * time.Minute), "detectedAt": t0.Add(5 * time.Minute),
	})

	// The exported Render gives the same body as was sent.
	path, body, err := Render(pending0(off))
	if err != nil || path != "/expire?offline=true" || string(body) != string(reqs[0].Body) {
		t.Errorf("Render = %q %s %v", path, body, err)
	}
	if got := d.Endpoint(on); got != p.URL+"/api/message" {
		t.Errorf("Endpoint = %s", got)
	}
}

// pending0 strips delivery bookkeeping, which Render must not depend on.
func pending0(n store.Notification) store.Notification {
	n.Seq, n.Attempts, n.CreatedAt = 0, 0, time.Time{}
	return n
}

// checkBody decodes body and compares it field by field with want; times must
// be RFC 3339 strings naming the same instant.
func checkBody(t *testing.T, body []byte, want map[string]any) {
	t.Helper()
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected field %q in %s", k, body)
		}
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("missing field %q in %s", k, body)
			continue
		}
		if wt, isTime := w.(time.Time); isTime {
			s, _ := g.(string)
			gt, err := time.Parse(time.RFC3339, s)
			if err != nil || !gt.Equal(wt) {
				t.Errorf("field %q = %v, want RFC 3339 of %s", k, g, wt.Format(time.RFC3339))
			}
			continue
		}
		if g != w {
			t.Errorf("field %q = %#v, want %#v", k, g, w)
		}
	}
}

func TestUnsignedWithoutSecretOrToken(t *testing.T) {
	p := newPlatform(t, nil)
	st := store.NewMemory()
	d := run(t, baseOptions(st, p.URL, nil))
	commit(t, st, d, offline("s", "msg_1"))
	testutil.Eventually(t, 10*time.Second, "delivery", func() bool { return p.count() == 1 })
	h := p.requests()[0].Header
	if h.Get("webhook-signature") != "" || h.Get("Authorization") != "" || h.Get("webhook-id") != "msg_1" || h.Get("webhook-timestamp") == "" {
		t.Errorf("headers %v", h)
	}
	if p.requests()[0].Path != "/expire" {
		t.Errorf("path %s", p.requests()[0].Path)
	}
}

func TestEndpoints(t *testing.T) {
	st := store.NewMemory()
	for _, c := range []struct {
		url, expire, message string
		wantOff, wantOn      string
	}{
		{"http://p:8000/api", "", "", "http://p:8000/api/expire?offline=true", "http://p:8000/api/message"},
		{"http://p:8000/api/", "/x/expire", "/msg", "http://p:8000/api/x/expire?offline=true", "http://p:8000/api/msg"},
		{"http://p", "", "", "http://p/expire?offline=true", "http://p/message"},
		{"https://p/api?tenant=7", "", "", "https://p/api/expire?offline=true&tenant=7", "https://p/api/message?tenant=7"},
	} {
		d, err := New(Options{Store: st, URL: c.url, ExpirePath: c.expire, MessagePath: c.message})
		if err != nil {
			t.Fatal(err)
		}
		if got := d.Endpoint(store.Notification{Kind: store.KindOffline}); got != c.wantOff {
			t.Errorf("%s: offline endpoint %s, want %s", c.url, got, c.wantOff)
		}
		if got := d.Endpoint(store.Notification{Kind: store.KindOnline}); got != c.wantOn {
			t.Errorf("%s: online endpoint %s, want %s", c.url, got, c.wantOn)
		}
	}
}

func TestTimeoutRetried(t *testing.T) {
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		if i == 0 {
			select { // sleep past the sidecar's Timeout
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	st := store.NewMemory()
	obs := &outcomes{}
	o := baseOptions(st, p.URL, obs)
	o.Timeout = 100 * time.Millisecond
	d := run(t, o)
	commit(t, st, d, offline("s", "msg_slow"))
	testutil.Eventually(t, 10*time.Second, "delivery", func() bool { return obs.count(Delivered) == 1 })
	got := obs.list()
	if got[0].Result != Retry || got[0].Status != 0 || !strings.Contains(got[0].Error, "timeout") {
		t.Errorf("first outcome %+v", got[0])
	}
	if got[0].Latency < 90*time.Millisecond || got[0].Latency > 3*time.Second {
		t.Errorf("timed-out attempt took %s, want about Timeout", got[0].Latency)
	}
	reqs := p.requests()
	if len(reqs) != 2 || reqs[0].ID() != reqs[1].ID() {
		t.Errorf("requests %d", len(reqs))
	}
}

func TestConnectionRefusedRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	st := store.NewMemory()
	obs := &outcomes{}
	d := run(t, baseOptions(st, "http://"+addr, obs))
	commit(t, st, d, offline("s", "msg_refused"))
	testutil.Eventually(t, 10*time.Second, "two failed attempts", func() bool { return obs.count(Retry) >= 2 })
	for _, x := range obs.list()[:2] {
		if x.Status != 0 || !strings.Contains(x.Error, "refused") {
			t.Errorf("outcome %+v", x)
		}
	}
	if p := pending(t, st); len(p) != 1 || p[0].Attempts < 2 || !strings.Contains(p[0].LastError, "refused") {
		t.Errorf("pending %+v", p)
	}

	// The platform comes up on that address: the note goes through.
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("cannot listen again on %s: %v", addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	testutil.Eventually(t, 10*time.Second, "delivery", func() bool { return obs.count(Delivered) == 1 })
}

func TestDNSFailureRetried(t *testing.T) {
	st := store.NewMemory()
	obs := &outcomes{}
	o := baseOptions(st, "http://platform.invalid", obs)
	o.Timeout = 500 * time.Millisecond
	d := run(t, o)
	commit(t, st, d, offline("s", "msg_dns"))
	testutil.Eventually(t, 10*time.Second, "a failed attempt", func() bool { return obs.count(Retry) >= 1 })
	if len(deadLetters(t, st)) != 0 || len(pending(t, st)) != 1 {
		t.Error("a DNS failure must be retried, not dead-lettered")
	}
}

func TestParseBaseURL(t *testing.T) {
	for _, ok := range []string{"http://p", "https://p:8443/api", "http://op:pw@p/api?tenant=7"} {
		if u, err := ParseBaseURL(ok); err != nil || u.String() != ok {
			t.Errorf("ParseBaseURL(%q) = %v, %v", ok, u, err)
		}
	}
	for in, want := range map[string]string{
		"":                        `want an absolute http:// or https:// URL`,
		"platform:8000":           `want an absolute http:// or https:// URL`,
		"/api":                    `want an absolute http:// or https:// URL`,
		"ws://p":                  `want an absolute http:// or https:// URL`,
		"http://":                 `want an absolute http:// or https:// URL`,
		"ftp://op:hunter2@p/x":    `want an absolute http:// or https:// URL`,
		"http://op:hunter2@p:x/a": `want an absolute http:// or https:// URL`,
		"http://op@p:x":           `want an absolute http:// or https:// URL`,
	} {
		if _, err := ParseBaseURL(in); err == nil || err.Error() != want {
			t.Errorf("ParseBaseURL(%q) = %v, want %s", in, err, want)
		}
	}
}

func TestCheckPath(t *testing.T) {
	for _, ok := range []string{"/", "/expire", "/x/expire?tenant=7", "/a:b"} {
		if err := CheckPath(ok); err != nil {
			t.Errorf("CheckPath(%q) = %v", ok, err)
		}
	}
	for in, want := range map[string]string{
		"":                    `want a path starting with /`,
		"expire":              `want a path starting with /`,
		"http://other/expire": `want a path starting with /`,
		"//other/expire":      `want a path starting with /, not a URL`,
		"/%zz":                `want a path starting with /, not a URL`,
	} {
		if err := CheckPath(in); err == nil || err.Error() != want {
			t.Errorf("CheckPath(%q) = %v, want %s", in, err, want)
		}
	}
}
