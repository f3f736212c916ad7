package handoff

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/tracectx"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// verifyStandardWebhook is the receiver's side of Standard Webhooks, written
// from the specification independently of Sign: key = base64 of the secret
// after "whsec_", signed content = id.timestamp.body, header = space-separated
// "v1,<base64 HMAC-SHA256>" entries, any of which may match.
func verifyStandardWebhook(secret string, h http.Header, body []byte, now time.Time) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	id, tsText, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || tsText == "" || sigs == "" {
		return errors.New("missing webhook headers")
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("bad timestamp %q", tsText)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("timestamp %d too far from now", ts)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + tsText + "." + string(body)))
	want := mac.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		v, b64, ok := strings.Cut(s, ",")
		if !ok || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no matching signature")
}

// --- a real HTTP platform ---

type received struct {
	At     time.Time
	Method string
	Path   string
	Query  string
	Header http.Header
	Body   []byte
}

func (r received) ID() string { return r.Header.Get("webhook-id") }

type platform struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []received
	// answer decides the response to the i-th request (0-based); nil: 204.
	answer func(w http.ResponseWriter, r *http.Request, got received, i int)
}

func newPlatform(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, got received, i int)) *platform {
	p := &platform{answer: answer}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got := received{At: time.Now(), Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body}
		p.mu.Lock()
		i := len(p.reqs)
		p.reqs = append(p.reqs, got)
		p.mu.Unlock()
		if p.answer == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		p.answer(w, r, got, i)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *platform) requests() []received {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.reqs)
}

func (p *platform) count() int { return len(p.requests()) }

// outcomes collects what Observe reports.
type outcomes struct {
	mu  sync.Mutex
	all []Outcome
}

func (o *outcomes) observe(x Outcome) {
	o.mu.Lock()
	o.all = append(o.all, x)
	o.mu.Unlock()
}

func (o *outcomes) list() []Outcome {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.all)
}

func (o *outcomes) count(r Result) int {
	n := 0
	for _, x := range o.list() {
		if x.Result == r {
			n++
		}
	}
	return n
}

// run starts a Deliverer and stops it (checking that Run returns) at cleanup.
func run(t *testing.T, o Options) *Deliverer {
	t.Helper()
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return d
}

func baseOptions(st store.Store, url string, obs *outcomes) Options {
	o := Options{URL: url, Store: st, FirstRetry: 20 * time.Millisecond, RetryMaxDelay: time.Second, Timeout: 2 * time.Second}
	if obs != nil {
		o.Observe = obs.observe
	}
	return o
}

var t0 = time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)

func offline(session, id string) store.Notification {
	return store.Notification{ID: id, Kind: store.KindOffline, SessionID: session, BotID: "bot-1", Episode: 1,
		Reason: "disconnected", LastSeenAt: t0, DetectedAt: t0.Add(2 * time.Minute), CreatedAt: time.Now()}
}

func online(session, id string) store.Notification {
	return store.Notification{ID: id, Kind: store.KindOnline, SessionID: session, BotID: "bot-1", Episode: 1,
		Text: "O cliente voltou a ficar online.", OfflineSince: t0.Add(2 * time.Minute), DetectedAt: t0.Add(5 * time.Minute),
		CreatedAt: time.Now()}
}

