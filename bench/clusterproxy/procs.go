package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// How Redis goes away (-down).
const (
	DownRestart = "restart" // SIGTERM (a clean shutdown writes the AOF), then a new redis-server on the same port and dir
	DownEmpty   = "empty"   // SIGKILL, the dir emptied, then a new redis-server: Redis back without its data
	DownPause   = "pause"   // SIGSTOP … SIGCONT: Redis hangs (calls time out) rather than refuses
)

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func dieWithUs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// redisServer is the run's redis-server: one port and one dir, across a
// restart.
type redisServer struct {
	bin, addr, dir string
	cmd            *exec.Cmd
	done           chan struct{}
	gen            int
}

func redisBinary(bin string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	for _, p := range []string{"redis-server", "/usr/bin/redis-server", "/usr/sbin/redis-server"} {
		if path, err := exec.LookPath(p); err == nil {
			return path, nil
		}
	}
	return "", errors.New("redis-server is not installed (apt-get install -y redis-server), or pass -redis PATH")
}

func startRedis(bin, dir string) (*redisServer, error) {
	bin, err := redisBinary(bin)
	if err != nil {
		return nil, err
	}
	var last error
	for range 5 { // the free port may be taken between the check and the bind
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		r := &redisServer{bin: bin, addr: addr, dir: dir}
		if last = r.start(); last == nil {
			return r, nil
		}
	}
	return nil, last
}

// start runs redis-server with an append-only file (fsync every second, and
// at a clean shutdown), so that a restart finds the sessions again; no RDB
// snapshots, so that no fork lands in a measurement.
func (r *redisServer) start() error {
	r.gen++
	_, port, _ := net.SplitHostPort(r.addr)
	logPath := filepath.Join(r.dir, fmt.Sprintf("redis.%d.log", r.gen))
	cmd := exec.Command(r.bin, "--port", port, "--bind", "127.0.0.1", "--dir", r.dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
		"--maxclients", "10000", "--maxmemory-policy", "noeviction", "--daemonize", "no", "--logfile", logPath)
	dieWithUs(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	r.cmd, r.done = cmd, make(chan struct{})
	done := r.done
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if redisPing(r.addr) == nil {
			return nil
		}
		select {
		case <-done:
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("redis-server on %s exited at start: %s", r.addr, tail(b, 1500))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("redis-server on %s did not answer PING: %s", r.addr, tail(b, 1500))
		}
	}
}

// down takes Redis away as mode says.
func (r *redisServer) down(mode string) error {
	switch mode {
	case DownPause:
		return r.cmd.Process.Signal(syscall.SIGSTOP)
	case DownEmpty:
		r.cmd.Process.Kill()
		<-r.done
		for _, pat := range []string{"appendonlydir", "*.aof", "*.rdb"} {
			m, _ := filepath.Glob(filepath.Join(r.dir, pat))
			for _, p := range m {
				os.RemoveAll(p)
			}
		}
		return nil
	default:
		r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
			return nil
		case <-time.After(10 * time.Second):
			r.cmd.Process.Kill()
			<-r.done
			return errors.New("redis-server did not stop within 10 s of SIGTERM; killed (its last second of writes may be lost)")
		}
	}
}

// up brings Redis back; it returns when it answers PING.
func (r *redisServer) up(mode string) error {
	if mode == DownPause {
		return r.cmd.Process.Signal(syscall.SIGCONT)
	}
	return r.start()
}

func (r *redisServer) stop() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGCONT)
	r.cmd.Process.Kill()
	<-r.done
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
		return fmt.Errorf("PING: %q", strings.TrimSpace(line)) // e.g. -LOADING
	}
	return nil
}

func redisVersion(bin string) string {
	bin, err := redisBinary(bin)
	if err != nil {
		return "?"
	}
	out, _ := exec.Command(bin, "--version").Output()
	for _, f := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			return v
		}
	}
	return strings.TrimSpace(string(out))
}

// upstreamProc is the echo upstream: this binary re-executed as
// harness.MaybeRunChild's echo server (the same one bench/cmd/wsbench uses).
// It prints its address and exits when its stdin closes.
type upstreamProc struct {
	addr  string
	cmd   *exec.Cmd
	stdin io.Closer
}

// harnessRoleEnv is harness.roleEnv (unexported there): the variable that
// makes harness.MaybeRunChild serve the echo upstream.
const harnessRoleEnv = "WSBENCH_ROLE"

