// Command clusterload runs three replicas of the sidecar in cluster mode
// (one redis-server) under a churn of handed-over sessions, kills one
// replica in the middle and restarts it, and checks that the human-service
// platform got one /expire per absence and one return message per return,
// and nothing for a reconnect.
//
//	go run ./cmd/clusterload                          # about 45 s: 30 s of churn, 4,000 sessions (CI runs this)
//	CLUSTERLOAD_DURATION=3m go run ./cmd/clusterload  # longer: 20,000 sessions by default
//
// Flags (each also read from the environment variable named):
//
//	-duration     CLUSTERLOAD_DURATION     the churn (default 30s; 1m or more is a long run)
//	-sessions     CLUSTERLOAD_SESSIONS     session ids (default 4,000; 20,000 in a long run)
//	-replicas     CLUSTERLOAD_REPLICAS     sidecar replicas (default 3; at least 2: one is killed)
//	-concurrency  CLUSTERLOAD_CONCURRENCY  connections open at once at most (default 1,200; 3,000 in a long run)
//	-sidecar      CLUSTERLOAD_SIDECAR      a built sidecar binary (default: go build ./cmd/presence-sidecar)
//
// It builds cmd/presence-sidecar and starts, besides the replicas, a
// redis-server (REDIS_URL, REDIS_LEASE_TTL=2s), an echo upstream speaking
// the seed platform's socket protocol and a receiver standing in for the
// human-service platform (both in this process). Presence is on for every
// session (HANDOFF_DETECT=always) with a 2 s interval and a 1 s probe.
//
// Each session alternates between connected (to a random replica: linked,
// echoing, probed, for holdMin–holdMax) and away. Away is either short —
// 10–35 % of the interval, then the session reconnects to a random replica:
// the sidecar must send nothing — or long — 250 % of the interval or more,
// and until its /expire came: exactly one /expire, then, when it comes back,
// exactly one return message, after it. When the churn ends every session
// goes away for good (one /expire, no return). At most -concurrency
// connections are open at once (a proxy holds two sockets per connection
// and this process one more for each, under a 20,000 open-file limit): a
// session keeps its token through a reconnect and gives it back for an
// absence.
//
// Halfway through, one replica gets SIGKILL: its clients see their
// connections drop and are away from the kill on. Those that reconnect do
// so within 15 % of the interval (the survivors must send nothing: the dead
// replica's connections still count until its lease lapses); those that do
// not stay away at least the lease plus 250 % of the interval (a survivor
// reaps the dead replica's connections at the lapse and decides the
// absence one interval later). The replica is restarted (a new process, so
// a new replica id) on the same ports a few seconds later.
//
// A reconnect that took longer than planned (a loaded machine: the new
// handshake, or a connection opened on the killed replica just before the
// kill that may never have reached Redis) is ambiguous: nothing, or one
// /expire and one return message, are both right; more than 5 % of the
// reconnects ambiguous fails the run (the machine is too loaded to judge).
// A return from an absence on a connection opened just before the kill may
// likewise never have reached Redis: then the absence goes on, with no
// return message yet and no /expire for the drop.
//
// The receiver records each notification by session, event and
// webhook-id; a webhook-id seen again (a redelivery after the kill: a
// replica that died after sending and before acknowledging) is counted
// apart and allowed. The run fails (exit 1) on any missing notification,
// any duplicate decision (two webhook-ids for one absence or return), any
// return message before its /expire, any notification for a reconnect, an
// unexpected notification, a replica that exited by itself, or client
// failures beyond 1 % of the connections. It prints the figures, the
// decision lag (from the moment the interval elapsed to the receiver
// getting the /expire), the takeover after the kill, and the replicas'
// CPU and memory (/proc).
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The sidecars' timing.
const (
	checkInterval  = 2 * time.Second  // PRESENCE_CHECK_INTERVAL
	leaseTTL       = 2 * time.Second  // REDIS_LEASE_TTL
	probeInterval  = time.Second      // PROBE_INTERVAL: every connection held over a second is probed...
	probeTimeout   = 10 * time.Second // ...and only one that cannot answer for 10 s closed (a loaded machine)
	handoffTimeout = 3 * time.Second  // HANDOFF_TIMEOUT: a dead deliverer's heads are taken over after this + 5 s
	botID          = "clusterload-bot"
	expirePath     = "/expire"
	messagePath    = "/message"
)