func commit(t *testing.T, st store.Store, d *Deliverer, notes ...store.Notification) {
	t.Helper()
	if err := st.Commit(nil, nil, notes); err != nil {
		t.Fatal(err)
	}
	if d != nil {
		d.Wake()
	}
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	// Limits only matter when something is wrong; keep them generous so a
	// loaded machine (-race, parallel builds) does not fail the test.
	end := time.Now().Add(max(within, 10*time.Second))
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func pending(t *testing.T, st store.Store) []store.Notification {
	t.Helper()
	p, err := st.Pending()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func deadLetters(t *testing.T, st store.Store) []store.Notification {
	t.Helper()
	p, err := st.DeadLetters()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// --- tests ---

func TestSignKnownVector(t *testing.T) {
	const want = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	key, err := DecodeSecret(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	id, ts, body := "msg_p5jXN8AQM9LWM0D4loKWxJek", int64(1614265330), []byte(`{"test": 2432232314}`)
	if got := Sign(key, id, ts, body); got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
	// The test's own verifier agrees on the vector, so it can be trusted below.
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	h.Set("webhook-signature", "v1,bogus "+want)
	if err := verifyStandardWebhook(testSecret, h, body, time.Unix(ts, 0)); err != nil {
		t.Fatalf("independent verifier rejects the known vector: %v", err)
	}
	if err := verifyStandardWebhook(testSecret, h, []byte(`{"test": 2432232315}`), time.Unix(ts, 0)); err == nil {
		t.Fatal("independent verifier accepts a changed body")
	}
}

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
	eventually(t, 3*time.Second, "two deliveries", func() bool { return p.count() == 2 })

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
	eventually(t, 2*time.Second, "delivery", func() bool { return p.count() == 1 })
	h := p.requests()[0].Header
	if h.Get("webhook-signature") != "" || h.Get("Authorization") != "" || h.Get("webhook-id") != "msg_1" || h.Get("webhook-timestamp") == "" {
		t.Errorf("headers %v", h)
	}
	if p.requests()[0].Path != "/expire" {
		t.Errorf("path %s", p.requests()[0].Path)
	}
}

func TestRetryBackoffDoublesSameID(t *testing.T) {
	const first = 50 * time.Millisecond
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		if i < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	st := store.NewMemory()
	obs := &outcomes{}
	o := baseOptions(st, p.URL, obs)
	o.SigningSecret, o.FirstRetry, o.RetryMaxDelay = testSecret, first, 10*time.Second
	d := run(t, o)
	commit(t, st, d, offline("s", "msg_retry"))
	eventually(t, 3*time.Second, "delivery after three 503s", func() bool { return obs.count(Delivered) == 1 })

	reqs := p.requests()
	if len(reqs) != 4 {
		t.Fatalf("%d requests, want 4", len(reqs))
	}
	var gaps []time.Duration
	for i, r := range reqs {
		if r.ID() != "msg_retry" {
			t.Errorf("attempt %d webhook-id %q", i, r.ID())
		}
		if err := verifyStandardWebhook(testSecret, r.Header, r.Body, time.Now()); err != nil {
			t.Errorf("attempt %d: %v", i, err)
		}
		if i > 0 {
			gaps = append(gaps, r.At.Sub(reqs[i-1].At))
		}
	}
	got := obs.list()
	var delays []time.Duration
	for i, x := range got[:3] {
		if x.Result != Retry || x.Status != 503 || x.Attempts != i+1 || x.NextAttemptAt.IsZero() {
			t.Errorf("outcome %d = %+v", i, x)
		}
		delays = append(delays, x.Delay)
	}
	t.Logf("chosen delays %v, measured gaps %v", delays, gaps)
	for i, g := range gaps {
		// The chosen delay doubles from FirstRetry with at most ±20% jitter.
		base := first << i
		lo, hi := time.Duration(float64(base)*(1-jitter)), time.Duration(float64(base)*(1+jitter))
		if delays[i] < lo || delays[i] > hi {
			t.Errorf("delay %d = %s, want within [%s, %s]", i+1, delays[i], lo, hi)
		}
		// The retry never comes early, and not much late: the upper slack
		// absorbs scheduling stalls under -race on a busy machine.
		if g < delays[i]-timerSlack || g > delays[i]+500*time.Millisecond {
			t.Errorf("gap %d = %s, chosen delay %s", i+1, g, delays[i])
		}
	}
	for i := 1; i < len(delays); i++ {
		if r := float64(delays[i]) / float64(delays[i-1]); r < 2*(1-jitter)/(1+jitter) || r > 2*(1+jitter)/(1-jitter) {
			t.Errorf("delay %d / delay %d = %.2f, want about 2", i+1, i, r)
		}
	}
	if x := got[3]; x.Result != Delivered || x.Status != 200 || x.Attempts != 4 || x.ID != "msg_retry" {
		t.Errorf("final outcome %+v", x)
	}
	if len(pending(t, st)) != 0 {
		t.Error("outbox not empty after delivery")
	}
	// Depth follows once Run has taken the outcome in (Observe runs just before).
	eventually(t, time.Second, "depth 0", func() bool { return d.Depth() == 0 })
	recent, _ := st.Recent(1)
	if len(recent) != 1 || recent[0].DeliveredAt.IsZero() || recent[0].Attempts != 4 {
		t.Errorf("recent %+v", recent)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		if i == 0 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	st := store.NewMemory()
	obs := &outcomes{}
	o := baseOptions(st, p.URL, obs)
	o.FirstRetry, o.RetryMaxDelay = 20*time.Millisecond, 5*time.Second
	d := run(t, o)
	commit(t, st, d, offline("s", "msg_ra"))
	eventually(t, 3*time.Second, "second attempt", func() bool { return p.count() == 2 })
	reqs := p.requests()
	if x := obs.list()[0]; x.Delay != time.Second || x.Status != 429 {
		t.Errorf("outcome %+v, want the 1s of Retry-After (backoff alone: 20ms)", x)
	}
	if g := reqs[1].At.Sub(reqs[0].At); g < time.Second-timerSlack || g > 1500*time.Millisecond {
		t.Errorf("gap %s, want about the 1s of Retry-After", g)
	}
}

func TestRetryAfterCappedByMaxDelay(t *testing.T) {
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		if i == 0 {
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	st := store.NewMemory()
	obs := &outcomes{}
	o := baseOptions(st, p.URL, obs)
	o.FirstRetry, o.RetryMaxDelay = 20*time.Millisecond, 150*time.Millisecond
	d := run(t, o)
	commit(t, st, d, offline("s", "msg_ra"))
	eventually(t, 2*time.Second, "second attempt", func() bool { return p.count() == 2 })
	reqs := p.requests()
	if x := obs.list()[0]; x.Delay != 150*time.Millisecond {
		t.Errorf("outcome %+v, want RetryMaxDelay 150ms", x)
	}
	if g := reqs[1].At.Sub(reqs[0].At); g < 150*time.Millisecond-timerSlack || g > time.Second {
		t.Errorf("gap %s, want RetryMaxDelay 150ms", g)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":                              0,
		"5":                             5 * time.Second,
		" 120 ":                         2 * time.Minute,
		"-3":                            0,
		"soon":                          0,
		"Wed, 01 Jan 2025 00:00:30 GMT": 30 * time.Second,
		"Tue, 31 Dec 2024 23:00:00 GMT": 0,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	d, err := New(Options{URL: "http://x", Store: store.NewMemory(), FirstRetry: time.Second, RetryMaxDelay: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for attempts := 1; attempts <= 40; attempts++ {
		base := min(time.Second<<min(attempts-1, 20), 5*time.Minute)
		lo, hi := time.Duration(float64(base)*(1-jitter)), min(time.Duration(float64(base)*(1+jitter)), 5*time.Minute)
		seen := map[time.Duration]bool{}
		for range 200 {
			b := d.backoff(attempts)
			if b < lo || b > hi {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", attempts, b, lo, hi)
			}
			seen[b] = true
		}
		if len(seen) < 10 {
			t.Errorf("backoff(%d) shows no jitter: %d distinct values", attempts, len(seen))
		}
	}
}

func TestPermanent4xxDeadLetteredThenReplayed(t *testing.T) {
	huge := strings.Repeat("platform says no; ", 1000)
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		if i == 0 {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, huge)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	st := store.NewMemory()
	obs := &outcomes{}
	d := run(t, baseOptions(st, p.URL, obs))
	commit(t, st, d, offline("s", "msg_400"))
	// Observe runs after the store write: once it reports, the store shows it.
	eventually(t, 2*time.Second, "dead letter", func() bool { return obs.count(Dead) == 1 })
	dl := deadLetters(t, st)[0]
	if dl.LastStatus != 400 || dl.DeadAt.IsZero() || dl.Attempts != 1 || !strings.HasPrefix(dl.LastError, "HTTP 400") {
		t.Errorf("dead letter %+v", dl)
	}
	if len(dl.LastError) > 2*excerptLen || !strings.Contains(dl.LastError, "platform says no") {
		t.Errorf("LastError should hold a short excerpt, got %d bytes: %q", len(dl.LastError), dl.LastError)
	}
	if x := obs.list()[0]; x.Result != Dead || x.Status != 400 || strings.Contains(x.Error, "platform says") {
		t.Errorf("outcome %+v (the body must not reach logs or metrics)", x)
	}
	time.Sleep(100 * time.Millisecond) // several backoff steps: a dead letter is not retried
	if p.count() != 1 || len(pending(t, st)) != 0 {
		t.Fatalf("dead letter was retried: %d requests", p.count())
	}

	n, err := d.Replay("msg_400")
	if err != nil || n.ID != "msg_400" {
		t.Fatalf("Replay = %+v, %v", n, err)
	}
	eventually(t, 2*time.Second, "delivery after replay", func() bool { return obs.count(Delivered) == 1 })
	reqs := p.requests()
	if len(reqs) != 2 || reqs[1].ID() != "msg_400" || string(reqs[1].Body) != string(reqs[0].Body) {
		t.Errorf("replayed request id %q", reqs[1].ID())
	}
	if len(deadLetters(t, st)) != 0 || len(pending(t, st)) != 0 {
		t.Error("replayed note still queued or dead")
	}
	if _, err := d.Replay("nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Replay(unknown) = %v", err)
	}
}

func TestRetriableStatuses(t *testing.T) {
	for _, code := range []int{408, 429, 500, 502, 503, 504, 302} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
				if i == 0 {
					if code == 302 {
						w.Header().Set("Location", "/elsewhere")
					}
					w.WriteHeader(code)
					return
				}
				w.WriteHeader(http.StatusOK)
			})
			st := store.NewMemory()
			obs := &outcomes{}
			d := run(t, baseOptions(st, p.URL, obs))
			commit(t, st, d, online("s", "msg_x"))
			eventually(t, 2*time.Second, "delivery", func() bool { return obs.count(Delivered) == 1 })
			got := obs.list()
			if len(got) != 2 || got[0].Result != Retry || got[0].Status != code || len(deadLetters(t, st)) != 0 {
				t.Errorf("outcomes %+v", got)
			}
			for _, r := range p.requests() {
				if r.Path != "/message" { // a redirect is never followed
					t.Errorf("request to %s", r.Path)
				}
			}
		})
	}
	for _, code := range []int{400, 401, 403, 404, 409, 410, 413, 422} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) { w.WriteHeader(code) })
			st := store.NewMemory()
			d := run(t, baseOptions(st, p.URL, nil))
			commit(t, st, d, online("s", "msg_x"))
			eventually(t, 2*time.Second, "dead letter", func() bool { return len(deadLetters(t, st)) == 1 })
			if p.count() != 1 {
				t.Errorf("%d attempts, want 1", p.count())
			}
		})
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
	eventually(t, 2*time.Second, "delivery", func() bool { return obs.count(Delivered) == 1 })
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
	eventually(t, 2*time.Second, "two failed attempts", func() bool { return obs.count(Retry) >= 2 })
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
	eventually(t, 3*time.Second, "delivery", func() bool { return obs.count(Delivered) == 1 })
}

