package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// server is one redis-server process of our own. internal/testutil/redistest
// does the same for tests, but it needs a testing.TB, and the command runs
// outside any test.
type server struct {
	Addr string
	cmd  *exec.Cmd
	dir  string
	c    rueidis.Client // for INFO, MEMORY USAGE, CONFIG: kept apart from the measured client
}

// redisBinary finds redis-server on PATH, or where Debian's package puts it.
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

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startServer runs redis-server on a free loopback port without persistence
// (--save ” --appendonly no), so that no fork or fsync lands inside a
// measurement.
func startServer(bin string) (*server, error) {
	bin, err := redisBinary(bin)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "clusterstate-redis-")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 5 { // the free port may be taken between Listen and redis-server's bind
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		log, err := os.Create(filepath.Join(dir, "redis.log"))
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no", "--logfile", "",
			// Requests run back to back in a measurement: make the latency
			// monitor note every command that took 1 ms or more.
			"--latency-monitor-threshold", "1")
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			log.Close()
			return nil, err
		}
		log.Close()
		s := &server{Addr: "127.0.0.1:" + strconv.Itoa(port), cmd: cmd, dir: dir}
		if lastErr = s.connect(); lastErr == nil {
			return s, nil
		}
		s.Close()
		s.dir = dir
	}
	out, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
	os.RemoveAll(dir)
	return nil, fmt.Errorf("redis-server did not start: %v\n%s", lastErr, out)
}

func (s *server) connect() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := newClient(s.Addr)
		if err == nil {
			s.c = c
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		if s.cmd.ProcessState != nil {
			return errors.New("redis-server exited")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// newClient is a client as the sidecar makes one: rueidis, client-side
// caching off, auto-pipelining on (its default for concurrent Do calls).
func newClient(addr string) (rueidis.Client, error) {
	return rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
}

// Close stops the server (SIGKILL: nothing of it is to be kept) and removes
// its directory.
func (s *server) Close() {
	if s.c != nil {
		s.c.Close()
		s.c = nil
	}
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
		s.dir = ""
	}
}

func (s *server) do(ctx context.Context, args ...string) rueidis.RedisResult {
	return s.c.Do(ctx, s.c.B().Arbitrary(args...).Build())
}

// info returns one INFO section as name → value.
func (s *server) info(ctx context.Context, section string) (map[string]string, error) {
	txt, err := s.do(ctx, "INFO", section).ToString()
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, line := range strings.Split(txt, "\n") {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
			m[k] = v
		}
	}
	return m, nil
}

// usedMemory is INFO memory used_memory: every byte the server allocated
// (jemalloc's usable size of each allocation), keys, dictionaries and all.
func (s *server) usedMemory(ctx context.Context) (int64, error) {
	m, err := s.info(ctx, "memory")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(m["used_memory"], 10, 64)
}

// settledMemory waits for the server's cron to finish incremental rehashing
// (a dictionary being rehashed holds both tables) and returns used_memory
// once two readings in a row agree.
func (s *server) settledMemory(ctx context.Context) (int64, error) {
	prev := int64(-1)
	for range 50 {
		time.Sleep(150 * time.Millisecond)
		v, err := s.usedMemory(ctx)
		if err != nil {
			return 0, err
		}
		if v == prev {
			return v, nil
		}
		prev = v
	}
	return prev, nil
}

func (s *server) memoryUsage(ctx context.Context, key string) (int64, error) {
	// SAMPLES 0: every element of a set or a sorted set, not an estimate
	// from five.
	return s.c.Do(ctx, s.c.B().MemoryUsage().Key(key).Samples(0).Build()).AsInt64()
}

func (s *server) config(ctx context.Context, name string) string {
	// RESP3 (rueidis's protocol) answers CONFIG GET with a map.
	v, err := s.do(ctx, "CONFIG", "GET", name).AsStrMap()
	if err != nil || v[name] == "" {
		return "?"
	}
	return v[name]
}

// serverStats is what Redis itself says of the EVALSHA calls of one phase:
// INFO commandstats and INFO latencystats, reset at the phase's start.
type serverStats struct {
	Calls        int64
	UsecPerCall  float64
	P50, P99, P3 float64 // µs, from Redis's latency histogram (p99.9 in P3)
	Failed       int64
	Slow         int64   // LATENCY LATEST "command": max ms seen, 0 if none ≥ 1 ms
	CPU          float64 // the server's CPU time over the phase, in seconds
}

func (s *server) resetStats(ctx context.Context) (cpu float64, err error) {
	if err := s.do(ctx, "CONFIG", "RESETSTAT").Error(); err != nil {
		return 0, err
	}
	if err := s.do(ctx, "LATENCY", "RESET").Error(); err != nil {
		return 0, err
	}
	return s.cpu(ctx)
}

func (s *server) cpu(ctx context.Context) (float64, error) {
	m, err := s.info(ctx, "cpu")
	if err != nil {
		return 0, err
	}
	u, _ := strconv.ParseFloat(m["used_cpu_user"], 64)
	sy, _ := strconv.ParseFloat(m["used_cpu_sys"], 64)
	return u + sy, nil
}

func (s *server) stats(ctx context.Context, cpu0 float64) (serverStats, error) {
	var st serverStats
	cs, err := s.info(ctx, "commandstats")
	if err != nil {
		return st, err
	}
	for _, kv := range strings.Split(cs["cmdstat_evalsha"], ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "calls":
			st.Calls, _ = strconv.ParseInt(v, 10, 64)
		case "usec_per_call":
			st.UsecPerCall, _ = strconv.ParseFloat(v, 64)
		case "failed_calls":
			st.Failed, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	ls, err := s.info(ctx, "latencystats")
	if err != nil {
		return st, err
	}
	for _, kv := range strings.Split(ls["latency_percentiles_usec_evalsha"], ",") {
		k, v, _ := strings.Cut(kv, "=")
		f, _ := strconv.ParseFloat(v, 64)
		switch k {
		case "p50":
			st.P50 = f
		case "p99":
			st.P99 = f
		case "p99.9":
			st.P3 = f
		}
	}
	if ev, err := s.do(ctx, "LATENCY", "LATEST").ToArray(); err == nil {
		for _, e := range ev {
			row, _ := e.ToArray()
			if len(row) >= 4 {
				if name, _ := row[0].ToString(); name == "command" {
					st.Slow, _ = row[3].AsInt64()
				}
			}
		}
	}
	c1, err := s.cpu(ctx)
	st.CPU = c1 - cpu0
	return st, err
}