// The model's proportions, of the interval.
const (
	shortMin, shortMax = 0.10, 0.35 // a reconnect's time away
	killShortMax       = 0.15       // a reconnect's after the kill
	longMin            = 2.5        // an absence's, at least
	ambiguousAt        = 0.6        // a reconnect back later than this may go either way
	youngConn          = time.Second
)

type config struct {
	duration                        time.Duration
	sessions, replicas, concurrency int
	sidecar                         string

	interval, lease  time.Duration
	holdMin, holdMax time.Duration
	reconnectShare   float64
	offWait          time.Duration // how long an absent client waits for its /expire before it returns anyway
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "clusterload: FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("clusterload: PASS")
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func parseConfig() (config, error) {
	fs := flag.NewFlagSet("clusterload", flag.ContinueOnError)
	dur := fs.String("duration", envOr("CLUSTERLOAD_DURATION", "30s"), "the churn; 1m or more is a long run (env CLUSTERLOAD_DURATION)")
	ses := fs.String("sessions", os.Getenv("CLUSTERLOAD_SESSIONS"), "session ids (default 4000; 20000 in a long run) (env CLUSTERLOAD_SESSIONS)")
	rep := fs.String("replicas", envOr("CLUSTERLOAD_REPLICAS", "3"), "sidecar replicas, at least 2 (env CLUSTERLOAD_REPLICAS)")
	con := fs.String("concurrency", os.Getenv("CLUSTERLOAD_CONCURRENCY"), "connections open at once at most (default 1200; 3000 in a long run) (env CLUSTERLOAD_CONCURRENCY)")
	bin := fs.String("sidecar", os.Getenv("CLUSTERLOAD_SIDECAR"), "a built sidecar binary (default: build ./cmd/presence-sidecar) (env CLUSTERLOAD_SIDECAR)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return config{}, err
	}
	c := config{interval: checkInterval, lease: leaseTTL, reconnectShare: 0.5, sidecar: *bin}
	d, err := time.ParseDuration(*dur)
	if err != nil || d < 20*time.Second {
		return c, fmt.Errorf("duration %q: want a duration of 20s or more", *dur)
	}
	c.duration = d
	long := d >= time.Minute
	c.sessions, c.concurrency = 4000, 1200
	c.holdMin, c.holdMax = time.Second, 3*time.Second
	if long {
		c.sessions, c.concurrency = 20000, 3000
		c.holdMin, c.holdMax = 2*time.Second, 6*time.Second
	}
	num := func(name, v string, least int, dst *int) error {
		if v == "" {
			return nil
		}
		n, err := strconv.Atoi(strings.ReplaceAll(v, "_", ""))
		if err != nil || n < least {
			return fmt.Errorf("%s %q: want a number of %d or more", name, v, least)
		}
		*dst = n
		return nil
	}
	if err := errors.Join(num("sessions", *ses, 1, &c.sessions), num("replicas", *rep, 2, &c.replicas),
		num("concurrency", *con, 1, &c.concurrency)); err != nil {
		return c, err
	}
	if c.concurrency > 5000 {
		return c, fmt.Errorf("concurrency %d: want 5000 at most (open files: a proxy holds two sockets per connection)", c.concurrency)
	}
	// A delivery taken over from the killed replica waits for its lease
	// (HANDOFF_TIMEOUT + 5 s) on top of the lapse and the interval.
	c.offWait = c.lease + c.interval + handoffTimeout + 5*time.Second + 20*time.Second
	return c, nil
}

func run() error {
	cfg, err := parseConfig()
	if err != nil {
		return err
	}
	raiseFileLimit()

	tmp, err := os.MkdirTemp("", "presence-clusterload")
	if err != nil {
		return err
	}
	if keep := os.Getenv("CLUSTERLOAD_KEEP"); keep != "" {
		fmt.Printf("clusterload: logs kept in %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	began := time.Now()
	bin := cfg.sidecar
	if bin == "" {
		bin = filepath.Join(tmp, "presence-sidecar")
		build := exec.Command("go", "build", "-o", bin, "github.com/presence-sidecar/presence-sidecar/cmd/presence-sidecar")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building the sidecar: %w", err)
		}
	}
	built := time.Since(began)

	rs, err := startRedis()
	if err != nil {
		return err
	}
	defer rs.stop()

	runID := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	prefix := "cl-" + runID + "-"
	sessions := make([]*session, cfg.sessions)
	for i := range sessions {
		sessions[i] = &session{idx: i, id: prefix + strconv.Itoa(i)}
	}
	rcv := newReceiver(prefix, sessions)
	upAddr, err := serve(http.HandlerFunc(echoUpstream))
	if err != nil {
		return err
	}
	rcvAddr, err := serve(rcv)
	if err != nil {
		return err
	}

	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"UPSTREAM_URL=http://" + upAddr,
		"HANDOFF_URL=http://" + rcvAddr,
		"HANDOFF_EXPIRE_PATH=" + expirePath,
		"HANDOFF_MESSAGE_PATH=" + messagePath,
		"REDIS_URL=redis://" + rs.addr,
		"REDIS_LEASE_TTL=" + cfg.lease.String(),
		"PRESENCE_ENABLED=true",
		"PRESENCE_ALLOW_ANY_INTERVAL=true",
		"PRESENCE_CHECK_INTERVAL=" + cfg.interval.String(),
		"HANDOFF_DETECT=always",
		"PROBE_INTERVAL=" + probeInterval.String(),
		"PROBE_TIMEOUT=" + probeTimeout.String(),
		"HANDOFF_TIMEOUT=" + handoffTimeout.String(),
		"HANDOFF_RETRY_MAX_DELAY=1s",
		"LOG_LEVEL=" + envOr("CLUSTERLOAD_LOG_LEVEL", "warn"),
		"SHUTDOWN_GRACE=1s",
		"DATA_DIR=" + filepath.Join(tmp, "data"),
	}
	replicas := make([]*replica, cfg.replicas)
	var startWG sync.WaitGroup
	startErrs := make([]error, cfg.replicas)
	for i := range replicas {
		r := &replica{idx: i, bin: bin, logDir: tmp}
		if r.addr, err = freeAddr(); err != nil {
			return err
		}
		if r.admin, err = freeAddr(); err != nil {
			return err
		}
		r.env = append(append([]string(nil), env...), "LISTEN_ADDR="+r.addr, "ADMIN_ADDR="+r.admin)
		replicas[i] = r
		startWG.Go(func() { startErrs[i] = r.start() })
	}
	startWG.Wait()
	defer func() {
		var wg sync.WaitGroup
		for _, r := range replicas {
			wg.Go(r.stop)
		}
		wg.Wait()
	}()
	if err := errors.Join(startErrs...); err != nil {
		return err
	}
	stopSampling := make(chan struct{})
	var sampWG sync.WaitGroup
	sampler(replicas, stopSampling, &sampWG)
	victim := replicas[len(replicas)/2]

	l := &load{cfg: cfg, replicas: replicas, tokens: make(chan struct{}, cfg.concurrency), stop: make(chan struct{})}
	killIn := cfg.duration / 2
	restartIn := killIn + max(cfg.lease+cfg.interval+2*time.Second, cfg.duration/6)
	ramp := min(10*time.Second, cfg.duration/3)
	fmt.Printf("clusterload: %v of churn, %d sessions over %d replicas, at most %d connections open; interval %v, lease %v; replica %d killed at +%v, restarted at +%v (build %.1f s)\n",
		cfg.duration, cfg.sessions, cfg.replicas, cfg.concurrency, cfg.interval, cfg.lease, victim.idx, killIn, restartIn, built.Seconds())

	t0 := time.Now()
	var wg sync.WaitGroup
	for i, s := range sessions {
		at := t0.Add(time.Duration(i) * ramp / time.Duration(len(sessions)))
		wg.Go(func() { l.play(s, at) })
	}

	// The kill and the restart.
	var killAt, restartedAt time.Time
	var killConns float64
	var restartErr error
	var ctlWG sync.WaitGroup
	ctlWG.Go(func() {
		if !l.sleepUntil(t0.Add(killIn)) {
			return
		}
		if m, err := victim.metrics(); err == nil {
			killConns = sum(m, "presence_sidecar_open_connections")
		}
		killAt = victim.kill()
		fmt.Printf("clusterload: +%.1f s: replica %d killed (SIGKILL) with %.0f connections open at %s\n", killAt.Sub(t0).Seconds(), victim.idx, killConns, killAt.Format("15:04:05.000"))
		if !l.sleepUntil(t0.Add(restartIn)) {
			return
		}
		restartErr = victim.start()
		restartedAt = time.Now()
		fmt.Printf("clusterload: +%.1f s: replica %d restarted (a new replica id) at %s\n", restartedAt.Sub(t0).Seconds(), victim.idx, restartedAt.Format("15:04:05.000"))
	})
	progress := time.NewTicker(10 * time.Second)
	endAt := t0.Add(cfg.duration)
	for time.Now().Before(endAt) {
		select {
		case <-progress.C:
			fmt.Printf("clusterload: +%.0f s: %d connections (%d open), %d /expire and %d return messages received\n",
				time.Since(t0).Seconds(), l.conns.Load(), l.open.cur.Load(), rcv.offlines.Load(), rcv.onlines.Load())
		case <-time.After(time.Until(endAt)):
		}
	}
	progress.Stop()
	churnEnd := time.Now()
	close(l.stop)
	wg.Wait()
	ctlWG.Wait()
	if restartErr != nil {
		return restartErr
	}

	// Every /expire expected (the final aways included), then quiet.
	var lastStart time.Time
	wantOff := 0
	for _, s := range sessions {
		for _, a := range s.aways {
			if a.kind == kAbsence {
				wantOff++
			}
			if a.start.After(lastStart) {
				lastStart = a.start
			}
		}
	}
	deadline := churnEnd.Add(cfg.offWait)
	for int(rcv.offlines.Load()) < wantOff && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	depthDeadline := time.Now().Add(15 * time.Second)
	var depth float64
	for {
		m, err := replicas[0].metrics()
		if err == nil {
			depth = sum(m, "presence_sidecar_outbox_depth")
		}
		if err == nil && depth == 0 || time.Now().After(depthDeadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	quiet := max(3*time.Second, time.Until(lastStart.Add(cfg.interval+cfg.lease+time.Second)))
	time.Sleep(quiet) // and nothing more comes
	close(stopSampling)
	sampWG.Wait()
	ran := time.Since(t0)

	// The replicas' counters (summed) and figures.
	counters := map[string]float64{}
	for _, r := range replicas {
		m, err := r.metrics()
		if err != nil {
			continue
		}
		for _, k := range []struct{ name, label string }{
			{"presence_sidecar_upgrades_total", ""},
			{"presence_sidecar_probe_timeouts_total", ""},
			{"presence_sidecar_upstream_errors_total", ""},
			{"presence_sidecar_rejected_total", ""},
			{"presence_sidecar_takeovers_total", `kind="replica"`},
			{"presence_sidecar_takeovers_total", `kind="notification"`},
			{"presence_sidecar_delivery_leases_lost_total", ""},
			{"presence_sidecar_reasserts_total", ""},
		} {
			var labels []string
			if k.label != "" {
				labels = []string{k.label}
			}
			counters[k.name+k.label] += sum(m, k.name, labels...)
		}
	}

	v := check(sessions, cfg.interval, killAt, churnEnd)
	redeliveries, mismatched, foreign := rcv.counts()

	fmt.Printf("clusterload: %d sessions, %d connections (peak %d open), %d echoes over %.1f s (%.1f s in all, build included)\n",
		cfg.sessions, l.conns.Load(), l.open.peak.Load(), l.echoes.Load(), ran.Seconds(), time.Since(began).Seconds())
	fmt.Printf("clusterload: client side: %d dials refused (the killed replica), %d dial errors, %d link errors, %d drops by the kill, %d other drops, %d sessions gave up\n",
		l.refused.Load(), l.dialErrs.Load(), l.linkErrs.Load(), l.killDrops.Load(), l.drops.Load(), l.giveUps.Load())
	fmt.Printf("clusterload: sidecars: %.0f upgrades, %.0f probe timeouts, %.0f upstream errors, %.0f rejected; takeovers: %.0f replicas reaped, %.0f notifications; %.0f delivery leases lost, %.0f reasserts\n",
		counters["presence_sidecar_upgrades_total"], counters["presence_sidecar_probe_timeouts_total"],
		counters["presence_sidecar_upstream_errors_total"], counters["presence_sidecar_rejected_total"],
		counters[`presence_sidecar_takeovers_total`+`kind="replica"`], counters[`presence_sidecar_takeovers_total`+`kind="notification"`],
		counters["presence_sidecar_delivery_leases_lost_total"], counters["presence_sidecar_reasserts_total"])
	fmt.Printf("%-34s %10s %10s\n", "what the sessions did", "", "")
	fmt.Printf("%-34s %10d\n", "  reconnects (nothing due)", v.reconnects-v.ambiguous)
	fmt.Printf("%-34s %10d %s\n", "  reconnects, ambiguous", v.ambiguous, fmt.Sprintf("(slower than planned; %d of them decided absent, and so expected)", v.ambiguousDecided))
	fmt.Printf("%-34s %10d %s\n", "  returns cut by the kill", v.unseenReturns, "(opened just before it, maybe never in Redis: the absence goes on, and so no /expire)")
	fmt.Printf("%-34s %10d %s\n", "  first connections cut by the kill", v.unseenFirsts, "(opened just before it, maybe never in Redis: no session there, and so no /expire)")
	fmt.Printf("%-34s %10d %s\n", "  absences", v.absences, fmt.Sprintf("(%d after the kill, %d for good at the end)", v.killedAway, v.finals))
	fmt.Printf("%-34s %10d\n", "  returns", v.returns)
	fmt.Printf("%-34s %10s %10s\n", "notifications", "expected", "received")
	fmt.Printf("%-34s %10d %10d\n", "  /expire", v.wantOff, v.gotOff)
	fmt.Printf("%-34s %10d %10d\n", "  return messages", v.wantOn, v.gotOn)
	fmt.Printf("%-34s %10s %10d %s\n", "  webhooks received", "", rcv.posts.Load(), "(every POST, redeliveries included)")
	fmt.Printf("%-34s %10s %10d %s\n", "  redeliveries (same webhook-id)", "", redeliveries, "(allowed)")
	fmt.Printf("%-34s %10d %10d\n", "  missing", 0, v.missingOff+v.missingOn)
	fmt.Printf("%-34s %10d %10d\n", "  duplicate decisions", 0, v.dupOff+v.dupOn)
	fmt.Printf("%-34s %10d %10d\n", "  return before its /expire", 0, v.early)
	fmt.Printf("%-34s %10d %10d\n", "  unexpected", 0, v.unexpected+len(foreign)+mismatched)
	fmt.Printf("%-34s %10s %10d %s\n", "  /expire over 1 s early", "", v.premature, "(not checked: a connection that never reached Redis)")
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/1e6) }
	if len(v.lags) > 0 {
		fmt.Printf("clusterload: decision lag (interval elapsed → /expire received), %d absences during the churn: p50 %s, p99 %s, max %s\n",
			len(v.lags), ms(pct(v.lags, 50)), ms(pct(v.lags, 99)), ms(v.lags[len(v.lags)-1]))
	}
	if len(v.backLags) > 0 {
		fmt.Printf("clusterload: return message lag (the client began to reconnect → received), %d returns: p50 %s, p99 %s, max %s\n",
			len(v.backLags), ms(pct(v.backLags, 50)), ms(pct(v.backLags, 99)), ms(v.backLags[len(v.backLags)-1]))
	}
	if len(v.endLags) > 0 {
		fmt.Printf("clusterload: decision lag, the %d connected when the churn ended (gone at once): p50 %s, p99 %s, max %s\n",
			len(v.endLags), ms(pct(v.endLags, 50)), ms(pct(v.endLags, 99)), ms(v.endLags[len(v.endLags)-1]))
	}
	if !killAt.IsZero() {
		line := fmt.Sprintf("clusterload: kill: %d connections dropped", l.killDrops.Load())
		if len(v.takeovers) > 0 {
			line += fmt.Sprintf("; the %d that stayed away got their /expire kill + p50 %s, p99 %s, max %s (lease %v + interval %v + sweep)",
				len(v.takeovers), ms(pct(v.takeovers, 50)), ms(pct(v.takeovers, 99)), ms(v.takeovers[len(v.takeovers)-1]), cfg.lease, cfg.interval)
		}
		if reapAt, id := reapTime(replicas, victim); !reapAt.IsZero() {
			line += fmt.Sprintf("; a survivor reaped %s at kill + %s", id, ms(reapAt.Sub(killAt)))
		}
		fmt.Println(line)
	}
	fmt.Printf("%-12s %10s %10s %10s %10s %8s\n", "process", "CPU", "CPU/s", "RSS", "peak RSS", "peak fds")
	for _, r := range replicas {
		r.mu.Lock()
		for g, u := range r.usage {
			life := ran
			if g == 0 && len(r.usage) > 1 {
				life = killAt.Sub(t0)
			} else if g > 0 {
				life = ran - restartedAt.Sub(t0)
			}
			fmt.Printf("%-12s %9.1fs %9.2f %7.1f MiB %7.1f MiB %8d\n", fmt.Sprintf("replica %d.%d", r.idx, g+1),
				u.cpu.Seconds(), u.cpu.Seconds()/life.Seconds(), mib(u.rss), mib(u.peakRSS), u.peakFDs)
		}
		r.mu.Unlock()
	}
	if u, err := readProc(rs.cmd.Process.Pid); err == nil {
		fmt.Printf("%-12s %9.1fs %9.2f %7.1f MiB %7.1f MiB %8d\n", "redis", u.cpu.Seconds(), u.cpu.Seconds()/ran.Seconds(), mib(u.rss), mib(u.peakRSS), u.peakFDs)
	}
	if u, err := readProc(os.Getpid()); err == nil {
		fmt.Printf("%-12s %9.1fs %9.2f %7.1f MiB %7.1f MiB %8d\n", "this load", u.cpu.Seconds(), u.cpu.Seconds()/time.Since(began).Seconds(), mib(u.rss), mib(u.peakRSS), u.peakFDs)
	}

	var problems []string
	for _, e := range v.examples {
		fmt.Fprintln(os.Stderr, "clusterload:", e)
	}
	for _, s := range v.failing[:min(len(v.failing), 3)] {
		fmt.Fprintln(os.Stderr, "clusterload:", timeline(s))
	}
	if os.Getenv("CLUSTERLOAD_KEEP") != "" {
		for _, f := range []struct {
			name string
			ss   []*session
		}{{"failing.txt", v.failing}, {"ambiguous.txt", v.unclear}} {
			if len(f.ss) == 0 {
				continue
			}
			var b strings.Builder
			for _, s := range f.ss {
				b.WriteString(timeline(s) + "\n")
			}
			name := filepath.Join(tmp, f.name)
			if os.WriteFile(name, []byte(b.String()), 0o644) == nil {
				fmt.Fprintf(os.Stderr, "clusterload: %d sessions' timelines are in %s\n", len(f.ss), name)
			}
		}
	}
	for _, f := range foreign[:min(len(foreign), 5)] {
		fmt.Fprintln(os.Stderr, "clusterload: unexpected notification:", f)
	}
	if n := v.missingOff + v.missingOn; n > 0 {
		problems = append(problems, fmt.Sprintf("%d notifications missing", n))
	}
	if n := v.dupOff + v.dupOn; n > 0 {
		problems = append(problems, fmt.Sprintf("%d duplicate decisions", n))
	}
	if v.early > 0 {
		problems = append(problems, fmt.Sprintf("%d return messages before their /expire", v.early))
	}
	if n := v.unexpected + len(foreign) + mismatched; n > 0 {
		problems = append(problems, fmt.Sprintf("%d unexpected notifications", n))
	}
	if v.reconnects > 0 && v.ambiguous*20 > v.reconnects {
		problems = append(problems, fmt.Sprintf("%d of %d reconnects slower than planned: the machine is too loaded to judge", v.ambiguous, v.reconnects))
	}
	clientErrs := l.dialErrs.Load() + l.linkErrs.Load() + l.drops.Load() + l.giveUps.Load()
	if clientErrs*100 > l.conns.Load() {
		problems = append(problems, fmt.Sprintf("%d client failures in %d connections", clientErrs, l.conns.Load()))
	}
	l.errMu.Lock()
	for _, e := range l.errs[:min(len(l.errs), 5)] {
		fmt.Fprintln(os.Stderr, "clusterload:", e)
	}
	l.errMu.Unlock()
	if killAt.IsZero() {
		problems = append(problems, "no replica was killed (the churn was too short)")
	}
	if depth > 0 {
		problems = append(problems, fmt.Sprintf("%.0f notifications still in the outbox", depth))
	}
	for _, r := range replicas {
		for _, e := range r.unexpectedExits() {
			problems = append(problems, e)
		}
		if n := r.logCount(`"level":"error"`); n > 0 {
			fmt.Printf("clusterload: replica %d logged %d errors, e.g.: %s\n", r.idx, n, firstLine(r, `"level":"error"`))
		}
		if n := r.logCount("panic"); n > 0 {
			problems = append(problems, fmt.Sprintf("replica %d logged a panic: %s", r.idx, firstLine(r, "panic")))
		}
	}
	if len(problems) > 0 {
		var logs []string
		for _, r := range replicas {
			gen, _ := r.current()
			logs = append(logs, fmt.Sprintf("replica %d (last lines):\n%s", r.idx, r.logTail(gen, 5)))
		}
		return fmt.Errorf("%s\n%s", strings.Join(problems, "; "), strings.Join(logs, "\n"))
	}
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func firstLine(r *replica, sub string) string {
	r.mu.Lock()
	gens := r.gen
	r.mu.Unlock()
	for g := 1; g <= gens; g++ {
		for _, l := range r.logLines(g) {
			if strings.Contains(l, sub) {
				return l
			}
		}
	}
	return ""
}

// reapTime finds, in the survivors' logs, when one of them reaped a lapsed
// replica (the victim's first generation), and that replica's id.
func reapTime(rs []*replica, victim *replica) (time.Time, string) {
	var first time.Time
	var id string
	for _, r := range rs {
		r.mu.Lock()
		gens := r.gen
		r.mu.Unlock()
		for g := 1; g <= gens; g++ {
			if r == victim && g == 1 {
				continue
			}
			for _, line := range r.logLines(g) {
				if !strings.Contains(line, "lease lapsed; its connections were removed") {
					continue
				}
				ts := field(line, "ts")
				t, err := time.Parse("2006-01-02T15:04:05.000Z0700", ts)
				if err == nil && (first.IsZero() || t.Before(first)) {
					first, id = t, field(line, "replica")
				}
			}
		}
	}
	return first, id
}

// field returns a string field's value of a JSON log line (the last one of
// that name: a logger's own fields come first).
func field(line, name string) string {
	key := `"` + name + `":"`
	i := strings.LastIndex(line, key)
	if i < 0 {
		return ""
	}
	rest := line[i+len(key):]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return rest[:j]
}

// raiseFileLimit lifts the soft open-file limit to the hard one; the
// replicas and redis-server inherit it.
func raiseFileLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}
