package app

import (
	"context"
	"net"
	"net/url"
	"time"

	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/handoff"
	"github.com/presence-sidecar/presence-sidecar/internal/config"
	"github.com/presence-sidecar/presence-sidecar/internal/readiness"
)

// How often /readyz's checks look again: a dial to the upstream is cheap
// (one SYN, one FIN), a lookup of the platform's host cheaper still.
const (
	upstreamCheckEvery = 5 * time.Second
	platformCheckEvery = 30 * time.Second
	checkTimeout       = 2 * time.Second
)

// buildReadiness makes the checks /readyz reports (package readiness).
func (a *App) buildReadiness(upstream *url.URL) {
	a.upstreamCheck = readiness.NewUpstream(hostPort(upstream), min(a.cfg.DialTimeout, checkTimeout))
	if a.cfg.PresenceEnabled {
		if u, err := handoff.ParseBaseURL(a.cfg.HandoffURL); err == nil {
			a.platformCheck = readiness.NewPlatform(u.Hostname())
		}
	}
	a.runners = append(a.runners, runner{"readiness checks", a.runReadiness})
}

// runReadiness checks the upstream and the platform's host at once, warning
// of a misconfigured deployment before its first 502 or dead letter, then
// keeps checking until ctx ends.
func (a *App) runReadiness(ctx context.Context) error {
	if err := a.upstreamCheck.Probe(ctx); err != nil {
		a.log.Warn("upstream unreachable at start-up: requests will get 502 until it answers",
			zap.String("upstream", config.RedactURL(a.cfg.UpstreamURL)), zap.Error(err))
	}
	if a.platformCheck != nil {
		if err := a.platformCheck.Resolve(ctx, checkTimeout); err != nil {
			a.log.Warn("HANDOFF_URL's host does not resolve: notifications will wait in the outbox until it does",
				zap.String("handoff_url", config.RedactURL(a.cfg.HandoffURL)), zap.Error(err))
		}
		go a.platformCheck.Run(ctx, platformCheckEvery, checkTimeout)
	}
	a.upstreamCheck.Run(ctx, upstreamCheckEvery)
	return ctx.Err()
}

// checks are /readyz's lines: the upstream, the platform, the state store.
func (a *App) checks() []readiness.Status {
	out := []readiness.Status{a.upstreamCheck.Status()}
	if a.platformCheck != nil {
		out = append(out, a.platformCheck.Status())
	}
	if a.cfg.PresenceEnabled {
		st := readiness.Status{Name: "state", OK: true, Detail: a.stateName()}
		if why := a.ready(); why != "" {
			st.OK, st.Detail = false, why
		}
		out = append(out, st)
	}
	return out
}

// observePlatform feeds the platform check with one delivery attempt.
func (a *App) observePlatform(o handoff.Outcome) {
	if a.platformCheck == nil {
		return
	}
	reason := o.Error
	if o.Result == handoff.Dead && reason == "" {
		reason = "dead-lettered"
	}
	a.platformCheck.Observe(o.Result == handoff.Delivered, reason)
}

// hostPort is the address to dial for u, with the scheme's default port.
func hostPort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return net.JoinHostPort(u.Hostname(), p)
	}
	port := "80"
	if u.Scheme == "https" || u.Scheme == "wss" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}
