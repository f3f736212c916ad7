package main

import (
	"cmp"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/presence-sidecar/presence-sidecar/bench/runstat"
)

// goalP99 is the goal's bound on the connect latency added at p99.
const goalP99 = 1.0 // ms

func (r *Report) stat(name string) (med, lo, hi float64, ok bool) { return runstat.Of(r.Runs, name) }

func (r *Report) med(name string) float64 { m, _, _, _ := r.stat(name); return m }

// worst is the largest value over the runs (a count that must be 0).
func (r *Report) worst(name string) float64 { _, _, hi, _ := r.stat(name); return hi }

// cell is the median, with the range over the runs when they differ.
func (r *Report) cell(name string, format func(float64) string) string {
	m, lo, hi, ok := r.stat(name)
	return runstat.Cell(m, lo, hi, ok, len(r.Runs), format, "–")
}

// delta is the median over the runs of (figure in phase − figure at the
// baseline), each run against its own baseline.
func (r *Report) delta(fig, phase string) (med, lo, hi float64, ok bool) {
	var v []float64
	for _, f := range r.Runs {
		a, okA := f[fig+"."+phase]
		b, okB := f[fig+"."+phaseBase]
		if okA && okB {
			v = append(v, a-b)
		}
	}
	return runstat.Spread(v)
}

func (r *Report) deltaCell(fig, phase string) string {
	m, lo, hi, ok := r.delta(fig, phase)
	return runstat.Cell(m, lo, hi, ok, len(r.Runs), signedMS, " – ")
}

func msf(v float64) string { return fmt.Sprintf("%.2f ms", v) }
func signedMS(v float64) string {
	return fmt.Sprintf("%+.2f ms", v)
}
func countf(v float64) string { return fmt.Sprintf("%.0f", v) }
func secf(v float64) string   { return fmt.Sprintf("%.1f s", v) }

