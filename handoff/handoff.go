// Package handoff delivers the outbox to the human-service platform: signed
// webhooks (Standard Webhooks), at least once, in order per session, with
// exponential backoff and a retry horizon. All delivery state lives in the
// store, so a new Deliverer after a restart resumes where the old one stopped.
package handoff

import (
	"bytes"
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
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/tracectx"
)

// Defaults, as documented in SPEC §5.
const (
	DefaultExpirePath    = "/expire"
	DefaultMessagePath   = "/message"
	DefaultTimeout       = 10 * time.Second
	DefaultRetryMaxDelay = 5 * time.Minute
	DefaultRetryFor      = 24 * time.Hour
	DefaultFirstRetry    = time.Second
	DefaultConcurrency   = 16
	DefaultUserAgent     = "presence-sidecar"
)

const (
	// pollInterval re-reads the outbox even without a Wake: a safety net for
	// notes committed by someone who did not wake us (another replica, a bug).
	pollInterval = 30 * time.Second
	// timerSlack treats heads due this soon as due now, so that retries
	// scheduled a few milliseconds apart share one timer firing.
	timerSlack = 5 * time.Millisecond
	// Between reads Run works from its own view of the outbox, which it keeps
	// up to date with its own outcomes; reading the whole outbox is what costs
	// (a file or Redis), so reads are spaced: after a Wake at least
	// wakeReadGap after the previous read, on a timer at least timerReadGap.
	// A burst of commits or a dead platform thus costs at most ~10 reads/s.
	wakeReadGap  = 100 * time.Millisecond
	timerReadGap = time.Second
	// excerptLen bounds the part of a platform's error body kept in LastError.
	excerptLen = 120
	// drainLimit is how much of a response body is read to reuse the connection.
	drainLimit = 64 << 10
	// jitter spreads retries uniformly within ±20% of the backoff.
	jitter = 0.2
)

// Options configure a Deliverer. Zero values take the defaults above.
type Options struct {
	URL           string           // HANDOFF_URL, the base, e.g. http://platform:8000/api (required)
	ExpirePath    string           // HANDOFF_EXPIRE_PATH; offline goes to URL+ExpirePath+"?offline=true"
	MessagePath   string           // HANDOFF_MESSAGE_PATH; online goes to URL+MessagePath
	Token         string           // HANDOFF_TOKEN, sent as Authorization: Bearer when set
	SigningSecret string           // HANDOFF_SIGNING_SECRET, "whsec_<base64>"; empty: no signature
	Timeout       time.Duration    // HANDOFF_TIMEOUT, per attempt
	RetryMaxDelay time.Duration    // HANDOFF_RETRY_MAX_DELAY, cap of one backoff step
	RetryFor      time.Duration    // HANDOFF_RETRY_FOR, from max(CreatedAt, ReplayedAt)
	FirstRetry    time.Duration    // first backoff step (tests shorten it)
	Concurrency   int              // sessions delivered in parallel
	UserAgent     string           // default "presence-sidecar"; cmd may append a version
	Store         store.Store      // required
	Client        *http.Client     // nil: an own client bounded by Timeout, not following redirects
	Log           *zap.Logger      // nil: no logs
	Now           func() time.Time // nil: time.Now; stamps DeliveredAt, DeadAt, NextAttemptAt, webhook-timestamp
	// Observe, when set, is called once per attempt outcome, after the store
	// was updated, from the delivering goroutine (concurrently: keep it fast
	// and safe for concurrent use).
	Observe func(Outcome)
	// Tracer records a client span per attempt, a child of the
	// notification's TraceParent (the transition that caused it); the
	// webhook's traceparent is that span. nil: no spans, and the webhook
	// carries the notification's TraceParent as it is.
	Tracer trace.TracerProvider
}

// Result is what became of one delivery attempt.
type Result string

const (
	Delivered Result = "delivered" // 2xx: removed from the outbox
	Retry     Result = "retry"     // will be attempted again at NextAttemptAt
	Dead      Result = "dead"      // dead-lettered: permanent 4xx, or retry horizon reached
)

// Outcome describes one attempt, for metrics and the status page.
type Outcome struct {
	ID            string // webhook-id
	SessionID     string
	BotID         string
	Kind          store.Kind
	Result        Result
	Status        int           // HTTP status; 0 when there was no response
	Error         string        // short reason, without the platform's body; empty when delivered
	Latency       time.Duration // of the HTTP exchange
	Attempts      int           // including this one
	NextAttemptAt time.Time     // set when Result is Retry
	Delay         time.Duration // the wait chosen before NextAttemptAt (backoff or Retry-After), when Result is Retry
}

