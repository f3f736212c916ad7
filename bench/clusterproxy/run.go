package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/presence-sidecar/presence-sidecar/bench/harness"
)

// Config is one measurement.
type Config struct {
	Outage   time.Duration // Redis down this long
	Baseline time.Duration // measured with Redis up before; 0: Outage
	Warmup   time.Duration // connects before the baseline, not counted; 0: 2 s
	Margin   time.Duration // the phase after lasts Lease + Interval + Margin
	Drain    time.Duration // after the load, at most this long for the outbox to empty; 0: 40 s
	Held     int           // sessions held connected the whole run
	Rate     float64       // connects a second
	Reps     int
	Down     string // DownRestart, DownEmpty, DownPause
	Lease    time.Duration
	Interval time.Duration

	SidecarBin, RepoDir, RedisBin string
	SidecarEnv                    []string
	Log                           io.Writer
}

func (c *Config) defaults() error {
	if c.Outage <= 0 {
		c.Outage = 60 * time.Second
	}
	if c.Baseline <= 0 {
		c.Baseline = c.Outage
	}
	if c.Warmup <= 0 {
		c.Warmup = 2 * time.Second
	}
	if c.Margin < 0 {
		c.Margin = 0
	}
	if c.Drain <= 0 {
		c.Drain = 40 * time.Second
	}
	if c.Held <= 0 {
		c.Held = 2000
	}
	if c.Rate <= 0 {
		c.Rate = 100
	}
	if c.Reps <= 0 {
		c.Reps = 1
	}
	if c.Down == "" {
		c.Down = DownRestart
	}
	if !slices.Contains([]string{DownRestart, DownEmpty, DownPause}, c.Down) {
		return fmt.Errorf("-down %q: want restart, empty or pause", c.Down)
	}
	if c.Lease <= 0 {
		c.Lease = 5 * time.Second
	}
	if c.Interval <= 0 {
		c.Interval = 5 * time.Second
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return nil
}

func (c *Config) after() time.Duration { return c.Lease + c.Interval + c.Margin }

func (c *Config) logf(format string, a ...any) {
	fmt.Fprintf(c.Log, "clusterproxy: "+format+"\n", a...)
}

// Phases of a run, in order.
const (
	phaseBase = "up"
	phaseDown = "down"
	phaseBack = "back"
)

var phases = []string{phaseBase, phaseDown, phaseBack}

// Figures of one run: name → value (durations in ms).
type Figures map[string]float64

// Detail is what a run saw beyond figures: the first errors and the
// replicas' warnings.
type Detail struct {
	Errors   []string
	Logs     map[string]int // "level: msg" → lines, both replicas
	Foreign  []string
	RedisUp  time.Duration // from the restart to PING answered
	LateWake int64
}

// Report is every run's figures.
type Report struct {
	Config  Config
	Runs    []Figures
	Details []Detail
	Redis   string
	Rev     string
	Repo    string
	Started time.Time
}

// Run measures cfg.Reps times, each with fresh processes.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	raiseFileLimit()
	rep := &Report{Config: cfg, Started: time.Now(), Redis: redisVersion(cfg.RedisBin)}
	tmp, err := os.MkdirTemp("", "clusterproxy-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	repo := cfg.RepoDir
	if repo == "" {
		wd, _ := os.Getwd()
		if repo, err = harness.FindRepo(wd); err != nil && cfg.SidecarBin == "" {
			return nil, err
		}
	}
	rep.Repo = repo
	rep.Rev = gitRev(repo)
	bin := cfg.SidecarBin
	if bin == "" {
		bin = filepath.Join(tmp, "presence-sidecar")
		cfg.logf("building presence-sidecar from %s …", repo)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/presence-sidecar")
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build ./cmd/presence-sidecar in %s: %w\n%s", repo, err, out)
		}
	}
	for r := range cfg.Reps {
		cfg.logf("run %d of %d", r+1, cfg.Reps)
		dir := filepath.Join(tmp, fmt.Sprintf("run%d", r+1))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		f, det, err := cfg.once(ctx, bin, dir, r+1)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", r+1, err)
		}
		rep.Runs = append(rep.Runs, f)
		rep.Details = append(rep.Details, det)
	}
	return rep, nil
}