func TestDNSFailureRetried(t *testing.T) {
	st := store.NewMemory()
	obs := &outcomes{}
	o := baseOptions(st, "http://platform.invalid", obs)
	o.Timeout = 500 * time.Millisecond
	d := run(t, o)
	commit(t, st, d, offline("s", "msg_dns"))
	eventually(t, 3*time.Second, "a failed attempt", func() bool { return obs.count(Retry) >= 1 })
	if len(deadLetters(t, st)) != 0 || len(pending(t, st)) != 1 {
		t.Error("a DNS failure must be retried, not dead-lettered")
	}
}

func TestRetryHorizonDeadLetters(t *testing.T) {
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		w.WriteHeader(http.StatusBadGateway)
	})
	st := store.NewMemory()
	obs := &outcomes{}
	o := baseOptions(st, p.URL, obs)
	o.FirstRetry, o.RetryFor = 20*time.Millisecond, 150*time.Millisecond
	d := run(t, o)
	commit(t, st, d, offline("s", "msg_h"))
	eventually(t, 2*time.Second, "dead letter", func() bool { return obs.count(Dead) == 1 })
	dl := deadLetters(t, st)[0]
	// 20+40+80 ms of backoff fit in 150 ms, the next 160 ms do not: at most 4
	// attempts (fewer when the machine is slow).
	if dl.Attempts < 1 || dl.Attempts > 5 || dl.LastStatus != 502 || !strings.Contains(dl.LastError, "retry horizon") {
		t.Errorf("dead letter %+v", dl)
	}
	got := obs.list()
	if got[len(got)-1].Result != Dead || got[len(got)-1].Attempts != dl.Attempts {
		t.Errorf("last outcome %+v", got[len(got)-1])
	}
	for _, x := range got[:len(got)-1] {
		// Every retry that was scheduled lies inside the horizon.
		if x.Result != Retry || x.NextAttemptAt.After(dl.CreatedAt.Add(150*time.Millisecond)) {
			t.Errorf("outcome %+v outside the horizon", x)
		}
	}
}