// Deliverer sends the outbox. Create it with New and run it with Run.
type Deliverer struct {
	o          Options
	key        []byte // decoded signing key; nil: unsigned
	expireURL  string
	messageURL string
	client     *http.Client
	ownClient  bool
	log        *zap.Logger
	now        func() time.Time
	tracer     trace.Tracer

	wake    chan struct{}
	running atomic.Bool

	// deadOffline: offline notifications that were dead-lettered, by
	// session and episode (value: the webhook id). A return message of such
	// an episode is dead-lettered too, never sent (SPEC invariant 3).
	deadMu      sync.Mutex
	deadOffline map[string]string
	depth       atomic.Int64 // outbox depth as last known by Run; -1 before the first read
}

// New validates o and returns a Deliverer. Errors name the environment variable.
func New(o Options) (*Deliverer, error) {
	if o.Store == nil {
		return nil, errors.New("handoff: no store")
	}
	base, err := url.Parse(o.URL)
	if o.URL == "" || err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		shown := o.URL
		if err == nil {
			shown = base.Redacted() // no password from user:pass@ in logs
		}
		return nil, fmt.Errorf("HANDOFF_URL=%q: must be an absolute http:// or https:// URL", shown)
	}
	if o.ExpirePath == "" {
		o.ExpirePath = DefaultExpirePath
	}
	if o.MessagePath == "" {
		o.MessagePath = DefaultMessagePath
	}
	d := &Deliverer{wake: make(chan struct{}, 1)}
	if d.expireURL, err = join(base, o.ExpirePath, "offline=true"); err != nil {
		return nil, fmt.Errorf("HANDOFF_EXPIRE_PATH=%q: %v", o.ExpirePath, err)
	}
	if d.messageURL, err = join(base, o.MessagePath, ""); err != nil {
		return nil, fmt.Errorf("HANDOFF_MESSAGE_PATH=%q: %v", o.MessagePath, err)
	}
	if o.SigningSecret != "" {
		if d.key, err = DecodeSecret(o.SigningSecret); err != nil {
			// The value is a secret: name the variable, never echo it.
			return nil, fmt.Errorf("HANDOFF_SIGNING_SECRET: %v (value not shown)", err)
		}
	}
	for _, c := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"HANDOFF_TIMEOUT", &o.Timeout, DefaultTimeout},
		{"HANDOFF_RETRY_MAX_DELAY", &o.RetryMaxDelay, DefaultRetryMaxDelay},
		{"HANDOFF_RETRY_FOR", &o.RetryFor, DefaultRetryFor},
		{"first retry delay", &o.FirstRetry, DefaultFirstRetry},
	} {
		if *c.v < 0 {
			return nil, fmt.Errorf("%s=%s: must be a positive duration", c.name, *c.v)
		}
		if *c.v == 0 {
			*c.v = c.def
		}
	}
	if o.Concurrency < 0 {
		return nil, fmt.Errorf("handoff concurrency %d: must be positive", o.Concurrency)
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.UserAgent == "" {
		o.UserAgent = DefaultUserAgent
	}
	d.log = o.Log
	if d.log == nil {
		d.log = zap.NewNop()
	}
	d.now = o.Now
	if d.now == nil {
		d.now = time.Now
	}
	tp := o.Tracer
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	d.tracer = tp.Tracer("github.com/presence-sidecar/presence-sidecar/handoff")
	d.client = o.Client
	if d.client == nil {
		d.client, d.ownClient = newClient(o.Timeout, o.Concurrency), true
	}
	d.o = o
	d.depth.Store(-1)
	return d, nil
}