func (c *Config) once(ctx context.Context, bin, dir string, run int) (Figures, Detail, error) {
	f := Figures{}
	det := Detail{Logs: map[string]int{}}
	rs, err := startRedis(c.RedisBin, dir)
	if err != nil {
		return nil, det, err
	}
	defer rs.stop()
	up, err := startUpstream(dir)
	if err != nil {
		return nil, det, err
	}
	defer up.stop()
	tag := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	heldPrefix := fmt.Sprintf("cp%d-%s-held-", run, tag)
	shortPrefix := fmt.Sprintf("cp%d-%s-c-", run, tag)
	rcv, err := startReceiver(heldPrefix, shortPrefix)
	if err != nil {
		return nil, det, err
	}
	defer rcv.close()

	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"UPSTREAM_URL=http://" + up.addr,
		"HANDOFF_URL=http://" + rcv.addr,
		"REDIS_URL=redis://" + rs.addr,
		"REDIS_LEASE_TTL=" + c.Lease.String(),
		"PRESENCE_ENABLED=true",
		"PRESENCE_ALLOW_ANY_INTERVAL=true",
		"PRESENCE_CHECK_INTERVAL=" + c.Interval.String(),
		"HANDOFF_DETECT=always",
		"ADMIN_TOKEN=" + adminToken,
		"LOG_LEVEL=warn",
		"SHUTDOWN_GRACE=1s",
	}
	env = append(env, c.SidecarEnv...)
	var reps []*sidecar
	defer func() {
		var wg sync.WaitGroup
		for _, s := range reps {
			wg.Go(s.stop)
		}
		wg.Wait()
	}()
	for i := range 2 {
		s, err := startSidecar(ctx, bin, dir, i, env)
		if err != nil {
			return nil, det, err
		}
		reps = append(reps, s)
	}
	urls := []string{reps[0].url(), reps[1].url()}

	c.logf("opening %d held sessions over 2 replicas", c.Held)
	h, err := openHeld(ctx, urls, heldPrefix, c.Held)
	if err != nil {
		return nil, det, err
	}
	defer h.close()
	// Every held session known to Redis, present, before anything else.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := checkHeld(reps[0], h)
		if st.present == c.Held || time.Now().After(deadline) {
			f["held.before.present"] = float64(st.present)
			if st.present != c.Held {
				det.Errors = append(det.Errors, fmt.Sprintf("before the outage only %d of %d held sessions were present in Redis (%s)", st.present, c.Held, st.first))
			}
			break
		}
		time.Sleep(500 * time.Millisecond)
	}

	// The load, and the outage in its middle.
	load := &connectLoad{rate: c.Rate, urls: urls, prefix: shortPrefix}
	t0 := time.Now()
	baseAt := t0.Add(c.Warmup)
	downAt := baseAt.Add(c.Baseline)
	upAt := downAt.Add(c.Outage) // corrected to the real moments below
	endAt := upAt.Add(c.after())
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var loadWG sync.WaitGroup
	loadWG.Go(func() { load.run(loadCtx, t0) }) // until load.end is set, once Redis is back
	sampler := newSampler(reps)
	sampler.start()
	defer sampler.stop()

	c.logf("load: %.0f connects/s; baseline %v from +%v", c.Rate, c.Baseline, c.Warmup)
	if !sleepUntil(ctx, downAt) {
		return nil, det, ctx.Err()
	}
	downAt = time.Now()
	c.logf("Redis down (%s) for %v", c.Down, c.Outage)
	if err := rs.down(c.Down); err != nil {
		det.Errors = append(det.Errors, err.Error())
	}
	if !sleepUntil(ctx, downAt.Add(c.Outage)) {
		return nil, det, ctx.Err()
	}
	upAt = time.Now()
	if err := rs.up(c.Down); err != nil {
		return nil, det, fmt.Errorf("bringing Redis back: %w", err)
	}
	det.RedisUp = time.Since(upAt)
	c.logf("Redis back after %.1f s (answering %v after the restart); measuring %v more", upAt.Sub(downAt).Seconds(), det.RedisUp.Round(time.Millisecond), c.after())
	endAt = upAt.Add(c.after())
	load.end.Store(endAt.UnixNano())
	loadWG.Wait()
	load.wait()
	stopLoad()
	sampler.stop()

	// Let the outbox drain (the deliverer backs off while Redis is away, up
	// to 30 s), so that every /expire decided reaches the receiver.
	c.logf("load done; waiting for the outbox to empty (at most %v)", c.Drain)
	drainBy := time.Now().Add(c.Drain)
	depth := -1.0
	for time.Now().Before(drainBy) {
		if m, err := reps[0].metrics(); err == nil {
			depth = sumMetric(m, "presence_sidecar_outbox_depth")
			if depth == 0 {
				break
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	f["outbox.depth.end"] = depth
	time.Sleep(time.Second)

	// The held sessions: still connected, still echoing, still present in
	// Redis with no absence episode.
	fails, firstFail := h.echoAll()
	f["held.echo.failed"] = float64(fails)
	if firstFail != nil {
		det.Errors = append(det.Errors, firstFail.Error())
	}
	f["held.ended"] = float64(h.endedN.Load())
	if m := h.firstErr.Load(); m != nil {
		det.Errors = append(det.Errors, fmt.Sprintf("at +%.1f s: %s", time.Unix(0, h.firstAt.Load()).Sub(t0).Seconds(), *m))
	}
	st := checkHeld(reps[0], h)
	f["held.after.present"] = float64(st.present)
	f["held.after.decided"] = float64(st.decided)
	if st.first != "" {
		det.Errors = append(det.Errors, "after: "+st.first)
	}
	rc := rcv.counts()
	f["expire.held"] = float64(rc.heldExpire)
	f["expire.held.sessions"] = float64(rc.heldExpireSessions)
	f["message.held"] = float64(rc.heldMsg)
	f["expire.short"] = float64(rc.shortExpire)
	f["expire.short.sessions"] = float64(rc.shortSessions)
	f["expire.short.dup"] = float64(rc.shortDup)
	f["message.short"] = float64(rc.shortMsg)
	f["redeliveries"] = float64(rc.redeliveries)
	f["foreign"] = float64(len(rc.foreign))
	det.Foreign = rc.foreign
	if !rc.firstFalse.IsZero() {
		det.Errors = append(det.Errors, fmt.Sprintf("first false notification for a held session at +%.1f s (Redis back at +%.1f s)",
			rc.firstFalse.Sub(t0).Seconds(), upAt.Sub(t0).Seconds()))
	}

	// The connects, by phase.
	phaseOf := func(at time.Time) string {
		switch {
		case at.Before(baseAt):
			return ""
		case at.Before(downAt):
			return phaseBase
		case at.Before(upAt):
			return phaseDown
		case at.Before(endAt):
			return phaseBack
		}
		return ""
	}
	lat := map[string][]time.Duration{}
	f["short.total"] = float64(len(load.samples))
	for _, p := range phases {
		f["n."+p], f["err."+p] = 0, 0
	}
	for _, s := range load.samples {
		p := phaseOf(s.at)
		if p == "" {
			continue
		}
		f["n."+p]++
		if s.kind != "" {
			f["err."+p]++
			f["err."+p+"."+s.kind]++
			if len(det.Errors) < 12 {
				det.Errors = append(det.Errors, fmt.Sprintf("connect at +%.3f s (%s): %v", s.at.Sub(t0).Seconds(), p, s.err))
			}
			continue
		}
		lat[p] = append(lat[p], s.lat)
	}
	for _, p := range phases {
		l := lat[p]
		slices.Sort(l)
		f["len."+p] = phaseLen(p, baseAt, downAt, upAt, endAt).Seconds()
		if len(l) == 0 {
			continue
		}
		f["p50."+p] = ms(percentile(l, 0.50))
		f["p90."+p] = ms(percentile(l, 0.90))
		f["p99."+p] = ms(percentile(l, 0.99))
		f["p999."+p] = ms(percentile(l, 0.999))
		f["max."+p] = ms(l[len(l)-1])
	}
	det.LateWake = load.late.Load()
	f["late.max"] = ms(time.Duration(load.maxLate.Load()))

	// The replicas' side.
	for _, s := range reps {
		m, err := s.metrics()
		if err != nil {
			det.Errors = append(det.Errors, fmt.Sprintf("replica %d /metrics: %v", s.idx, err))
			continue
		}
		f["reasserts"] += sumMetric(m, "presence_sidecar_reasserts_total")
		f["upgrades"] += sumMetric(m, "presence_sidecar_upgrades_total")
		f["upstream.errors"] += sumMetric(m, "presence_sidecar_upstream_errors_total")
		f["rejected"] += sumMetric(m, "presence_sidecar_rejected_total")
		f["redis.up.end"] += sumMetric(m, "presence_sidecar_redis_up")
	}
	f["ledger.peak"] = sampler.peak("presence_sidecar_ledger_pending")
	if v := sampler.minDuring("presence_sidecar_redis_up", downAt, upAt); v >= 0 {
		f["redis.up.min.down"] = v
	}
	for _, s := range reps {
		select {
		case <-s.done:
			if s.exited {
				det.Errors = append(det.Errors, fmt.Sprintf("replica %d exited by itself: %s", s.idx, s.logTail(1500)))
				f["replica.exits"]++
			}
		default:
		}
		s.logSummary(det.Logs)
	}
	return f, det, nil
}

func phaseLen(p string, baseAt, downAt, upAt, endAt time.Time) time.Duration {
	switch p {
	case phaseBase:
		return downAt.Sub(baseAt)
	case phaseDown:
		return upAt.Sub(downAt)
	}
	return endAt.Sub(upAt)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile of a sorted sample (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Until(t)):
		return true
	}
}

type heldState struct {
	present, decided int
	first            string
}

// checkHeld reads every held session from Redis through a replica's admin
// API: present with a connection and no absence episode, or not.
func checkHeld(s *sidecar, h *held) heldState {
	var st heldState
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, hc := range h.conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			v, code, err := s.session(hc.session)
			mu.Lock()
			defer mu.Unlock()
			ok := err == nil && code == 200 && v.State == "present" && v.Connections >= 1 && v.Episode == 0
			if ok {
				st.present++
			}
			if err == nil && code == 200 && (v.Episode > 0 || v.State != "present") {
				st.decided++
			}
			if !ok && st.first == "" {
				st.first = fmt.Sprintf("held session %s: HTTP %d, %+v, %v", hc.session, code, v, err)
			}
		})
	}
	wg.Wait()
	return st
}

