// Package handoff delivers the outbox to the human-service platform: signed
// webhooks (Standard Webhooks, package handoff/webhook), at least once, in
// order per session, with exponential backoff and a retry horizon. All
// delivery state lives in the store, so a new Deliverer after a restart
// resumes where the old one stopped (docs/ARCHITECTURE.md, "Delivery").
//
// The files follow the jobs: deliverer.go builds a Deliverer and is its
// public face; schedule.go is Run, which decides what to send when; view.go
// is Run's view of the outbox, per session, so that a delivery costs the same
// however deep the outbox is; attempt.go is one attempt and what it records;
// http.go is the HTTP side (client, URLs, the request, error texts);
// dead_episodes.go remembers the episodes whose /expire was dead-lettered.
package handoff

import (
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/handoff/webhook"
	"github.com/presence-sidecar/presence-sidecar/store"
)

// Defaults of the zero Options fields. They are the one definition: the
// config layer takes its defaults from them (docs/ARCHITECTURE.md,
// "Packages and seams").
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

// Options configure a Deliverer. Zero values take the defaults above.
type Options struct {
	URL           string           // the platform's base, e.g. http://platform:8000/api (required; see ParseBaseURL)
	ExpirePath    string           // under URL; offline goes to URL+ExpirePath+"?offline=true"
	MessagePath   string           // under URL; online goes to URL+MessagePath
	Token         string           // sent as Authorization: Bearer when set
	SigningSecret string           // "whsec_<base64>" (see webhook.DecodeSecret); empty: no signature
	Timeout       time.Duration    // per attempt
	RetryMaxDelay time.Duration    // cap of one backoff step
	RetryFor      time.Duration    // retry horizon, from max(CreatedAt, ReplayedAt)
	FirstRetry    time.Duration    // first backoff step (tests shorten it)
	Concurrency   int              // sessions delivered in parallel
	UserAgent     string           // default "presence-sidecar"; cmd may append a version
	Store         store.Store      // required
	Client        *http.Client     // nil: an own client bounded by Timeout, not following redirects
	Log           *zap.Logger      // nil: no logs
	Now           func() time.Time // nil: time.Now; stamps DeliveredAt, DeadAt, NextAttemptAt, webhook-timestamp
	// Observe, when set, is called once per attempt with its Outcome, after
	// the store was updated, from the attempt's goroutine (concurrently: keep
	// it fast and safe for concurrent use).
	Observe func(Outcome)
	// Tracer records a client span per attempt, a child of the
	// notification's TraceParent (the transition that caused it); the
	// webhook's traceparent is that span. nil: no spans, and the webhook
	// carries the notification's TraceParent as it is.
	Tracer trace.TracerProvider
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

	dead  deadEpisodes // episodes whose offline notification was dead-lettered
	depth atomic.Int64 // outbox depth as last known by Run; -1 before the first read
}

// New validates o and returns a Deliverer. An error names the Options field
// ("handoff: URL: …") and never shows the signing secret or a URL's password.
func New(o Options) (*Deliverer, error) {
	if o.Store == nil {
		return nil, errors.New("handoff: no store")
	}
	return newDeliverer(o)
}

// newDeliverer is New without a store: cluster mode's deliverer keeps its
// outbox in Redis (NewCluster) and uses the rest as it is.
func newDeliverer(o Options) (*Deliverer, error) {
	base, err := ParseBaseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("handoff: URL: %w", err)
	}
	if o.ExpirePath == "" {
		o.ExpirePath = DefaultExpirePath
	}
	if o.MessagePath == "" {
		o.MessagePath = DefaultMessagePath
	}
	d := &Deliverer{wake: make(chan struct{}, 1)}
	if d.expireURL, err = join(base, o.ExpirePath, offlineQuery); err != nil {
		return nil, fmt.Errorf("handoff: ExpirePath: %w", err)
	}
	if d.messageURL, err = join(base, o.MessagePath, ""); err != nil {
		return nil, fmt.Errorf("handoff: MessagePath: %w", err)
	}
	if o.SigningSecret != "" {
		if d.key, err = webhook.DecodeSecret(o.SigningSecret); err != nil {
			// The value is a secret: name the field, never echo it.
			return nil, fmt.Errorf("handoff: SigningSecret (value not shown): %w", err)
		}
	}
	for _, c := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"Timeout", &o.Timeout, DefaultTimeout},
		{"RetryMaxDelay", &o.RetryMaxDelay, DefaultRetryMaxDelay},
		{"RetryFor", &o.RetryFor, DefaultRetryFor},
		{"FirstRetry", &o.FirstRetry, DefaultFirstRetry},
	} {
		if *c.v < 0 {
			return nil, fmt.Errorf("handoff: %s: %s: want a positive duration (0 takes the default)", c.name, *c.v)
		}
		if *c.v == 0 {
			*c.v = c.def
		}
	}
	if o.Concurrency < 0 {
		return nil, fmt.Errorf("handoff: Concurrency: %d: want a positive number (0 takes the default)", o.Concurrency)
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

// Endpoint is the full URL n is posted to, with the configured base and paths.
func (d *Deliverer) Endpoint(n store.Notification) string {
	if n.Kind == store.KindOffline {
		return d.expireURL
	}
	return d.messageURL
}

// Render returns the request target under the default paths
// ("/expire?offline=true" or "/message") and the body (webhook.Render) for n.
// Endpoint gives the full URL with the configured base and paths.
func Render(n store.Notification) (path string, body []byte, err error) {
	body, err = webhook.Render(n)
	if err != nil {
		return "", nil, err
	}
	if n.Kind == store.KindOffline {
		return DefaultExpirePath + "?" + offlineQuery, body, nil
	}
	return DefaultMessagePath, body, nil
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
	d.dead.forget(n)
	d.Wake()
	return n, nil
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

// Pending lists up to limit notifications waiting for delivery, oldest
// first, and how many wait in all (the operator's view of the outbox).
func (d *Deliverer) Pending(limit int) ([]store.Notification, int, error) {
	p, err := d.o.Store.Pending()
	if err != nil {
		return nil, 0, err
	}
	return p[:min(len(p), max(limit, 0))], len(p), nil
}

// Recent lists the last limit delivered or dead-lettered notifications,
// newest first.
func (d *Deliverer) Recent(limit int) ([]store.Notification, error) { return d.o.Store.Recent(limit) }

// DeadLetters lists the dead letters, oldest first.
func (d *Deliverer) DeadLetters() ([]store.Notification, error) { return d.o.Store.DeadLetters() }