func newClient(timeout time.Duration, conc int) *http.Client {
	tr, ok := http.DefaultTransport.(*http.Transport)
	if ok {
		tr = tr.Clone()
	} else { // DefaultTransport was replaced (instrumentation): start from a plain one
		tr = &http.Transport{Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true,
			MaxIdleConns: 100, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second}
	}
	tr.DialContext = (&net.Dialer{Timeout: min(timeout, 30*time.Second), KeepAlive: 30 * time.Second}).DialContext
	tr.MaxIdleConnsPerHost = conc
	tr.ResponseHeaderTimeout = timeout
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		// A redirected webhook would lose or re-send its signed body somewhere
		// unconfigured; treat 3xx as a failed attempt the operator can see.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// join appends p (which may carry its own query) to base, merging queries.
func join(base *url.URL, p, extra string) (string, error) {
	pp, err := url.Parse(p)
	if err != nil || pp.Scheme != "" || pp.Host != "" {
		return "", errors.New("must be a path such as /expire")
	}
	u := *base
	u.Path = strings.TrimSuffix(base.Path, "/") + "/" + strings.TrimPrefix(pp.Path, "/")
	u.RawPath, u.Fragment, u.RawFragment = "", "", ""
	if base.RawQuery == "" && pp.RawQuery == "" {
		u.RawQuery = extra // keep the binding form "?offline=true" byte for byte
	} else {
		q := base.Query()
		for k, vs := range pp.Query() {
			q[k] = append(q[k], vs...)
		}
		if extra != "" {
			ev, _ := url.ParseQuery(extra)
			for k, vs := range ev {
				q[k] = append(q[k], vs...)
			}
		}
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}

// DecodeSecret reads a Standard Webhooks secret, "whsec_" and the base64 key.
func DecodeSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return nil, errors.New(`must start with "whsec_" followed by the base64 key`)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, errors.New(`the part after "whsec_" is not valid standard base64`)
	}
	if len(key) == 0 {
		return nil, errors.New(`the key after "whsec_" is empty`)
	}
	return key, nil
}

