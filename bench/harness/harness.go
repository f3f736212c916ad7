// Package harness compares presence-sidecar with nginx (and with no proxy at
// all) in one run: the same echo upstream, the same clients, the same
// machine, process against process.
//
// For every candidate and every repetition it starts a fresh proxy process,
// opens Config.Idle idle WebSocket connections through it and reads the
// proxy's resident memory before and after (bytes per idle connection), then,
// for each of Config.Workloads (message size, permessage-deflate or not),
// runs Config.Clients closed-loop clients echoing text messages for
// Config.Duration (round trips per second, p50 and p99 latency, proxy CPU),
// then measures handshakes per second, each a new session. Repetitions are
// interleaved so that drift on the machine hits every candidate alike, and
// the report quotes medians with min–max.
package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Candidate names, in the order of the report.
const (
	Direct          = "direct"
	Nginx           = "nginx"
	HAProxy         = "haproxy"
	Sidecar         = "sidecar"
	SidecarPresence = "sidecar-presence"
)

// AllCandidates lists every candidate name.
var AllCandidates = []string{Direct, Nginx, HAProxy, Sidecar, SidecarPresence}

var labels = map[string]string{
	Direct:          "direct to upstream (no proxy)",
	Nginx:           "nginx, 1 worker",
	HAProxy:         "HAProxy, 1 thread",
	Sidecar:         "presence-sidecar, presence off",
	SidecarPresence: "presence-sidecar, presence on",
}

// Config is one benchmark run.
type Config struct {
	Idle       int           // N: idle connections per candidate
	Clients    int           // M: concurrent echo clients
	Duration   time.Duration // D: measured echo time, per workload
	Warmup     time.Duration // echo time before the measurement starts; <0: none, 0: min(D/10, 1s)
	Reps       int           // R: repetitions of every candidate, interleaved
	Workloads  []Workload    // echo workloads, each measured in every run; empty: DefaultWorkloads
	Only       []string      // candidates to run; empty: all
	RepoDir    string        // root of the presence-sidecar module; empty: found upwards from the working directory
	SidecarBin string        // a prebuilt presence-sidecar binary; empty: built from RepoDir
	NginxBin   string        // empty: nginx on PATH, else /usr/sbin/nginx
	HAProxyBin string        // empty: haproxy on PATH, else /usr/sbin/haproxy
	GoMaxProcs int           // GOMAXPROCS for the sidecar process; 0: the Go default
	SidecarEnv []string      // extra KEY=VALUE for the sidecar processes (GOGC=50, PROBE_INTERVAL=0, …)
	Diag       bool          // after the runs, look inside the sidecar processes (goroutines, heap)
	Hold       time.Duration // keep the idle connections this long (answering pings) and measure again; 0: not
	ProfileDir string        // with Diag: write the sidecar's heap and CPU profiles here (profile.go); empty: none
	Log        io.Writer     // progress lines; nil: discarded
}

func (c *Config) defaults() error {
	if c.Idle <= 0 {
		c.Idle = 3000
	}
	if c.Clients <= 0 {
		c.Clients = 50
	}
	if c.Duration <= 0 {
		c.Duration = 3 * time.Second
	}
	if c.Warmup == 0 {
		c.Warmup = min(c.Duration/10, time.Second)
	} else if c.Warmup < 0 {
		c.Warmup = 0
	}
	if c.Reps <= 0 {
		c.Reps = 3
	}
	if len(c.Workloads) == 0 {
		c.Workloads = DefaultWorkloads
	}
	for _, w := range c.Workloads {
		if w.Size < minMsgSize {
			return fmt.Errorf("message size %d: want at least %d bytes (it carries a JSON envelope)", w.Size, minMsgSize)
		}
	}
	if len(c.Only) == 0 {
		c.Only = AllCandidates
	}
	for _, n := range c.Only {
		if !slices.Contains(AllCandidates, n) {
			return fmt.Errorf("unknown candidate %q: want some of %s", n, strings.Join(AllCandidates, ", "))
		}
	}
	// Keep the report's order whatever order -only gave.
	var ordered []string
	for _, n := range AllCandidates {
		if slices.Contains(c.Only, n) {
			ordered = append(ordered, n)
		}
	}
	c.Only = ordered
	if c.Log == nil {
		c.Log = io.Discard
	}
	return nil
}

func (c *Config) wants(name string) bool { return slices.Contains(c.Only, name) }

// Sample is what one run of one candidate measured.
type Sample struct {
	RSSBefore, RSSAfter int64   // proxy resident memory, bytes, before and after the idle connections
	MemPerConn          float64 // (RSSAfter-RSSBefore)/Idle, bytes
	MemPerConnHeld      float64 // the same after holding them Config.Hold
	Echo                []Echo  // one per Config.Workloads, in that order
	HandshakesPerSec    float64 // new connections (each a new session) per second
	CPUPerHandshake     float64 // proxy CPU per handshake, seconds
}

