// Package redistest starts real Redis servers for tests: a single
// redis-server, a Redis Cluster of several masters, and a primary with a
// replica watched by redis-sentinel. Each listens on free loopback ports,
// keeps its files in the test's temporary directory and is stopped when the
// test ends. The binaries come from Debian's redis-server and redis-sentinel
// packages (scripts/test.sh installs them); a test fails, never skips, when
// they are missing.
package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a server may take to answer PING.
const startTimeout = 10 * time.Second

// Server is one redis-server (or redis-sentinel) process.
type Server struct {
	Addr string // host:port
	Port int

	t    testing.TB
	bin  string
	dir  string
	args []string
	cmd  *exec.Cmd
	log  string
}

// Binary is the path of name on PATH (redis-server, redis-cli,
// redis-sentinel), failing the test with the install command when missing.
func Binary(t testing.TB, name string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/bin/" + name, "/usr/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatalf("%s is not installed: apt-get install -y redis-server redis-sentinel (scripts/test.sh does it as root)", name)
	return ""
}

// Start runs a redis-server on a free port with no persistence unless args
// (redis.conf directives as "--name value" pairs) turn it on, and stops it
// when the test ends.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	s := newServer(t, Binary(t, "redis-server"), freePort(t, 0), args...)
	s.start()
	return s
}

func newServer(t testing.TB, bin string, port int, args ...string) *Server {
	dir, err := os.MkdirTemp(t.TempDir(), fmt.Sprintf("redis-%d-", port))
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, t: t, bin: bin, dir: dir, log: filepath.Join(dir, "server.log")}
	s.args = append([]string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir, "--logfile", s.log,
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
	}, args...)
	t.Cleanup(s.Kill)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	s.cmd = exec.Command(s.bin, s.args...)
	s.cmd.Dir = s.dir
	// A test binary killed (a timeout, ^C) takes its servers with it.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("starting %s: %v", s.bin, err)
	}
	deadline := time.Now().Add(startTimeout)
	for {
		if reply, err := s.Do("PING"); err == nil && reply == "PONG" {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s on %s did not answer PING within %s; its log:\n%s", filepath.Base(s.bin), s.Addr, startTimeout, s.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Log is the server's log file so far, for failure messages.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

// Kill stops the server with SIGKILL (a crash: nothing is flushed) and
// waits for it. It does nothing if the server is not running.
func (s *Server) Kill() { s.stop(syscall.SIGKILL) }

// Stop stops the server with SIGTERM and waits for it.
func (s *Server) Stop() { s.stop(syscall.SIGTERM) }

func (s *Server) stop(sig syscall.Signal) {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(sig)
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the server again on the same port and directory, after
// Stop or Kill. Without persistence it comes back empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Do sends one command in RESP and returns the reply as text: a simple
// string, an integer, a bulk string; arrays are joined by newlines. Enough
// for the set-up commands tests need without depending on a client library.
func (s *Server) Do(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(c))
}

func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis: %s", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", err
		}
		parts := make([]string, 0, max(n, 0))
		for range n {
			p, err := readReply(r)
			if err != nil {
				return "", err
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, "\n"), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

// freePort returns a loopback TCP port that is free now, and whose port+gap
// is free too when gap > 0 (a Cluster node's bus port).
func freePort(t testing.TB, gap int) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if gap == 0 {
			l.Close()
			return port
		}
		if port+gap < 65536 {
			if l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+gap))); err == nil {
				l2.Close()
				l.Close()
				return port
			}
		}
		l.Close()
	}
	t.Fatal("no free port pair found")
	return 0
}