func TestRetryHorizonRestartsOnReplay(t *testing.T) {
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		w.WriteHeader(http.StatusBadGateway)
	})
	st := store.NewMemory()
	obs := &outcomes{}
	o := baseOptions(st, p.URL, obs)
	o.FirstRetry, o.RetryFor = time.Hour, 2*time.Second
	d := run(t, o)

	// A note already past its horizon (e.g. after a long outage) still gets
	// one attempt, then is dead-lettered rather than retried.
	old := offline("s", "msg_old")
	old.CreatedAt = time.Now().Add(-time.Hour)
	commit(t, st, d, old)
	eventually(t, 2*time.Second, "old note dead", func() bool { return len(deadLetters(t, st)) == 1 })
	if n := deadLetters(t, st)[0]; n.Attempts != 1 || !strings.Contains(n.LastError, "retry horizon") {
		t.Errorf("old note %+v", n)
	}

	// Replay restarts the horizon at ReplayedAt: the failure is retried now.
	if _, err := d.Replay("msg_old"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "attempt after replay", func() bool { return len(obs.list()) == 2 })
	if x := obs.list()[1]; x.Result != Retry || x.Attempts != 1 {
		t.Errorf("after replay %+v, want a retry (attempts reset)", x)
	}
	if pend := pending(t, st); len(pend) != 1 || pend[0].ReplayedAt.IsZero() || len(deadLetters(t, st)) != 0 {
		t.Errorf("pending %+v", pend)
	}
}

