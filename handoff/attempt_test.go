package handoff

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
	"github.com/presence-sidecar/presence-sidecar/store"
)

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
	testutil.Eventually(t, 10*time.Second, "delivery after three 503s", func() bool { return obs.count(Delivered) == 1 })

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
	testutil.Eventually(t, 10*time.Second, "depth 0", func() bool { return d.Depth() == 0 })
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
	testutil.Eventually(t, 10*time.Second, "second attempt", func() bool { return p.count() == 2 })
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
	testutil.Eventually(t, 10*time.Second, "second attempt", func() bool { return p.count() == 2 })
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
	testutil.Eventually(t, 10*time.Second, "dead letter", func() bool { return obs.count(Dead) == 1 })
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
	testutil.Eventually(t, 10*time.Second, "delivery after replay", func() bool { return obs.count(Delivered) == 1 })
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

func TestRetriableStatusesRetried(t *testing.T) {
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
			testutil.Eventually(t, 10*time.Second, "delivery", func() bool { return obs.count(Delivered) == 1 })
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
}

func TestPermanentStatusesDeadLetteredAtOnce(t *testing.T) {
	for _, code := range []int{400, 401, 403, 404, 409, 410, 413, 422} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) { w.WriteHeader(code) })
			st := store.NewMemory()
			d := run(t, baseOptions(st, p.URL, nil))
			commit(t, st, d, online("s", "msg_x"))
			testutil.Eventually(t, 10*time.Second, "dead letter", func() bool { return len(deadLetters(t, st)) == 1 })
			if p.count() != 1 {
				t.Errorf("%d attempts, want 1", p.count())
			}
		})
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
	testutil.Eventually(t, 10*time.Second, "dead letter", func() bool { return obs.count(Dead) == 1 })
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
	testutil.Eventually(t, 10*time.Second, "old note dead", func() bool { return len(deadLetters(t, st)) == 1 })
	if n := deadLetters(t, st)[0]; n.Attempts != 1 || !strings.Contains(n.LastError, "retry horizon") {
		t.Errorf("old note %+v", n)
	}

	// Replay restarts the horizon at ReplayedAt: the failure is retried now.
	if _, err := d.Replay("msg_old"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "attempt after replay", func() bool { return len(obs.list()) == 2 })
	if x := obs.list()[1]; x.Result != Retry || x.Attempts != 1 {
		t.Errorf("after replay %+v, want a retry (attempts reset)", x)
	}
	if pend := pending(t, st); len(pend) != 1 || pend[0].ReplayedAt.IsZero() || len(deadLetters(t, st)) != 0 {
		t.Errorf("pending %+v", pend)
	}
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
	testutil.Eventually(t, 10*time.Second, "delivery", func() bool { return obs.count(Delivered) == 1 })

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

// An unrenderable note is dead-lettered at once rather than retried for a
// day, and never sent. (Which notes webhook.Render refuses: its own tests.)
func TestUnrenderableNoteDeadLetteredUnsent(t *testing.T) {
	if _, _, err := Render(store.Notification{Kind: "client.bogus", SessionID: "s"}); err == nil {
		t.Error("unknown kind rendered")
	}
	if _, _, err := Render(store.Notification{Kind: store.KindOnline}); err == nil {
		t.Error("note without session rendered")
	}
	p := newPlatform(t, nil)
	st := store.NewMemory()
	d := run(t, baseOptions(st, p.URL, nil))
	commit(t, st, d, store.Notification{ID: "bad", Kind: "client.bogus", SessionID: "s", CreatedAt: time.Now()})
	testutil.Eventually(t, 10*time.Second, "dead letter", func() bool { return len(deadLetters(t, st)) == 1 })
	if p.count() != 0 {
		t.Error("unrenderable note was sent")
	}
}
