package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
)

// The container image's HEALTHCHECK runs the binary's own check.
func TestHealthcheckSubcommand(t *testing.T) {
	sc := start(t, map[string]string{"UPSTREAM_URL": "http://" + freeAddr(t)})
	ok := exec.Command(binary, "healthcheck")
	ok.Env = []string{"ADMIN_ADDR=" + sc.admin}
	if out, err := ok.CombinedOutput(); err != nil {
		t.Fatalf("healthy sidecar: %v %s", err, out)
	}
	bad := exec.Command(binary, "healthcheck")
	bad.Env = []string{"ADMIN_ADDR=" + freeAddr(t)}
	if out, err := bad.CombinedOutput(); err == nil {
		t.Fatalf("nothing listens there, yet the check passed: %s", out)
	}
}

// Client sockets get TCP keep-alive (README, Data plane): the kernel runs the
// keep-alive timer on the sidecar's side of an idle client connection.
func TestClientSocketsHaveTCPKeepAlive(t *testing.T) {
	sc := start(t, map[string]string{"UPSTREAM_URL": "http://" + freeAddr(t), "TCP_KEEPALIVE": "30s"})
	c, err := net.Dial("tcp", sc.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, sidecarPort, _ := net.SplitHostPort(sc.addr)
	_, clientPort, _ := net.SplitHostPort(c.LocalAddr().String())
	// The kernel lists the connection before the sidecar accepts it (and
	// sets the option): wait for the keep-alive timer, fail if it never comes.
	testutil.Eventually(t, 3*time.Second, "the keep-alive timer (02) on the sidecar's side of the client socket in /proc/net/tcp", func() bool {
		timer, ok := tcpTimer(t, sidecarPort, clientPort)
		return ok && timer == "02"
	})
}

// tcpTimer finds the IPv4 socket with local port lport and remote port
// rport in /proc/net/tcp and returns its timer kind ("02": keep-alive).
func tcpTimer(t *testing.T, lport, rport string) (string, bool) {
	raw, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	hexPort := func(p string) string {
		n, _ := strconv.Atoi(p)
		return fmt.Sprintf("%04X", n)
	}
	for _, line := range strings.Split(string(raw), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		if strings.HasSuffix(f[1], ":"+hexPort(lport)) && strings.HasSuffix(f[2], ":"+hexPort(rport)) {
			timer, _, _ := strings.Cut(f[5], ":")
			return timer, true
		}
	}
	return "", false
}