func TestPerSessionOrderWithStuckSession(t *testing.T) {
	var unblock atomic.Bool
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		if strings.HasPrefix(got.ID(), "A") && !unblock.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	st := store.NewMemory()
	obs := &outcomes{}
	d := run(t, baseOptions(st, p.URL, obs))
	commit(t, st, d, offline("A", "A1"), offline("B", "B1"), online("A", "A2"), online("B", "B2"), offline("A", "A3"), offline("B", "B3"))
	eventually(t, 2*time.Second, "session B delivered", func() bool { return obs.count(Delivered) == 3 })
	eventually(t, 2*time.Second, "A1 retried", func() bool { return obs.count(Retry) >= 3 })

	sent := func(prefix string) []string {
		var ids []string
		for _, r := range p.requests() {
			if strings.HasPrefix(r.ID(), prefix) {
				ids = append(ids, r.ID())
			}
		}
		return ids
	}
	if got := sent("B"); !slices.Equal(got, []string{"B1", "B2", "B3"}) {
		t.Errorf("session B sent %v", got)
	}
	for _, id := range sent("A") {
		if id != "A1" {
			t.Fatalf("%s sent while A1 was still failing: %v", id, sent("A"))
		}
	}

	unblock.Store(true)
	eventually(t, 3*time.Second, "session A delivered", func() bool { return obs.count(Delivered) == 6 })
	var okA []string
	for _, x := range obs.list() {
		if x.Result == Delivered && x.SessionID == "A" {
			okA = append(okA, x.ID)
		}
	}
	if !slices.Equal(okA, []string{"A1", "A2", "A3"}) {
		t.Errorf("session A delivered in order %v", okA)
	}
}

func TestRestartDeliversPending(t *testing.T) {
	// First life: the platform is slow and failing; stop while an attempt is in flight.
	inHandler := make(chan struct{}, 10)
	p1 := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		inHandler <- struct{}{}
		time.Sleep(200 * time.Millisecond)
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	st := store.NewMemory()
	commit(t, st, nil, offline("s", "msg_restart"), online("s", "msg_restart2"))

	d1, err := New(baseOptions(st, p1.URL, nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- d1.Run(ctx) }()
	<-inHandler
	cancel()
	start := time.Now()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return")
	}
	// Run waited for the attempt in flight, and its outcome is in the store.
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Errorf("Run returned after %s, before the attempt in flight finished", waited)
	}
	pend := pending(t, st)
	if len(pend) != 2 || pend[0].Attempts != 1 || pend[0].LastStatus != 503 || pend[1].Attempts != 0 {
		t.Fatalf("pending after first life %+v", pend)
	}
	if p1.count() != 1 {
		t.Errorf("first life made %d attempts", p1.count())
	}

	// Second life: a new Deliverer on the same store sends both, same ids, in order.
	p2 := newPlatform(t, nil)
	obs := &outcomes{}
	run(t, baseOptions(st, p2.URL, obs))
	eventually(t, 2*time.Second, "delivery after restart", func() bool { return obs.count(Delivered) == 2 })
	reqs := p2.requests()
	if len(reqs) != 2 || reqs[0].ID() != "msg_restart" || reqs[1].ID() != "msg_restart2" {
		t.Errorf("after restart sent %v", reqs)
	}
	if x := obs.list()[0]; x.Attempts != 2 {
		t.Errorf("attempt count not carried over: %+v", x)
	}
}

// gatedStore counts outbox reads and can hold them.
type gatedStore struct {
	store.Store
	reads atomic.Int32
	gate  chan struct{}
}

func (g *gatedStore) Pending() ([]store.Notification, error) {
	g.reads.Add(1)
	if g.gate != nil {
		<-g.gate
	}
	return g.Store.Pending()
}

func TestWakeCoalesces(t *testing.T) {
	p := newPlatform(t, nil)
	mem := store.NewMemory()
	gs := &gatedStore{Store: mem, gate: make(chan struct{})}
	d := run(t, baseOptions(gs, p.URL, nil))
	eventually(t, time.Second, "first read", func() bool { return gs.reads.Load() == 1 })

	// While Run is busy reading, a thousand wakes from many goroutines neither
	// block nor queue up.
	commit(t, mem, nil, offline("s", "msg_w"))
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for range 100 {
				d.Wake()
			}
		})
	}
	wg.Wait()
	close(gs.gate)
	eventually(t, time.Second, "delivery", func() bool { return p.count() == 1 })
	time.Sleep(3 * wakeReadGap)
	if n := gs.reads.Load(); n > 2 {
		t.Errorf("%d outbox reads for 1000 wakes during one read, want at most 2", n)
	}
	// Wake never blocks, even with nobody running.
	d2, _ := New(baseOptions(mem, p.URL, nil))
	for range 100 {
		d2.Wake()
	}
}

