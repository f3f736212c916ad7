package harness

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// roleEnv makes a re-executed wsbench (or test binary) the echo upstream, so
// that the upstream's memory and CPU are its own, not the clients'.
const roleEnv = "WSBENCH_ROLE"

// MaybeRunChild turns this process into a helper if it was started as one
// (it then never returns). Call it first thing in main and in TestMain.
func MaybeRunChild() {
	if os.Getenv(roleEnv) == "echo-upstream" {
		os.Exit(runUpstream())
	}
}

// runUpstream is the child: a gorilla/websocket echo server on a loopback
// port it prints on stdout. It accepts permessage-deflate when offered
// (gorilla/websocket: no context takeover either way). It exits when its
// stdin closes (the parent died or is done). GET /_stats answers the number
// of open WebSockets.
func runUpstream() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo upstream:", err)
		return 1
	}
	var open atomic.Int64
	up := websocket.Upgrader{
		ReadBufferSize: 1024,
		// Pooled, so held only while a message is written: room for a
		// 4 KiB message in one frame, as a server usually sends it.
		WriteBufferSize:   8192,
		WriteBufferPool:   &sync.Pool{},
		EnableCompression: true, // only when the client offers it
		CheckOrigin:       func(*http.Request) bool { return true },
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/_stats", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, open.Load())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		open.Add(1)
		defer open.Add(-1)
		defer c.Close()
		for {
			mt, rd, err := c.NextReader()
			if err != nil {
				return
			}
			wr, err := c.NextWriter(mt)
			if err != nil {
				return
			}
			if _, err := io.Copy(wr, rd); err != nil {
				return
			}
			if err := wr.Close(); err != nil {
				return
			}
		}
	})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	fmt.Println(ln.Addr().String())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "echo upstream:", err)
		return 1
	}
	return 0
}

type upstreamProc struct {
	addr  string
	cmd   *exec.Cmd
	stdin io.Closer
}

func startUpstream(ctx context.Context, tmp string) (*upstreamProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), roleEnv+"=echo-upstream")
	cmd.Dir = tmp
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
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
	case <-ctx.Done():
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

// open is the number of WebSockets the upstream holds.
func (u *upstreamProc) open() (int, error) {
	resp, err := http.Get("http://" + u.addr + "/_stats")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// waitIdle waits until the upstream holds no WebSocket: the previous phase's
// connections have been torn down through the proxy.
func (u *upstreamProc) waitIdle(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		n, err := u.open()
		if err != nil {
			return fmt.Errorf("echo upstream: %w", err)
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the upstream still holds %d connections %s after the clients closed theirs", n, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
}