// Sign returns the Standard Webhooks signature "v1,<base64 HMAC-SHA256(secret, id.ts.body)>".
// secret is the decoded key (the base64 after "whsec_").
func Sign(secret []byte, id string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write(strconv.AppendInt(nil, ts, 10))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Wire bodies. Field order is fixed by the struct; times are RFC 3339 in UTC.
type offlineBody struct {
	Event      store.Kind `json:"event"`
	SessionID  string     `json:"sessionId"`
	BotID      string     `json:"botId"`
	Offline    bool       `json:"offline"`
	Reason     string     `json:"reason"`
	LastSeenAt string     `json:"lastSeenAt,omitempty"`
	DetectedAt string     `json:"detectedAt"`
}

type onlineBody struct {
	Event        store.Kind `json:"event"`
	SessionID    string     `json:"sessionId"`
	BotID        string     `json:"botId"`
	Text         string     `json:"text"`
	OfflineSince string     `json:"offlineSince,omitempty"`
	DetectedAt   string     `json:"detectedAt"`
}

// rfc3339 formats t in UTC with second precision: the most widely parsed form.
// A zero time gives "", which the bodies omit rather than send year 1.
func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// Render returns the request path and query (with the default paths,
// "/expire?offline=true" or "/message") and the JSON body for n.
// (*Deliverer).Endpoint gives the full URL with the configured paths.
func Render(n store.Notification) (path string, body []byte, err error) {
	body, err = renderBody(n)
	if err != nil {
		return "", nil, err
	}
	if n.Kind == store.KindOffline {
		return DefaultExpirePath + "?offline=true", body, nil
	}
	return DefaultMessagePath, body, nil
}

func renderBody(n store.Notification) ([]byte, error) {
	if n.SessionID == "" {
		return nil, errors.New("notification has no session id")
	}
	switch n.Kind {
	case store.KindOffline:
		return json.Marshal(offlineBody{
			Event: n.Kind, SessionID: n.SessionID, BotID: n.BotID, Offline: true, Reason: n.Reason,
			LastSeenAt: rfc3339(n.LastSeenAt), DetectedAt: rfc3339(n.DetectedAt),
		})
	case store.KindOnline:
		return json.Marshal(onlineBody{
			Event: n.Kind, SessionID: n.SessionID, BotID: n.BotID, Text: n.Text,
			OfflineSince: rfc3339(n.OfflineSince), DetectedAt: rfc3339(n.DetectedAt),
		})
	}
	return nil, fmt.Errorf("unknown notification kind %q", n.Kind)
}

// Endpoint is the full URL n is posted to, with the configured base and paths.
func (d *Deliverer) Endpoint(n store.Notification) string {
	if n.Kind == store.KindOffline {
		return d.expireURL
	}
	return d.messageURL
}

// Wake tells Run that new notifications were committed. It never blocks, and
// wakes that arrive before Run looks collapse into one outbox read.
func (d *Deliverer) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Replay moves a dead letter back into the outbox (same webhook-id, fresh
// attempts and retry horizon) and wakes Run.
func (d *Deliverer) Replay(id string) (store.Notification, error) {
	n, err := d.o.Store.Replay(id)
	if err != nil {
		return n, err
	}
	if n.Kind == store.KindOffline {
		d.deadMu.Lock()
		delete(d.deadOffline, episodeKey(n))
		d.deadMu.Unlock()
	}
	d.Wake()
	return n, nil
}

func episodeKey(n store.Notification) string {
	return n.SessionID + "\x00" + strconv.FormatUint(n.Episode, 10)
}

// noteDead remembers a dead-lettered offline notification.
func (d *Deliverer) noteDead(n store.Notification) {
	if n.Kind != store.KindOffline {
		return
	}
	d.deadMu.Lock()
	if d.deadOffline == nil {
		d.deadOffline = make(map[string]string)
	}
	d.deadOffline[episodeKey(n)] = n.ID
	d.deadMu.Unlock()
}

// offlineDead reports whether n is a return message whose episode's offline
// notification is in the dead letters.
func (d *Deliverer) offlineDead(n store.Notification) (string, bool) {
	if n.Kind != store.KindOnline {
		return "", false
	}
	d.deadMu.Lock()
	defer d.deadMu.Unlock()
	id, ok := d.deadOffline[episodeKey(n)]
	return id, ok
}

// loadDeadOffline reads the dead letters once at start, so a return message
// whose /expire died before a restart is held back too.
func (d *Deliverer) loadDeadOffline() error {
	dead, err := d.o.Store.DeadLetters()
	if err != nil {
		return err
	}
	d.deadMu.Lock()
	defer d.deadMu.Unlock()
	d.deadOffline = make(map[string]string)
	for _, n := range dead {
		if n.Kind == store.KindOffline {
			d.deadOffline[episodeKey(n)] = n.ID
		}
	}
	return nil
}

// Depth is the outbox depth as Run last saw it (read from the store before
// Run's first look).
func (d *Deliverer) Depth() int {
	if v := d.depth.Load(); v >= 0 {
		return int(v)
	}
	p, err := d.o.Store.Pending()
	if err != nil {
		return 0
	}
	return len(p)
}

// done reports a finished attempt to Run.
type done struct {
	n        store.Notification // as written to the store
	final    bool               // removed from the outbox (delivered or dead)
	storeErr bool               // the store write failed: the store and our view disagree
	hold     time.Time          // with storeErr: do not retry n before this
}

// Run delivers the outbox until ctx ends, then waits for attempts in flight
// (each bounded by Timeout, so their outcome is recorded) and returns nil.
//
// Only Run's goroutine decides what to send; attempts report back to it, and a
// session stays "in flight" until its attempt's store write has completed, so
// a stale read can never resend what was just delivered.
func (d *Deliverer) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("handoff: Run is already running")
	}
	defer d.running.Store(false)
	if err := d.loadDeadOffline(); err != nil {
		// Degraded, not stopped: only a return message whose /expire died
		// before this start could then slip through.
		d.log.Error("handoff: reading the dead letters failed", zap.Error(err))
	}
	if d.ownClient {
		defer d.client.CloseIdleConnections()
	}

	var (
		wg       sync.WaitGroup
		results  = make(chan done, d.o.Concurrency) // never blocks: at most Concurrency attempts
		inflight = map[string]struct{}{}            // session ids with an attempt running
		hold     = map[string]time.Time{}           // notification id -> not before (after a failed store write)
		seen     = map[string]struct{}{}            // scratch for dispatch
		cache    []store.Notification               // the outbox as last read, updated by our own outcomes
		reload   = true                             // the store must be read again (start, Wake, timer, failed write)
		lastRead time.Time                          // when the last read finished (monotonic)
		storeBO  time.Duration                      // backoff between failing store reads
		timer    = time.NewTimer(time.Hour)
	)
	defer timer.Stop()

	for {
		var next time.Time
		if wait := wakeReadGap - time.Since(lastRead); reload && wait > 0 {
			next = d.now().Add(wait) // read when the gap has passed; until then use the view
		} else if reload {
			// This read covers every Wake so far: drop a pending one, so that
			// wakes arriving before the read cost no second read.
			select {
			case <-d.wake:
			default:
			}
			p, err := d.o.Store.Pending()
			lastRead = time.Now()
			if err != nil {
				storeBO = min(max(2*storeBO, d.o.FirstRetry), min(d.o.RetryMaxDelay, 30*time.Second))
				next = d.now().Add(max(storeBO, wakeReadGap))
				d.log.Error("handoff: reading the outbox failed", zap.Error(err), zap.Duration("retry_in", storeBO))
			} else {
				cache, reload, storeBO = p, false, 0
				d.depth.Store(int64(len(cache)))
				pruneHold(hold, cache, d.now())
			}
		}
		if ctx.Err() == nil {
			if due := d.dispatch(cache, inflight, hold, seen, results, &wg); !due.IsZero() && (next.IsZero() || due.Before(next)) {
				next = due
			}
		}
		if poll := d.now().Add(pollInterval); next.IsZero() || poll.Before(next) {
			next = poll
		}
		timer.Reset(max(0, next.Sub(d.now())))

		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case r := <-results:
			cache, reload = d.apply(r, cache, inflight, hold, reload)
			// Take every result already waiting, so a burst of completions
			// costs one pass over the outbox, not one each.
			for drained := false; !drained; {
				select {
				case r := <-results:
					cache, reload = d.apply(r, cache, inflight, hold, reload)
				default:
					drained = true
				}
			}
			d.depth.Store(int64(len(cache)))
		case <-d.wake:
			reload = true
		case <-timer.C:
			// Due retries are in the view; re-read too unless we just did.
			if time.Since(lastRead) >= timerReadGap {
				reload = true
			}
		}
	}
}