// Result is one candidate's samples.
type Result struct {
	Name, Label string
	Proxy       bool // false for direct: no proxy process to measure
	Samples     []Sample
}

// Report is a whole run.
type Report struct {
	Config    Config
	Env       Environment
	Results   []*Result
	Diagnoses []Diagnosis
	Elapsed   time.Duration
}

// Environment describes the machine and the versions under test.
type Environment struct {
	CPUs           int
	Kernel         string
	GoVersion      string
	NginxVersion   string
	HAProxyVersion string
	SidecarRev     string
}

// Run runs the benchmark. ctx cancels it (every process it started is stopped).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	begin := time.Now()
	// Each process has its own limit; the proxy, holding two sockets per
	// connection, needs the most.
	if err := raiseFileLimit(2*cfg.Idle + 2*cfg.Clients + 1024); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "wsbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	r := &runner{cfg: cfg, tmp: tmp, log: cfg.Log}
	rep := &Report{Config: cfg, Env: environment()}

	if cfg.wants(Nginx) {
		if r.nginxBin, err = findNginx(cfg.NginxBin); err != nil {
			return nil, err
		}
		rep.Env.NginxVersion = nginxVersion(r.nginxBin)
	}
	if cfg.wants(HAProxy) {
		if r.haproxyBin, err = findHAProxy(cfg.HAProxyBin); err != nil {
			return nil, err
		}
		rep.Env.HAProxyVersion = haproxyVersion(r.haproxyBin)
	}
	if cfg.wants(Sidecar) || cfg.wants(SidecarPresence) {
		if r.sidecarBin, rep.Env.SidecarRev, err = sidecarBinary(ctx, cfg, tmp, r.log); err != nil {
			return nil, err
		}
	}

	up, err := startUpstream(ctx, tmp)
	if err != nil {
		return nil, err
	}
	defer up.stop()
	r.upstream = up
	fmt.Fprintf(r.log, "echo upstream on %s (pid %d)\n", up.addr, up.cmd.Process.Pid)

	if cfg.wants(SidecarPresence) {
		// The human-service platform the presence candidate would notify.
		// Sessions are never handed over here, so nothing arrives; it is
		// there because PRESENCE_ENABLED needs a HANDOFF_URL.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusNoContent)
		})}
		go srv.Serve(ln)
		defer srv.Close()
		r.handoffURL = "http://" + ln.Addr().String()
	}

	for _, name := range cfg.Only {
		rep.Results = append(rep.Results, &Result{Name: name, Label: labels[name], Proxy: name != Direct})
	}
	for i := range cfg.Reps {
		// Interleave, and rotate the order so no candidate always goes first.
		for j := range rep.Results {
			res := rep.Results[(i+j)%len(rep.Results)]
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			s, err := r.runOnce(ctx, res.Name, i)
			if err != nil {
				return nil, fmt.Errorf("%s, repetition %d: %w", res.Name, i+1, err)
			}
			res.Samples = append(res.Samples, s)
			logSample(r.log, i, cfg, res, s)
		}
	}
	if cfg.Diag {
		for _, name := range []string{Sidecar, SidecarPresence} {
			if !cfg.wants(name) {
				continue
			}
			d, err := r.diagnose(ctx, name)
			if err != nil {
				return nil, fmt.Errorf("diagnosis of %s: %w", name, err)
			}
			rep.Diagnoses = append(rep.Diagnoses, d)
		}
	}
	rep.Elapsed = time.Since(begin)
	return rep, nil
}

type runner struct {
	cfg        Config
	tmp        string
	log        io.Writer
	upstream   *upstreamProc
	nginxBin   string
	haproxyBin string
	sidecarBin string
	handoffURL string
}

