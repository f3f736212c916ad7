package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// freeAddr returns a loopback address nobody listens on (now).
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// serve runs h on a loopback port.
func serve(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return ln.Addr().String(), nil
}

// dieWithUs makes a child get SIGKILL when this process dies.
func dieWithUs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// redisServer is the one redis-server of the run.
type redisServer struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
	out  *tailBuffer
}

func startRedis() (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server is not installed (apt-get install redis-server)")
	}
	var last error
	for range 5 { // a free port can be taken between the check and the start
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		_, port, _ := net.SplitHostPort(addr)
		r := &redisServer{addr: addr, done: make(chan struct{}), out: &tailBuffer{}}
		r.cmd = exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--maxclients", "10000", "--loglevel", "warning")
		r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
		dieWithUs(r.cmd)
		if err := r.cmd.Start(); err != nil {
			return nil, err
		}
		go func() { r.cmd.Wait(); close(r.done) }()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if redisPing(addr) == nil {
				return r, nil
			}
			select {
			case <-r.done:
				deadline = time.Time{}
			case <-time.After(20 * time.Millisecond):
			}
		}
		last = fmt.Errorf("redis-server on %s did not answer: %s", addr, r.out.String())
		r.stop()
	}
	return nil, last
}

func redisPing(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING: %q", line)
	}
	return nil
}

func (r *redisServer) stop() {
	r.cmd.Process.Kill()
	<-r.done
}

// tailBuffer keeps the last 4 KiB written to it.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = append([]byte(nil), t.b[len(t.b)-4096:]...)
	}
	t.mu.Unlock()
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// replica is one sidecar process slot: the same ports across a kill and a
// restart, a new process (and so a new replica id) each start.
type replica struct {
	idx         int
	bin         string
	env         []string
	addr, admin string
	logDir      string

	mu       sync.Mutex
	gen      int       // the generation running (or last run)
	cmd      *exec.Cmd // of gen
	done     chan struct{}
	killedAt []time.Time // per generation; zero if not killed
	expected bool        // an exit now is ours (kill or stop)
	exits    []string    // unexpected exits

	usage []procUsage // per generation, the last sample
}

func (r *replica) logPath(gen int) string {
	return filepath.Join(r.logDir, fmt.Sprintf("replica%d.%d.log", r.idx, gen))
}

// start runs a new generation and waits for it to be healthy.
func (r *replica) start() error {
	r.mu.Lock()
	r.gen++
	gen := r.gen
	r.killedAt = append(r.killedAt, time.Time{})
	r.usage = append(r.usage, procUsage{})
	r.expected = false
	logf, err := os.Create(r.logPath(gen))
	if err != nil {
		r.mu.Unlock()
		return err
	}
	cmd := exec.Command(r.bin)
	cmd.Env = r.env
	cmd.Stdout, cmd.Stderr = logf, logf
	dieWithUs(cmd)
	if err := cmd.Start(); err != nil {
		r.mu.Unlock()
		logf.Close()
		return err
	}
	done := make(chan struct{})
	r.cmd, r.done = cmd, done
	r.mu.Unlock()
	go func() {
		err := cmd.Wait()
		logf.Close()
		r.mu.Lock()
		if !r.expected {
			r.exits = append(r.exits, fmt.Sprintf("replica %d (generation %d) exited by itself: %v", r.idx, gen, err))
		}
		r.mu.Unlock()
		close(done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := admin.Get("http://" + r.admin + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-done:
			return fmt.Errorf("replica %d exited at start:\n%s", r.idx, r.logTail(gen, 20))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replica %d did not become healthy:\n%s", r.idx, r.logTail(gen, 20))
		}
	}
}

// current returns the running generation and whether it is alive.
func (r *replica) current() (gen int, alive bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gen, r.killedAt[r.gen-1].IsZero() && !r.expected
}

// killedAtGen returns when generation gen was killed (zero if it was not).
func (r *replica) killedAtGen(gen int) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.killedAt[gen-1]
}

// kill sends SIGKILL to the running generation and waits for its end; it
// returns the moment just before the signal.
func (r *replica) kill() time.Time {
	r.sample()
	r.mu.Lock()
	r.expected = true
	at := time.Now()
	r.killedAt[r.gen-1] = at
	r.cmd.Process.Kill()
	done := r.done
	r.mu.Unlock()
	<-done
	return at
}

func (r *replica) stop() {
	r.mu.Lock()
	r.expected = true
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

func (r *replica) unexpectedExits() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.exits...)
}

func (r *replica) logLines(gen int) []string {
	b, _ := os.ReadFile(r.logPath(gen))
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func (r *replica) logTail(gen, n int) string {
	l := r.logLines(gen)
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// logCount counts the lines of every generation's log containing sub.
func (r *replica) logCount(sub string) int {
	r.mu.Lock()
	gens := r.gen
	r.mu.Unlock()
	n := 0
	for g := 1; g <= gens; g++ {
		for _, l := range r.logLines(g) {
			if strings.Contains(l, sub) {
				n++
			}
		}
	}
	return n
}

// sample reads the running generation's /proc figures.
func (r *replica) sample() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil || r.cmd.Process == nil || !r.killedAt[r.gen-1].IsZero() {
		return
	}
	select {
	case <-r.done:
		return
	default:
	}
	u, err := readProc(r.cmd.Process.Pid)
	if err != nil {
		return
	}
	prev := r.usage[r.gen-1]
	u.peakFDs = max(u.fds, prev.peakFDs)
	r.usage[r.gen-1] = u
}

var admin = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// metrics reads a replica's /metrics into series → value.
func (r *replica) metrics() (map[string]float64, error) {
	resp, err := admin.Get("http://" + r.admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// sum adds the series of metric name whose labels contain every one of
// labels (e.g. `kind="replica"`).
func sum(m map[string]float64, name string, labels ...string) float64 {
	var s float64
next:
	for k, v := range m {
		base, rest, _ := strings.Cut(k, "{")
		if base != name {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				continue next
			}
		}
		s += v
	}
	return s
}

// procUsage is a process's figures from /proc.
type procUsage struct {
	cpu          time.Duration // user + system
	rss, peakRSS int64         // VmRSS, VmHWM
	fds, peakFDs int
	threads      int
}

const clockTicks = 100 // USER_HZ on Linux

func readProc(pid int) (procUsage, error) {
	var u procUsage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// The command may contain spaces: the fields follow its closing ')'.
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return u, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64) // field 14 of stat
	st, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	u.cpu = time.Duration(ut+st) * time.Second / clockTicks
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			u.rss = n << 10
		case "VmHWM":
			u.peakRSS = n << 10
		case "Threads":
			u.threads = int(n)
		}
	}
	if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		u.fds = len(fds)
		u.peakFDs = u.fds
	}
	return u, nil
}

// sampler samples the replicas' /proc figures every second until stopped.
func sampler(rs []*replica, stop <-chan struct{}, wg *sync.WaitGroup) {
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			for _, r := range rs {
				r.sample()
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	})
}

// peakGauge tracks a maximum.
type peakGauge struct{ cur, peak atomic.Int64 }

func (g *peakGauge) add(d int64) {
	v := g.cur.Add(d)
	for {
		p := g.peak.Load()
		if v <= p || g.peak.CompareAndSwap(p, v) {
			return
		}
	}
}