func pruneHold(hold map[string]time.Time, pending []store.Notification, now time.Time) {
	if len(hold) == 0 {
		return
	}
	live := make(map[string]struct{}, len(hold))
	for _, n := range pending {
		if _, ok := hold[n.ID]; ok {
			live[n.ID] = struct{}{}
		}
	}
	for id, t := range hold {
		if _, ok := live[id]; !ok || !t.After(now) {
			delete(hold, id)
		}
	}
}

// apply folds one attempt's outcome into Run's view of the outbox.
func (d *Deliverer) apply(r done, cache []store.Notification, inflight map[string]struct{}, hold map[string]time.Time, reload bool) ([]store.Notification, bool) {
	delete(inflight, r.n.SessionID)
	if r.storeErr {
		hold[r.n.ID] = r.hold
		return cache, true
	}
	for i := range cache {
		if cache[i].ID == r.n.ID {
			if !r.final {
				cache[i] = r.n
				return cache, reload
			}
			return append(cache[:i], cache[i+1:]...), reload
		}
	}
	return cache, reload
}

// dispatch starts an attempt for each session whose head (lowest Seq) is due
// and not in flight, up to Concurrency, and returns when the earliest head
// not yet due will be (zero: none). Later notes of a session wait for its head.
// When more heads are due than slots are free, those waiting longest go
// first, so that notes retrying early in the outbox cannot starve later ones.
func (d *Deliverer) dispatch(cache []store.Notification, inflight map[string]struct{}, hold map[string]time.Time, seen map[string]struct{}, results chan<- done, wg *sync.WaitGroup) time.Time {
	clear(seen)
	now := d.now()
	free := d.o.Concurrency - len(inflight)
	var next time.Time
	var ready []store.Notification
	for _, n := range cache {
		if _, ok := seen[n.SessionID]; ok {
			continue
		}
		seen[n.SessionID] = struct{}{}
		if _, busy := inflight[n.SessionID]; busy {
			continue
		}
		due := n.NextAttemptAt
		if h, ok := hold[n.ID]; ok && h.After(due) {
			due = h
		}
		if due.After(now.Add(timerSlack)) {
			if next.IsZero() || due.Before(next) {
				next = due
			}
			continue
		}
		if free > 0 { // else a finishing attempt wakes Run, which looks again then
			ready = append(ready, n)
		}
	}
	if len(ready) > free {
		slices.SortStableFunc(ready, func(a, b store.Notification) int { return waitingSince(a).Compare(waitingSince(b)) })
		ready = ready[:free]
	}
	for _, n := range ready {
		inflight[n.SessionID] = struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- d.deliver(n)
		}()
	}
	return next
}

// waitingSince is when n became due: its retry time, or its creation.
func waitingSince(n store.Notification) time.Time {
	if !n.NextAttemptAt.IsZero() {
		return n.NextAttemptAt
	}
	return horizonStart(n)
}