func verdict(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

var phaseLabel = map[string]string{
	phaseBase: "Redis up (baseline)",
	phaseDown: "Redis down",
	phaseBack: "Redis back",
}

// proxyErrors is every proxy error of a run: failed connects, held
// connections that ended or stopped echoing, replicas that exited.
func proxyErrors(f Figures) float64 {
	return f["err."+phaseBase] + f["err."+phaseDown] + f["err."+phaseBack] +
		f["held.ended"] + f["held.echo.failed"] + f["replica.exits"]
}

// falseExpires is every sign of a false absence of a held session: an
// /expire or a return message received, or an episode recorded in Redis.
func falseExpires(f Figures) float64 {
	return f["expire.held"] + f["message.held"] + f["held.after.decided"]
}

// Failures are the reasons to exit non-zero: any proxy error, any false
// /expire, in any run. The latency figure is reported, not failed on.
func (r *Report) Failures() []string {
	var out []string
	for i, f := range r.Runs {
		if n := proxyErrors(f); n > 0 {
			out = append(out, fmt.Sprintf("run %d: %.0f proxy errors (connects up/down/back %.0f/%.0f/%.0f, held ended %.0f, held echo failed %.0f, replica exits %.0f)",
				i+1, n, f["err."+phaseBase], f["err."+phaseDown], f["err."+phaseBack], f["held.ended"], f["held.echo.failed"], f["replica.exits"]))
		}
		if n := falseExpires(f); n > 0 {
			out = append(out, fmt.Sprintf("run %d: false absence of held sessions: %.0f /expire (%.0f sessions), %.0f return messages, %.0f decided in Redis",
				i+1, f["expire.held"], f["expire.held.sessions"], f["message.held"], f["held.after.decided"]))
		}
		if f["held.after.present"] != float64(r.Config.Held) || f["held.before.present"] != float64(r.Config.Held) {
			out = append(out, fmt.Sprintf("run %d: held sessions present in Redis: %.0f before, %.0f after, of %d",
				i+1, f["held.before.present"], f["held.after.present"], r.Config.Held))
		}
	}
	return out
}

var downLabel = map[string]string{
	DownRestart: "SIGTERM (a clean shutdown: the AOF is written), then a new redis-server on the same port with the same AOF",
	DownEmpty:   "SIGKILL, its files removed, then a new redis-server on the same port: back without data",
	DownPause:   "SIGSTOP, then SIGCONT: a hung Redis (its sockets stay open, calls time out)",
}

// Markdown is the report.
func (r *Report) Markdown() string {
	var b strings.Builder
	c := r.Config
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	p("# Cluster mode with Redis away: proxy errors, connect latency, false /expire")
	p("")
	p("Goal: Redis down for 60 s: 0 proxy errors, no added WebSocket connect latency beyond 1 ms at p99, 0 false /expire after it returns.")
	p("")
	rev := r.Rev
	if rev == "" {
		rev = "?"
	}
	p("%s; presence-sidecar %s (`go build`, no -race), 2 replicas; redis-server %s (`--appendonly yes --appendfsync everysec --save ''`); Go %s, %d CPUs; everything on loopback on one machine.",
		r.Started.UTC().Format(time.DateOnly), rev, r.Redis, runtime.Version(), runtime.NumCPU())
	p("Sidecars: `REDIS_LEASE_TTL=%v`, `PRESENCE_CHECK_INTERVAL=%v`, `PRESENCE_ALLOW_ANY_INTERVAL=true`, `HANDOFF_DETECT=always`, `LOG_LEVEL=warn`, the rest default%s.",
		c.Lease, c.Interval, extraEnv(c.SidecarEnv))
	p("Load: %d sessions held connected the whole run (half on each replica; they answer the probe's Pings); new WebSockets at %.0f/s, open loop, alternating replicas, each a fresh session id: dial + handshake + the link frame's echo, timed from its scheduled start, then a clean close. Phases: %v warm-up (not counted), Redis up %v, Redis down %v (%s), Redis back %v (lease + interval + %v).",
		c.Held, c.Rate, c.Warmup, c.Baseline, c.Outage, downLabel[c.Down], c.after(), c.Margin)
	if len(r.Runs) > 1 {
		p("Medians of %d runs (each with fresh processes), range in brackets where runs differ; Δ is each run against its own baseline.", len(r.Runs))
	}
	p("")

	p("## Connect latency by phase")
	p("")
	p("| phase | length | connects | errors | p50 | p90 | p99 | p99.9 | max | Δ p50 | Δ p99 |")
	p("|---|---|---|---|---|---|---|---|---|---|---|")
	for _, ph := range phases {
		dp50, dp99 := "", ""
		if ph != phaseBase {
			dp50, dp99 = r.deltaCell("p50", ph), r.deltaCell("p99", ph)
		}
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |", phaseLabel[ph], r.cell("len."+ph, secf), r.cell("n."+ph, countf),
			r.cell("err."+ph, countf), r.cell("p50."+ph, msf), r.cell("p90."+ph, msf), r.cell("p99."+ph, msf),
			r.cell("p999."+ph, msf), r.cell("max."+ph, msf), dp50, dp99)
	}
	p("")
	if kinds := r.errorKinds(); kinds != "" {
		p("Connect errors by kind: %s.", kinds)
		p("")
	}

	p("## Against the goal")
	p("")
	p("| goal | measured | met |")
	p("|---|---|---|")
	worstErr := 0.0
	worstFalse := 0.0
	for _, f := range r.Runs {
		worstErr = max(worstErr, proxyErrors(f))
		worstFalse = max(worstFalse, falseExpires(f))
	}
	p("| 0 proxy errors | %s in the worst run (connects in all phases, held connections ended or not echoing at the end, replicas exited) | %s |",
		countf(worstErr), verdict(worstErr == 0))
	_, _, hiDown, _ := r.delta("p99", phaseDown)
	_, _, hiBack, _ := r.delta("p99", phaseBack)
	p("| connect p99 added ≤ 1 ms | Redis down: %s; Redis back: %s (worst run: %s, %s) | %s |",
		r.deltaCell("p99", phaseDown), r.deltaCell("p99", phaseBack), signedMS(hiDown), signedMS(hiBack),
		verdict(max(hiDown, hiBack) <= goalP99))
	p("| 0 false /expire after Redis returns | %s /expire, %s return messages for held sessions; %s held sessions with an absence episode in Redis (worst run) | %s |",
		countf(r.worst("expire.held")), countf(r.worst("message.held")), countf(r.worst("held.after.decided")), verdict(worstFalse == 0))
	p("")

	p("## Sessions and notifications")
	p("")
	p("| | |")
	p("|---|---|")
	p("| held sessions present in Redis (admin `GET /v1/sessions/{id}`: present, ≥ 1 connection, episode 0), before the outage | %s of %d |", r.cell("held.before.present", countf), c.Held)
	p("| … after Redis is back and the outbox drained | %s of %d |", r.cell("held.after.present", countf), c.Held)
	p("| held connections that ended while held | %s |", r.cell("held.ended", countf))
	p("| held connections not echoing at the end | %s |", r.cell("held.echo.failed", countf))
	p("| **/expire for held sessions (false)** | %s |", r.cell("expire.held", countf))
	p("| return messages for held sessions (false) | %s |", r.cell("message.held", countf))
	p("| short-lived sessions measured (all phases and the warm-up: they all leave) | %s |", r.cell("short.total", countf))
	p("| /expire for short-lived sessions (legitimate: handed over, gone) | %s, for %s sessions |", r.cell("expire.short", countf), r.cell("expire.short.sessions", countf))
	p("| … short-lived sessions with more than one /expire (distinct webhook-ids) | %s |", r.cell("expire.short.dup", countf))
	p("| return messages for short-lived sessions | %s |", r.cell("message.short", countf))
	p("| redeliveries (a webhook-id seen again) | %s |", r.cell("redeliveries", countf))
	p("| notifications for no session of the run | %s |", r.cell("foreign", countf))
	p("| outbox depth at the end (after up to %v of draining) | %s |", c.Drain, r.cell("outbox.depth.end", countf))
	p("")

	p("## The replicas")
	p("")
	p("| | |")
	p("|---|---|")
	p("| `presence_sidecar_redis_up`, both replicas, lowest while Redis was down (from 3 s in) | %s of 2 |", r.cell("redis.up.min.down", countf))
	p("| … at the end | %s of 2 |", r.cell("redis.up.end", countf))
	p("| `presence_sidecar_ledger_pending`, both replicas, peak | %s |", r.cell("ledger.peak", countf))
	p("| `presence_sidecar_reasserts_total`, both replicas | %s |", r.cell("reasserts", countf))
	p("| `presence_sidecar_upgrades_total`, `…_upstream_errors_total`, `…_rejected_total` | %s, %s, %s |",
		r.cell("upgrades", countf), r.cell("upstream.errors", countf), r.cell("rejected", countf))
	p("| Redis answering PING after its restart | %s |", r.redisUp())
	p("| the load's scheduler: latest wake-up (counted in the latency) | %s |", r.cell("late.max", msf))
	p("")
	if logs := r.logs(); logs != "" {
		p("Warnings and errors the replicas logged (all runs, lines):")
		p("")
		p("%s", logs)
	}

	if len(r.Runs) > 1 {
		p("## Per run")
		p("")
		p("| run | p99 up | p99 down | p99 back | Δ p99 down | Δ p99 back | proxy errors | false /expire | /expire short-lived |")
		p("|---|---|---|---|---|---|---|---|---|")
		for i, f := range r.Runs {
			p("| %d | %s | %s | %s | %s | %s | %.0f | %.0f | %.0f |", i+1, msf(f["p99.up"]), msf(f["p99.down"]), msf(f["p99.back"]),
				signedMS(f["p99.down"]-f["p99.up"]), signedMS(f["p99.back"]-f["p99.up"]), proxyErrors(f), falseExpires(f), f["expire.short"])
		}
		p("")
	}
	var errs []string
	for i, d := range r.Details {
		for _, e := range d.Errors {
			errs = append(errs, fmt.Sprintf("- run %d: %s", i+1, oneLine(e)))
		}
		for _, e := range d.Foreign {
			errs = append(errs, fmt.Sprintf("- run %d: foreign notification %s", i+1, oneLine(e)))
		}
	}
	if len(errs) > 0 {
		p("## First errors")
		p("")
		for _, e := range errs[:min(len(errs), 30)] {
			p("%s", e)
		}
		p("")
	}
	p("Reproduce: `cd bench && go run ./clusterproxy%s` (writes this file to `bench/results/clusterproxy.md`).", r.flags())
	return b.String()
}

