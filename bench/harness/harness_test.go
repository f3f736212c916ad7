package harness

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	MaybeRunChild() // the echo upstream is the test binary re-executed
	os.Exit(m.Run())
}

// TestTinyRun runs the whole harness at a tiny size with every candidate,
// so that it cannot rot: every candidate must appear in the table with
// figures that are not zero.
func TestTinyRun(t *testing.T) {
	only := AllCandidates
	if _, err := findNginx(""); err != nil {
		if os.Getenv("WSBENCH_REQUIRE_NGINX") != "" {
			t.Fatal(err)
		}
		t.Logf("nginx left out: %v", err)
		only = []string{Direct, HAProxy, Sidecar, SidecarPresence}
	}
	if _, err := findHAProxy(""); err != nil {
		t.Fatal(err) // scripts/test.sh installs it
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatal("no go command to build the sidecar with")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var log strings.Builder
	rep, err := Run(ctx, Config{
		Idle: 50, Clients: 4, Duration: 500 * time.Millisecond, Reps: 1,
		Hold: 300 * time.Millisecond, Only: only, Diag: true, Log: &log,
	})
	t.Log(log.String())
	if err != nil {
		t.Fatal(err)
	}
	md := rep.Markdown()
	t.Log("\n" + md)

	for _, name := range only {
		r := rep.Result(name)
		if r == nil || len(r.Samples) != 1 {
			t.Fatalf("%s: no result", name)
		}
		if !strings.Contains(md, "| "+r.Label+" |") {
			t.Errorf("%s: no row in the table", name)
		}
		m := r.Medians()
		if m.MsgsPerSec <= 0 || m.P50 <= 0 || m.P99 < m.P50 || m.HandshakesPerSec <= 0 {
			t.Errorf("%s: echo figures %+v", name, m)
		}
		if r.Proxy && (m.MemPerConn <= 0 || r.Samples[0].MemPerConnHeld <= 0 || m.CPU <= 0 || m.CPUPerMsg <= 0) {
			t.Errorf("%s: proxy figures %+v (samples %+v)", name, m, r.Samples)
		}
	}
	if strings.Contains(strings.Join(only, ","), Nginx) && !strings.Contains(md, "Against nginx") {
		t.Error("no ratios against nginx")
	}
	if len(rep.Diagnoses) != 2 {
		t.Fatalf("%d diagnoses, want one per sidecar candidate", len(rep.Diagnoses))
	}
	for _, d := range rep.Diagnoses {
		// At least one goroutine per relayed connection, parked in the relay.
		if d.Goroutines < d.Idle || len(d.Groups) == 0 || d.RSSAfter <= d.RSSBefore {
			t.Errorf("%s diagnosis: %d goroutines for %d connections, groups %v, gc %+v", d.Name, d.Goroutines, d.Idle, d.Groups, d.After)
		}
	}
}

func TestGoroutineGroups(t *testing.T) {
	dump := `SIGQUIT: quit
PC=0x47a0a1 m=0 sigcode=0

goroutine 0 gp=0x7f m=0 mp=0x9 [idle]:
runtime.futex(0x1, 0x80)
	/usr/local/go/src/runtime/sys_linux_amd64.s:557 +0x21

goroutine 7 [IO wait, 2 minutes]:
internal/poll.runtime_pollWait(0x7f, 0x72)
	/usr/local/go/src/runtime/netpoll.go:351 +0x85
github.com/presence-sidecar/presence-sidecar/proxy.(*wsConn).pump(0xc0001, {0x1, 0x2})
	/work/main/proxy/relay.go:150 +0x1
github.com/presence-sidecar/presence-sidecar/proxy.(*wsConn).run(0xc0001, {0x1, 0x2})
	/work/main/proxy/relay.go:100 +0x1
created by github.com/presence-sidecar/presence-sidecar/proxy.(*Proxy).serveUpgrade in goroutine 6
	/work/main/proxy/upgrade.go:100 +0x1

goroutine 8 [IO wait]:
internal/poll.runtime_pollWait(0x7f, 0x72)
	/usr/local/go/src/runtime/netpoll.go:351 +0x85
github.com/presence-sidecar/presence-sidecar/proxy.(*wsConn).pump(0xc0001, {0x1, 0x2})
	/work/main/proxy/relay.go:150 +0x1
github.com/presence-sidecar/presence-sidecar/proxy.(*wsConn).run(0xc0001, {0x1, 0x2})
	/work/main/proxy/relay.go:100 +0x1

goroutine 9 [select]:
net/http.(*persistConn).writeLoop(0xc0002)
	/usr/local/go/src/net/http/transport.go:2600 +0x1
`
	n, groups := goroutineGroups([]byte(dump))
	if n != 4 {
		t.Fatalf("%d goroutines, want 4", n)
	}
	if g := groups[0]; g.Count != 2 || g.State != "IO wait" || g.Where != "proxy.(*wsConn).pump ← proxy.(*wsConn).run" {
		t.Errorf("first group %+v", g)
	}
	if got := lastGC([]byte("x\ngc 3 @0.5s 1%: 0.1+1+0.1 ms clock, 0.2+0/1/0+0.2 ms cpu, 4->5->2 MB, 6 MB goal, 1 MB stacks, 0 MB globals, 2 P\n")); got.LiveMB != 2 || got.GoalMB != 6 || got.StacksMB != 1 || got.N != 3 {
		t.Errorf("lastGC = %+v", got)
	}
}