func TestConcurrencyOrderAndLimit(t *testing.T) {
	const (
		sessions = 40
		perSess  = 5
		conc     = 4
	)
	var (
		cur, peak atomic.Int32
		mu        sync.Mutex
		busy      = map[string]bool{}
		ok        = map[string][]string{} // session -> delivered ids in arrival order
		violation atomic.Value
	)
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		c := cur.Add(1)
		defer cur.Add(-1)
		for {
			pk := peak.Load()
			if c <= pk || peak.CompareAndSwap(pk, c) {
				break
			}
		}
		var m map[string]any
		_ = json.Unmarshal(got.Body, &m)
		sess, _ := m["sessionId"].(string)
		mu.Lock()
		if busy[sess] {
			violation.Store("two requests of " + sess + " at once")
		}
		busy[sess] = true
		mu.Unlock()
		time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
		fail := rand.IntN(10) == 0
		mu.Lock()
		busy[sess] = false
		if !fail {
			ok[sess] = append(ok[sess], got.ID())
		}
		mu.Unlock()
		if fail {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	st := store.NewMemory()
	obs := &outcomes{}
	o := baseOptions(st, p.URL, obs)
	o.Concurrency, o.FirstRetry, o.RetryMaxDelay = conc, 5*time.Millisecond, 20*time.Millisecond
	d := run(t, o)

	// Several producers commit and wake at once; each session's notes are
	// committed in order by one producer.
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for k := range perSess {
				for s := g; s < sessions; s += 4 {
					sess := fmt.Sprintf("s%02d", s)
					commit(t, st, d, offline(sess, fmt.Sprintf("%s-%d", sess, k)))
					_ = d.Depth()
				}
			}
		})
	}
	wg.Wait()
	eventually(t, 10*time.Second, "all delivered", func() bool { return obs.count(Delivered) == sessions*perSess })
	if v := violation.Load(); v != nil {
		t.Error(v)
	}
	if pk := peak.Load(); pk > conc {
		t.Errorf("%d requests at once, Concurrency %d", pk, conc)
	}
	lost := map[string]bool{} // ids whose 2xx the deliverer did not see (timeout): a repeat is allowed
	for _, x := range obs.list() {
		if x.Result == Retry && x.Status == 0 {
			lost[x.ID] = true
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for s := range sessions {
		sess := fmt.Sprintf("s%02d", s)
		var want []string
		for k := range perSess {
			want = append(want, fmt.Sprintf("%s-%d", sess, k))
		}
		got := slices.CompactFunc(ok[sess], func(a, b string) bool { return a == b && lost[a] })
		if !slices.Equal(got, want) {
			t.Errorf("session %s delivered %v, want %v", sess, ok[sess], want)
			for _, x := range obs.list() {
				if x.SessionID == sess {
					t.Logf("%+v", x)
				}
			}
		}
	}
	if len(pending(t, st)) != 0 {
		t.Errorf("outbox not empty after delivering everything")
	}
	eventually(t, time.Second, "depth 0", func() bool { return d.Depth() == 0 })
}

func TestLogsOneLinePerOutcomeWithoutText(t *testing.T) {
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		if i == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "echo: O cliente voltou")
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	core, logs := observer.New(zapcore.DebugLevel)
	st := store.NewMemory()
	obs := &outcomes{}
	o := baseOptions(st, p.URL, obs)
	o.Log = zap.New(core)
	d := run(t, o)
	commit(t, st, d, online("sess-log", "msg_log"))
	eventually(t, 2*time.Second, "delivery", func() bool { return obs.count(Delivered) == 1 })

	entries := logs.All()
	if len(entries) != 2 {
		t.Fatalf("%d log lines, want one per outcome (2)", len(entries))
	}
	for i, e := range entries {
		m := e.ContextMap()
		for _, k := range []string{"session", "bot", "kind", "webhook_id", "attempt", "status", "latency", "outcome"} {
			if _, ok := m[k]; !ok {
				t.Errorf("line %d lacks %q: %v", i, k, m)
			}
		}
		if m["session"] != "sess-log" || m["webhook_id"] != "msg_log" || m["attempt"] != int64(i+1) {
			t.Errorf("line %d: %v", i, m)
		}
		if s := fmt.Sprint(e.Message, m); strings.Contains(s, "voltou") {
			t.Errorf("line %d logs message text: %s", i, s)
		}
	}
	if entries[0].Level != zapcore.WarnLevel || entries[1].Level != zapcore.InfoLevel {
		t.Errorf("levels %s %s", entries[0].Level, entries[1].Level)
	}
}