// attempt is what one HTTP exchange gave.
type attempt struct {
	status     int
	reason     string // short, safe to log: never the platform's body
	excerpt    string // short excerpt of the platform's error body, stored only
	retryAfter time.Duration
	latency    time.Duration
	result     Result // Delivered, Retry or Dead (before the horizon check)
}

// deliver makes one attempt for n and records its outcome in the store.
func (d *Deliverer) deliver(n store.Notification) done {
	ctx, span := tracectx.Start(tracectx.WithRemote(context.Background(), n.TraceParent), d.tracer,
		"handoff.deliver", trace.WithSpanKind(trace.SpanKindClient))
	defer span.End()
	var a attempt
	if offID, dead := d.offlineDead(n); dead {
		a = attempt{result: Dead, reason: "its client.offline " + offID + " was dead-lettered; replay that one first, then this one"}
	} else {
		a = d.post(ctx, n)
	}
	n.Attempts++
	now := d.now()
	lastErr := a.reason
	if a.excerpt != "" {
		lastErr += ": " + a.excerpt
	}
	res := a.result
	var delay time.Duration
	var err error
	switch res {
	case Delivered:
		n.DeliveredAt, n.LastStatus, n.LastError, n.NextAttemptAt = now, a.status, "", time.Time{}
	case Retry:
		delay = d.backoff(n.Attempts)
		if a.retryAfter > delay {
			delay = min(a.retryAfter, d.o.RetryMaxDelay)
		}
		n.NextAttemptAt, n.LastStatus, n.LastError = now.Add(delay), a.status, lastErr
		if start := horizonStart(n); !start.IsZero() && n.NextAttemptAt.After(start.Add(d.o.RetryFor)) {
			res = Dead
			gaveUp := fmt.Sprintf("retry horizon %s reached after %d attempts; last: ", d.o.RetryFor, n.Attempts)
			a.reason, n.LastError = gaveUp+a.reason, gaveUp+lastErr
		}
	case Dead:
		n.LastStatus, n.LastError = a.status, lastErr
	}
	switch res {
	case Delivered:
		err = d.o.Store.Delivered(n)
	case Retry:
		err = d.o.Store.Attempted(n)
	case Dead:
		n.DeadAt, n.NextAttemptAt = now, time.Time{}
		err = d.o.Store.DeadLetter(n)
		d.noteDead(n)
	}

	d.endSpan(span, n, a, res)
	fields := []zap.Field{
		zap.String("session", n.SessionID), zap.String("bot", n.BotID), zap.String("kind", string(n.Kind)),
		zap.String("webhook_id", n.ID), zap.Int("attempt", n.Attempts), zap.Int("status", a.status),
		zap.Duration("latency", a.latency), zap.String("outcome", string(res)),
		zap.String("trace_id", trace.SpanContextFromContext(ctx).TraceID().String()),
	}
	switch res {
	case Delivered:
		d.log.Info("handoff: notification delivered", fields...)
	case Retry:
		d.log.Warn("handoff: delivery failed, will retry", append(fields, zap.String("error", a.reason),
			zap.Time("next_attempt_at", n.NextAttemptAt))...)
	case Dead:
		d.log.Error("handoff: notification dead-lettered", append(fields, zap.String("error", a.reason))...)
	}

	out := done{n: n, final: res != Retry}
	if err != nil {
		// Our view and the store now disagree; Run re-reads the outbox, and
		// the hold keeps a failing store from turning into a resend loop.
		out.storeErr, out.hold = true, now.Add(d.backoff(max(n.Attempts, 1)))
		d.log.Error("handoff: recording the delivery outcome failed", zap.String("webhook_id", n.ID),
			zap.String("outcome", string(res)), zap.Error(err))
	}
	if d.o.Observe != nil {
		o := Outcome{ID: n.ID, SessionID: n.SessionID, BotID: n.BotID, Kind: n.Kind, Result: res,
			Status: a.status, Latency: a.latency, Attempts: n.Attempts}
		if res != Delivered {
			o.Error = a.reason
		}
		if res == Retry {
			o.NextAttemptAt, o.Delay = n.NextAttemptAt, delay
		}
		d.o.Observe(o)
	}
	return out
}