func startUpstream(dir string) (*upstreamProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), harnessRoleEnv+"=echo-upstream")
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	dieWithUs(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the echo upstream: %w", err)
	}
	u := &upstreamProc{cmd: cmd, stdin: stdin}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case u.addr = <-line:
	case <-time.After(10 * time.Second):
	}
	if _, _, err := net.SplitHostPort(u.addr); err != nil {
		u.stop()
		return nil, fmt.Errorf("the echo upstream did not report its address (got %q)", u.addr)
	}
	return u, nil
}

func (u *upstreamProc) stop() {
	u.stdin.Close()
	done := make(chan struct{})
	go func() { u.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		u.cmd.Process.Kill()
		<-done
	}
}

// sidecar is one replica.
type sidecar struct {
	idx         int
	addr, admin string
	logPath     string
	cmd         *exec.Cmd
	done        chan struct{}
	exited      bool // by itself; read once done is closed
	stopping    atomic.Bool
}

const adminToken = "clusterproxy"

var adminClient = &http.Client{Timeout: 10 * time.Second}

func startSidecar(ctx context.Context, bin, dir string, idx int, env []string) (*sidecar, error) {
	s := &sidecar{idx: idx}
	var err error
	if s.addr, err = freeAddr(); err != nil {
		return nil, err
	}
	if s.admin, err = freeAddr(); err != nil {
		return nil, err
	}
	home := filepath.Join(dir, fmt.Sprintf("replica%d", idx))
	if err := os.MkdirAll(home, 0o755); err != nil {
		return nil, err
	}
	s.logPath = filepath.Join(home, "stderr.log")
	logf, err := os.Create(s.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin)
	cmd.Env = append([]string{"HOME=" + home, "DATA_DIR=" + filepath.Join(home, "data"),
		"LISTEN_ADDR=" + s.addr, "ADMIN_ADDR=" + s.admin}, env...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = home, logf, logf
	dieWithUs(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting replica %d: %w", idx, err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); s.exited = !s.stopping.Load(); close(s.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		// Ready: listening, and connected to Redis.
		if m, err := s.metrics(); err == nil && m["presence_sidecar_redis_up"] == 1 {
			if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
				c.Close()
				return s, nil
			}
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("replica %d exited at start: %s", idx, s.logTail(2000))
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("replica %d not ready (listening, presence_sidecar_redis_up 1) after 20 s: %s", idx, s.logTail(2000))
		}
	}
}

func (s *sidecar) url() string { return "ws://" + s.addr + "/ws" }

func (s *sidecar) stop() {
	if s.cmd == nil {
		return
	}
	s.stopping.Store(true)
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

func (s *sidecar) logTail(n int) string {
	b, _ := os.ReadFile(s.logPath)
	return tail(b, n)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// metrics reads /metrics into series → value.
func (s *sidecar) metrics() (map[string]float64, error) {
	resp, err := adminClient.Get("http://" + s.admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// sumMetric adds the series of metric name (any labels).
func sumMetric(m map[string]float64, name string) float64 {
	var t float64
	for k, v := range m {
		if base, _, _ := strings.Cut(k, "{"); base == name {
			t += v
		}
	}
	return t
}

// sessionView is what GET /v1/sessions/{id} says of a session (the cluster's
// view, read from Redis).
type sessionView struct {
	State       string           `json:"state"`
	Episode     uint64           `json:"episode"`
	ExpireSent  bool             `json:"expireSent"`
	Connections int              `json:"connections"`
	Replicas    map[string]int64 `json:"replicas"`
}

func (s *sidecar) session(id string) (sessionView, int, error) {
	var v sessionView
	req, _ := http.NewRequest("GET", "http://"+s.admin+"/v1/sessions/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := adminClient.Do(req)
	if err != nil {
		return v, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return v, resp.StatusCode, err
	}
	if resp.StatusCode != http.StatusOK {
		return v, resp.StatusCode, nil
	}
	return v, resp.StatusCode, json.Unmarshal(b, &v)
}

// logSummary counts the replica's warn and error log lines by message.
func (s *sidecar) logSummary(into map[string]int) {
	f, err := os.Open(s.logPath)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			into["(not JSON) "+tail(sc.Bytes(), 120)]++
			continue
		}
		if l.Level != "info" && l.Level != "debug" {
			into[l.Level+": "+l.Msg]++
		}
	}
}