func TestNewValidation(t *testing.T) {
	st := store.NewMemory()
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Store: st}, "HANDOFF_URL"},
		{Options{Store: st, URL: "platform:8000"}, "HANDOFF_URL"},
		{Options{Store: st, URL: "ftp://platform"}, "HANDOFF_URL"},
		{Options{Store: st, URL: "http://p", SigningSecret: "s3cr3t-plain"}, "HANDOFF_SIGNING_SECRET"},
		{Options{Store: st, URL: "http://p", SigningSecret: "whsec_!!not-base64!!"}, "HANDOFF_SIGNING_SECRET"},
		{Options{Store: st, URL: "http://p", SigningSecret: "whsec_"}, "HANDOFF_SIGNING_SECRET"},
		{Options{Store: st, URL: "http://p", Timeout: -time.Second}, "HANDOFF_TIMEOUT"},
		{Options{Store: st, URL: "http://p", RetryFor: -time.Second}, "HANDOFF_RETRY_FOR"},
		{Options{Store: st, URL: "http://p", ExpirePath: "http://other/expire"}, "HANDOFF_EXPIRE_PATH"},
		{Options{URL: "http://p"}, "store"},
	} {
		_, err := New(c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error naming %s", c.o, err, c.want)
		}
		if v := strings.TrimPrefix(c.o.SigningSecret, "whsec_"); err != nil && v != "" && strings.Contains(err.Error(), v) {
			t.Errorf("error reveals the secret: %v", err)
		}
	}
	if _, err := New(Options{Store: st, URL: "https://p/api", SigningSecret: testSecret}); err != nil {
		t.Errorf("valid options: %v", err)
	}
}