// endSpan records an attempt's outcome on its span.
func (d *Deliverer) endSpan(span trace.Span, n store.Notification, a attempt, res Result) {
	if !span.IsRecording() {
		return
	}
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodPost, semconv.SessionID(n.SessionID), tracectx.AttrBotID.String(n.BotID),
		tracectx.AttrWebhookID.String(n.ID), tracectx.AttrKind.String(string(n.Kind)), tracectx.AttrAttempt.Int(n.Attempts), tracectx.AttrOutcome.String(string(res)),
	}
	// Host and path only: the configured URL may carry credentials.
	if u, err := url.Parse(d.Endpoint(n)); err == nil {
		attrs = append(attrs, semconv.ServerAddress(u.Hostname()), semconv.URLPath(u.Path))
		if p, err := strconv.Atoi(u.Port()); err == nil {
			attrs = append(attrs, semconv.ServerPort(p))
		}
	}
	if a.status != 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(a.status))
	}
	span.SetAttributes(attrs...)
	if res != Delivered {
		span.SetStatus(codes.Error, a.reason)
	}
}

func horizonStart(n store.Notification) time.Time {
	s := n.CreatedAt
	if n.ReplayedAt.After(s) {
		s = n.ReplayedAt
	}
	if s.IsZero() {
		s = n.DetectedAt
	}
	return s
}

// post sends n once; ctx carries the attempt's span.
func (d *Deliverer) post(ctx context.Context, n store.Notification) attempt {
	body, err := renderBody(n)
	if err != nil {
		// Retrying cannot fix a note we cannot render: make it visible at once.
		return attempt{result: Dead, reason: "cannot render: " + err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.Endpoint(n), bytes.NewReader(body))
	if err != nil {
		return attempt{result: Dead, reason: "cannot build request: " + err.Error()}
	}
	ts := d.now().Unix()
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", d.o.UserAgent)
	if d.o.Token != "" {
		h.Set("Authorization", "Bearer "+d.o.Token)
	}
	// Canonical keys (Webhook-Id…): header names are case-insensitive, and a
	// transport that sets the same header (tracing) must replace, not duplicate it.
	h.Set("webhook-id", n.ID)
	h.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	if d.key != nil {
		h.Set("webhook-signature", Sign(d.key, n.ID, ts, body))
	}
	// The attempt's span: a child of the transition that caused n (its
	// TraceParent as it is when no tracer records).
	tracectx.Propagator.Inject(ctx, propagation.HeaderCarrier(h))

	start := time.Now()
	resp, err := d.client.Do(req)
	if err != nil {
		return attempt{result: Retry, reason: transportReason(err, d.o.Timeout), latency: time.Since(start)}
	}
	defer resp.Body.Close()
	a := attempt{status: resp.StatusCode, latency: time.Since(start)}
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		a.result = Delivered
	case code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests:
		a.result, a.reason = Dead, "HTTP "+strconv.Itoa(code)
	default:
		a.result, a.reason = Retry, "HTTP "+strconv.Itoa(code)
		if code >= 300 && code < 400 {
			a.reason += " (redirects are not followed)"
		}
		if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
			a.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), d.now())
		}
	}
	if a.result != Delivered {
		buf := make([]byte, excerptLen*2)
		k, _ := io.ReadFull(resp.Body, buf)
		a.excerpt = truncate(cleanText(buf[:k]), excerptLen)
	}
	// Drain a bounded amount so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainLimit))
	return a
}

// transportReason is a short, secret-free reason for a failed exchange: the
// url.Error wrapper is dropped because the URL may carry credentials.
func transportReason(err error, timeout time.Duration) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Sprintf("timeout after %s", timeout)
		}
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf("timeout after %s", timeout)
	}
	return truncate(err.Error(), 2*excerptLen)
}

// backoff is the delay after the attempts-th failed attempt: FirstRetry
// doubling each time, ±20% jitter, never above RetryMaxDelay.
func (d *Deliverer) backoff(attempts int) time.Duration {
	b := d.o.FirstRetry
	for i := 1; i < attempts && b < d.o.RetryMaxDelay; i++ {
		b *= 2
	}
	b = min(b, d.o.RetryMaxDelay)
	j := time.Duration(float64(b) * jitter * (2*rand.Float64() - 1))
	return min(b+j, d.o.RetryMaxDelay)
}

// parseRetryAfter reads Retry-After as delay-seconds or an HTTP date; 0 if absent or invalid.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, int64(365*24*3600))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// cleanText makes a body excerpt printable on one line.
func cleanText(b []byte) string {
	s := strings.ToValidUTF8(string(b), "")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