// runOnce starts a fresh proxy for one candidate, measures it and stops it.
func (r *runner) runOnce(ctx context.Context, name string, rep int) (Sample, error) {
	var s Sample
	if err := r.upstream.waitIdle(ctx, 10*time.Second); err != nil {
		return s, err
	}
	p, err := r.start(ctx, name, fmt.Sprintf("%s-%d", name, rep), nil)
	if err != nil {
		return s, err
	}
	defer p.stop()
	tag := fmt.Sprintf("%s-%d", name, rep)

	// Idle connections: memory.
	if err := warmUp(ctx, p.url()); err != nil {
		return s, p.failed(err)
	}
	time.Sleep(200 * time.Millisecond)
	if s.RSSBefore, err = p.rss(); err != nil {
		return s, err
	}
	conns, err := openIdle(ctx, p.url(), tag, r.cfg.Idle)
	defer closeAll(conns) // on the way out early; closing twice is harmless
	if err != nil {
		return s, p.failed(err)
	}
	if s.RSSAfter, err = settledRSS(p); err != nil {
		return s, err
	}
	if p.measured() {
		s.MemPerConn = float64(s.RSSAfter-s.RSSBefore) / float64(len(conns))
	}
	if err := p.verifySidecar(tag, len(conns)); err != nil {
		return s, p.failed(err)
	}
	if r.cfg.Hold > 0 {
		if err := holdIdle(ctx, conns, r.cfg.Hold); err != nil {
			return s, p.failed(err)
		}
		held, err := p.rss()
		if err != nil {
			return s, err
		}
		if p.measured() {
			s.MemPerConnHeld = float64(held-s.RSSBefore) / float64(len(conns))
		}
	}
	closeAll(conns)
	if err := r.upstream.waitIdle(ctx, 10*time.Second); err != nil {
		return s, p.failed(err)
	}

	// Echo, each workload in turn on fresh connections: throughput,
	// latency, CPU.
	for _, w := range r.cfg.Workloads {
		e, err := runEcho(ctx, p, r.upstream, tag, r.cfg, w)
		if err != nil {
			return s, p.failed(fmt.Errorf("echo %s: %w", w, err))
		}
		s.Echo = append(s.Echo, e)
		if err := r.upstream.waitIdle(ctx, 10*time.Second); err != nil {
			return s, p.failed(err)
		}
	}
	// Handshakes: new connections per second, each a new session.
	if s.HandshakesPerSec, s.CPUPerHandshake, err = runHandshakes(ctx, p, tag, handshakeTime(r.cfg)); err != nil {
		return s, p.failed(err)
	}
	if err := p.stop(); err != nil {
		return s, err
	}
	return s, nil
}

// handshakeTime is how long the handshake rate is measured: long enough for
// thousands of handshakes, short enough not to fill the presence store.
func handshakeTime(c Config) time.Duration { return min(c.Duration, 2*time.Second) }

// raiseFileLimit lifts RLIMIT_NOFILE for this process and, by inheritance,
// for the upstream, nginx and the sidecar.
func raiseFileLimit(want int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= uint64(want) {
		return nil
	}
	if lim.Max < uint64(want) {
		// Root may raise the hard limit up to fs.nr_open.
		raised := lim
		raised.Max, raised.Cur = uint64(want), uint64(want)
		if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
			var nrOpen uint64
			if _, err := fmt.Sscan(string(b), &nrOpen); err == nil && nrOpen < raised.Max {
				raised.Max, raised.Cur = nrOpen, nrOpen
			}
		}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
			lim = raised
		}
	}
	lim.Cur = min(lim.Max, uint64(want))
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raising the open-file limit: %w", err)
	}
	if lim.Cur < uint64(want) {
		return fmt.Errorf("open-file limit is %d but %d idle connections need about %d (raise the hard limit, or lower -n)", lim.Cur, (want-1024)/2, want)
	}
	return nil
}

// FindRepo walks up from dir to the presence-sidecar module root.
func FindRepo(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && modulePath(string(b)) == "github.com/presence-sidecar/presence-sidecar" {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("presence-sidecar module not found above " + dir + " (give -repo or -sidecar)")
		}
	}
}

func modulePath(gomod string) string {
	for _, line := range strings.Split(gomod, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// logSample prints one run's figures as progress.
func logSample(log io.Writer, i int, cfg Config, res *Result, s Sample) {
	mem := "no proxy"
	if res.Proxy {
		mem = fmt.Sprintf("%.1f KiB/conn (RSS %.1f→%.1f MiB)", s.MemPerConn/1024, float64(s.RSSBefore)/(1<<20), float64(s.RSSAfter)/(1<<20))
		if cfg.Hold > 0 {
			mem += fmt.Sprintf(", %.1f KiB/conn after %s", s.MemPerConnHeld/1024, cfg.Hold)
		}
	}
	fmt.Fprintf(log, "[%d/%d] %-17s %s, %.0f handshakes/s\n", i+1, cfg.Reps, res.Name, mem, s.HandshakesPerSec)
	for k, e := range s.Echo {
		fmt.Fprintf(log, "      %-17s %-15s %.0f msgs/s, p50 %s, p99 %s, max %s, proxy CPU %.2f, other load %.2f cores\n",
			"", cfg.Workloads[k].String()+":", e.MsgsPerSec, fmtDur(e.P50), fmtDur(e.P99), fmtDur(e.Max), e.CPU, e.Foreign)
	}
}

func fmtDur(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms >= 100:
		return fmt.Sprintf("%.0f ms", ms)
	case ms >= 10:
		return fmt.Sprintf("%.1f ms", ms)
	}
	return fmt.Sprintf("%.2f ms", ms)
}