// sampler reads both replicas' gauges every second.
type sampler struct {
	reps []*sidecar
	mu   sync.Mutex
	pts  []point
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

type point struct {
	at time.Time
	m  map[string]float64 // summed over the replicas
}

func newSampler(reps []*sidecar) *sampler { return &sampler{reps: reps, done: make(chan struct{})} }

func (s *sampler) start() {
	s.wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-t.C:
			}
			p := point{at: time.Now(), m: map[string]float64{}}
			for _, r := range s.reps {
				if m, err := r.metrics(); err == nil {
					for _, k := range []string{"presence_sidecar_ledger_pending", "presence_sidecar_redis_up"} {
						p.m[k] += sumMetric(m, k)
					}
				}
			}
			s.mu.Lock()
			s.pts = append(s.pts, p)
			s.mu.Unlock()
		}
	})
}

func (s *sampler) stop() { s.once.Do(func() { close(s.done) }); s.wg.Wait() }

func (s *sampler) peak(k string) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := 0.0
	for _, p := range s.pts {
		v = max(v, p.m[k])
	}
	return v
}

func (s *sampler) minDuring(k string, from, to time.Time) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := -1.0
	for _, p := range s.pts {
		if p.at.After(from.Add(3*time.Second)) && p.at.Before(to) {
			if x := p.m[k]; v < 0 || x < v {
				v = x
			}
		}
	}
	return v
}

// raiseFileLimit lifts the soft open-file limit to the hard one: this
// process holds one socket per held session, each replica two, the
// upstream one (children inherit the limit).
func raiseFileLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

// gitRev names the revision under test from .git's files (HEAD, the ref
// it points to, or packed-refs), without running git.
func gitRev(repo string) string {
	if repo == "" {
		return ""
	}
	head, err := os.ReadFile(filepath.Join(repo, ".git", "HEAD"))
	if err != nil {
		return ""
	}
	h := strings.TrimSpace(string(head))
	if ref, ok := strings.CutPrefix(h, "ref: "); ok {
		h = ""
		if b, err := os.ReadFile(filepath.Join(repo, ".git", ref)); err == nil {
			h = strings.TrimSpace(string(b))
		} else if b, err := os.ReadFile(filepath.Join(repo, ".git", "packed-refs")); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if f := strings.Fields(line); len(f) == 2 && f[1] == ref {
					h = f[0]
				}
			}
		}
	}
	if len(h) >= 7 {
		return h[:7]
	}
	return h
}