func (r *Report) errorKinds() string {
	var parts []string
	for _, ph := range phases {
		for _, k := range errKinds {
			if v := r.worst("err." + ph + "." + k); v > 0 {
				parts = append(parts, fmt.Sprintf("%s %s: %.0f (worst run)", phaseLabel[ph], k, v))
			}
		}
	}
	return strings.Join(parts, "; ")
}

func (r *Report) redisUp() string {
	var v []string
	for _, d := range r.Details {
		v = append(v, d.RedisUp.Round(time.Millisecond).String())
	}
	return strings.Join(v, ", ")
}

func (r *Report) logs() string {
	all := map[string]int{}
	for _, d := range r.Details {
		for k, n := range d.Logs {
			all[k] += n
		}
	}
	if len(all) == 0 {
		return ""
	}
	keys := slices.SortedFunc(maps.Keys(all), func(a, b string) int { return cmp.Or(all[b]-all[a], strings.Compare(a, b)) })
	var b strings.Builder
	for _, k := range keys[:min(len(keys), 15)] {
		fmt.Fprintf(&b, "- %d × `%s`\n", all[k], k)
	}
	return b.String()
}

func (r *Report) flags() string {
	c := r.Config
	var f []string
	if c.Outage != 60*time.Second {
		f = append(f, "-outage "+c.Outage.String())
	}
	if c.Baseline != c.Outage {
		f = append(f, "-baseline "+c.Baseline.String())
	}
	if c.Held != 2000 {
		f = append(f, fmt.Sprintf("-n %d", c.Held))
	}
	if c.Rate != 100 {
		f = append(f, fmt.Sprintf("-rate %g", c.Rate))
	}
	if c.Reps != 1 {
		f = append(f, fmt.Sprintf("-r %d", c.Reps))
	}
	if c.Down != DownRestart {
		f = append(f, "-down "+c.Down)
	}
	if c.Margin != 10*time.Second {
		f = append(f, "-margin "+c.Margin.String())
	}
	for _, e := range c.SidecarEnv {
		f = append(f, "-sidecar-env "+e)
	}
	if len(f) == 0 {
		return ""
	}
	return " " + strings.Join(f, " ")
}

func extraEnv(env []string) string {
	if len(env) == 0 {
		return ""
	}
	return "; extra: `" + strings.Join(env, "`, `") + "`"
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ⏎ ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}