func TestEndpoints(t *testing.T) {
	st := store.NewMemory()
	for _, c := range []struct {
		url, expire, message string
		wantOff, wantOn      string
	}{
		{"http://p:8000/api", "", "", "http://p:8000/api/expire?offline=true", "http://p:8000/api/message"},
		{"http://p:8000/api/", "/x/expire", "msg", "http://p:8000/api/x/expire?offline=true", "http://p:8000/api/msg"},
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

func TestRenderRejectsBadNotes(t *testing.T) {
	if _, _, err := Render(store.Notification{Kind: "client.bogus", SessionID: "s"}); err == nil {
		t.Error("unknown kind rendered")
	}
	if _, _, err := Render(store.Notification{Kind: store.KindOnline}); err == nil {
		t.Error("note without session rendered")
	}
	// An unrenderable note is dead-lettered at once rather than retried for a day.
	p := newPlatform(t, nil)
	st := store.NewMemory()
	d := run(t, baseOptions(st, p.URL, nil))
	commit(t, st, d, store.Notification{ID: "bad", Kind: "client.bogus", SessionID: "s", CreatedAt: time.Now()})
	eventually(t, time.Second, "dead letter", func() bool { return len(deadLetters(t, st)) == 1 })
	if p.count() != 0 {
		t.Error("unrenderable note was sent")
	}
}

func TestDepthAndRunOnce(t *testing.T) {
	st := store.NewMemory()
	commit(t, st, nil, offline("a", "1"), offline("b", "2"), online("a", "3"))
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	o := baseOptions(st, p.URL, nil)
	o.FirstRetry = time.Hour
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if d.Depth() != 3 {
		t.Errorf("Depth before Run = %d", d.Depth())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx) }()
	eventually(t, time.Second, "two heads attempted", func() bool { return p.count() == 2 })
	if d.Depth() != 3 {
		t.Errorf("Depth = %d, want 3", d.Depth())
	}
	if err := d.Run(ctx); err == nil {
		t.Error("a second concurrent Run was allowed")
	}
	time.Sleep(50 * time.Millisecond)
	if p.count() != 2 {
		t.Errorf("%d attempts: a later note was sent before its session's head, or a retry came early", p.count())
	}
	cancel()
	if err := <-errc; err != nil {
		t.Error(err)
	}
}

func TestDeadPlatformNoSpin(t *testing.T) {
	const sessions, conc = 300, 8
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	gs := &gatedStore{Store: store.NewMemory()}
	var notes []store.Notification
	for i := range sessions {
		notes = append(notes, offline(fmt.Sprint("s", i), fmt.Sprint("msg_", i)))
	}
	commit(t, gs, nil, notes...)
	baseGoroutines := runtime.NumGoroutine()
	o := baseOptions(gs, p.URL, nil)
	o.Concurrency, o.FirstRetry, o.RetryMaxDelay = conc, 50*time.Millisecond, 100*time.Millisecond
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx) }()
	start := time.Now()
	peakG := 0
	for time.Since(start) < 700*time.Millisecond {
		peakG = max(peakG, runtime.NumGoroutine())
		d.Wake() // a steady stream of commits elsewhere
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-errc; err != nil { // every attempt started has now reached the platform
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	reads := int(gs.reads.Load())
	reqs := p.requests()
	perSession := map[string]int{}
	for _, r := range reqs {
		perSession[r.ID()]++
	}
	most := 0
	for _, n := range perSession {
		most = max(most, n)
	}
	t.Logf("%s: %d requests, at most %d for one note, %d outbox reads, peak %d goroutines (base %d)",
		elapsed, len(reqs), most, reads, peakG, baseGoroutines)
	// Oldest waiting first: no note is retried while another was never tried.
	if want := min(sessions, len(reqs)); len(perSession) != want {
		t.Errorf("%d distinct notes in %d requests, want %d", len(perSession), len(reqs), want)
	}
	// Backoff floor: 40ms, then 80ms steps (FirstRetry 50ms, cap 100ms, -20% jitter).
	if limit := 2 + int(elapsed/(80*time.Millisecond)); most > limit {
		t.Errorf("a note was attempted %d times in %s, backoff allows %d", most, elapsed, limit)
	}
	if limit := 2 + int(elapsed/wakeReadGap); reads > limit {
		t.Errorf("%d outbox reads in %s, want at most %d", reads, elapsed, limit)
	}
	// Attempts run on at most Concurrency goroutines, plus the HTTP machinery
	// (client and server connection goroutines) for those attempts.
	if peakG > baseGoroutines+6*conc+10 {
		t.Errorf("peak %d goroutines, base %d, Concurrency %d", peakG, baseGoroutines, conc)
	}
}

// A return message never reaches the platform without its /expire: when the
// offline notification is dead-lettered, the same episode's return message
// follows it into the dead letters, and replaying both in order delivers both
// in order (SPEC invariant 3).
func TestReturnMessageFollowsItsDeadOfflineNote(t *testing.T) {
	var refuse atomic.Bool
	refuse.Store(true)
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		if refuse.Load() {
			w.WriteHeader(http.StatusUnprocessableEntity)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	st := store.NewMemory()
	obs := &outcomes{}
	d := run(t, baseOptions(st, p.URL, obs))
	commit(t, st, d, offline("s", "msg_off"), online("s", "msg_on"))
	eventually(t, 2*time.Second, "two dead letters", func() bool { return len(deadLetters(t, st)) == 2 })
	if p.count() != 1 {
		t.Fatalf("the return message was sent without its /expire: %d requests", p.count())
	}
	if dl := deadLetters(t, st)[1]; dl.ID != "msg_on" || !strings.Contains(dl.LastError, "msg_off") {
		t.Fatalf("return message dead letter: %+v", dl)
	}
	refuse.Store(false)
	for _, id := range []string{"msg_off", "msg_on"} {
		if _, err := d.Replay(id); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 2*time.Second, "both delivered", func() bool { return obs.count(Delivered) == 2 })
	reqs := p.requests()
	if len(reqs) != 3 || reqs[1].ID() != "msg_off" || reqs[2].ID() != "msg_on" {
		t.Fatalf("delivery order after replay: %d requests", len(reqs))
	}
}

// The return message of an episode whose /expire died is held back even when
// it is committed later (the client came back after the dead letter), and
// after a restart of the deliverer.
func TestReturnMessageCommittedAfterItsOfflineDied(t *testing.T) {
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		if r.URL.Path == "/expire" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	st := store.NewMemory()
	obs := &outcomes{}
	ctx, cancel := context.WithCancel(context.Background())
	d1, err := New(baseOptions(st, p.URL, obs))
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() { d1.Run(ctx); close(stopped) }()
	commit(t, st, d1, offline("s", "msg_off"))
	eventually(t, 2*time.Second, "dead offline", func() bool { return obs.count(Dead) == 1 })
	cancel()
	<-stopped
	// A new deliverer (a restart) on the same store; the client comes back.
	d2 := run(t, baseOptions(st, p.URL, obs))
	commit(t, st, d2, online("s", "msg_on"))
	eventually(t, 2*time.Second, "the return message dead-lettered", func() bool { return obs.count(Dead) == 2 })
	for _, r := range p.requests() {
		if r.Path == "/message" {
			t.Fatalf("return message %s sent although its /expire was dead-lettered", r.ID())
		}
	}
	if dl := deadLetters(t, st); len(dl) != 2 || dl[1].ID != "msg_on" || !strings.Contains(dl[1].LastError, "msg_off") {
		t.Fatalf("dead letters %+v", dl)
	}
}
