package handoff

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/handoff/webhook"
	"github.com/presence-sidecar/presence-sidecar/store"
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

// The independent verifier agrees with the Standard Webhooks specification's
// example, so it can be trusted in the tests of what the deliverer sends.
func TestIndependentVerifierAgreesWithTheSpecification(t *testing.T) {
	const want = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	id, ts, body := "msg_p5jXN8AQM9LWM0D4loKWxJek", int64(1614265330), []byte(`{"test": 2432232314}`)
	key, err := webhook.DecodeSecret(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := webhook.Sign(key, id, ts, body); got != want {
		t.Fatalf("webhook.Sign = %s, want %s", got, want)
	}
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

// received is one request as the test platform got it.
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
