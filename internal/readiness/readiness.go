// Package readiness keeps the checks that /readyz reports, one line each:
// the upstream (a cheap TCP dial, repeated), the human-service platform
// (its host resolves, and the recent delivery attempts) and the state
// store. Only the upstream can make the sidecar not ready: without it no
// traffic can be served, while a platform or store outage degrades presence
// but never the data plane, and taking the pod out of its Service for it
// would cut conversations for nothing (README, Failure modes).
package readiness

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// Status is one check's latest answer.
type Status struct {
	Name string
	OK   bool
	// Detail says what was seen ("127.0.0.1:3000 accepted a connection").
	Detail string
	// Critical: while it fails, the sidecar is not ready.
	Critical bool
}

// Line is the check as /readyz writes it, in the Kubernetes API server's
// "[+]name ok" / "[-]name failed" form.
func (s Status) Line() string {
	mark, word := "[+]", "ok"
	if !s.OK {
		mark, word = "[-]", "failing"
		if !s.Critical {
			word = "failing (not a readiness failure)"
		}
	}
	return mark + s.Name + " " + word + ": " + s.Detail
}

// failuresToFail: an upstream that refuses this many dials in a row makes
// the sidecar not ready; one lost dial is not a reason to leave the Service.
const failuresToFail = 2

// Upstream dials the upstream's address now and then.
type Upstream struct {
	addr    string
	timeout time.Duration
	now     func() time.Time
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)

	mu       sync.Mutex
	checked  bool
	failures int // in a row
	lastErr  string
	at       time.Time // of the last dial
	okSince  time.Time
}

// NewUpstream checks addr (host:port), each dial bounded by timeout.
func NewUpstream(addr string, timeout time.Duration) *Upstream {
	var d net.Dialer
	return &Upstream{addr: addr, timeout: timeout, now: time.Now, dial: d.DialContext}
}

// Probe dials once and records the result, which it returns.
func (u *Upstream) Probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	c, err := u.dial(ctx, "tcp", u.addr)
	if err == nil {
		c.Close()
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.checked, u.at = true, u.now()
	if err != nil {
		u.failures++
		u.lastErr = shortError(err)
		return err
	}
	if u.failures > 0 || u.okSince.IsZero() {
		u.okSince = u.at
	}
	u.failures, u.lastErr = 0, ""
	return nil
}

// Run probes every interval until ctx ends.
func (u *Upstream) Run(ctx context.Context, every time.Duration) {
	repeat(ctx, every, func() { _ = u.Probe(ctx) })
}

// repeat calls check every interval until ctx ends.
func repeat(ctx context.Context, every time.Duration, check func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			check()
		}
	}
}

// Status implements the check.
func (u *Upstream) Status() Status {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := Status{Name: "upstream", OK: true, Critical: true}
	switch {
	case !u.checked:
		s.Detail = u.addr + " not dialled yet"
	case u.failures >= failuresToFail:
		s.OK = false
		s.Detail = fmt.Sprintf("%s: %d dials in a row failed, the last %s ago: %s", u.addr, u.failures, ago(u.now(), u.at), u.lastErr)
	case u.failures > 0:
		s.Detail = fmt.Sprintf("%s: the last dial failed (%s); not ready after %d in a row", u.addr, u.lastErr, failuresToFail)
	default:
		s.Detail = fmt.Sprintf("%s accepted a connection %s ago", u.addr, ago(u.now(), u.at))
	}
	return s
}

// recentAttempts: how many delivery attempts the platform check remembers;
// it fails when all of them failed.
const recentAttempts = 3

// Platform watches the human-service platform: whether its host resolves
// and how the recent delivery attempts went.
type Platform struct {
	host    string // "" when HANDOFF_URL names an IP address
	now     func() time.Time
	resolve func(ctx context.Context, host string) ([]string, error)

	mu          sync.Mutex
	resolveErr  string
	outcomes    [recentAttempts]attempt
	n           int // attempts seen in all
	lastSuccess time.Time
}

type attempt struct {
	ok     bool
	reason string
	at     time.Time
}

// NewPlatform watches the platform at host (an address literal needs no
// resolving).
func NewPlatform(host string) *Platform {
	if net.ParseIP(host) != nil {
		host = ""
	}
	return &Platform{host: host, now: time.Now, resolve: net.DefaultResolver.LookupHost}
}

// Resolve looks the host up once and records the result, which it returns.
func (p *Platform) Resolve(ctx context.Context, timeout time.Duration) error {
	if p.host == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := p.resolve(ctx, p.host)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resolveErr = ""
	if err != nil {
		p.resolveErr = shortError(err)
	}
	return err
}

// Run resolves the host every interval until ctx ends.
func (p *Platform) Run(ctx context.Context, every, timeout time.Duration) {
	if p.host == "" {
		return
	}
	repeat(ctx, every, func() { _ = p.Resolve(ctx, timeout) })
}

// Observe records one delivery attempt; reason says why it failed.
func (p *Platform) Observe(ok bool, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	p.outcomes[p.n%recentAttempts] = attempt{ok: ok, reason: reason, at: now}
	p.n++
	if ok {
		p.lastSuccess = now
	}
}

// Status implements the check.
func (p *Platform) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Status{Name: "platform", OK: true}
	var notes []string
	if p.resolveErr != "" {
		s.OK = false
		notes = append(notes, "its host does not resolve: "+p.resolveErr)
	}
	last := p.outcomes[(p.n+recentAttempts-1)%recentAttempts]
	failedAll := p.n >= recentAttempts
	for _, a := range p.outcomes {
		failedAll = failedAll && !a.ok
	}
	switch {
	case p.n == 0:
		notes = append(notes, "no delivery attempted yet")
	case failedAll:
		s.OK = false
		since := "never delivered since start"
		if !p.lastSuccess.IsZero() {
			since = "last delivered " + ago(p.now(), p.lastSuccess) + " ago"
		}
		notes = append(notes, fmt.Sprintf("the last %d attempts failed, the last %s ago: %s (%s); notifications wait in the outbox",
			recentAttempts, ago(p.now(), last.at), last.reason, since))
	case last.ok:
		notes = append(notes, "last attempt delivered "+ago(p.now(), last.at)+" ago")
	default:
		notes = append(notes, "last attempt failed "+ago(p.now(), last.at)+" ago: "+last.reason+"; it will be retried")
	}
	s.Detail = strings.Join(notes, "; ")
	return s
}

func ago(now, t time.Time) string { return now.Sub(t).Round(time.Second).String() }

// shortError drops the "dial tcp 127.0.0.1:1: " style prefix a net error
// repeats around its cause when the address is already in the line.
func shortError(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && strings.Contains(msg, "dial ") {
		return msg[i+2:]
	}
	return msg
}
