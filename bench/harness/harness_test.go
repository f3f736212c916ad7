package harness

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/json"
	"io"
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

// TestTinyRun runs the whole harness at a tiny size with every candidate and
// every default workload (128 B and 4 KiB, each with and without deflate),
// so that it cannot rot: every candidate must appear in every table with
// figures that are not zero, and deflate must have been negotiated through
// every proxy.
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
		Idle: 50, Clients: 4, Duration: 300 * time.Millisecond, Reps: 1,
		Hold: 300 * time.Millisecond, Only: only, Diag: true, ProfileDir: t.TempDir(), Log: &log,
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
		if m.HandshakesPerSec <= 0 || len(m.Echo) != len(DefaultWorkloads) {
			t.Fatalf("%s: figures %+v", name, m)
		}
		if r.Proxy && (m.MemPerConn <= 0 || r.Samples[0].MemPerConnHeld <= 0 || m.CPUPerHandshake <= 0) {
			t.Errorf("%s: proxy figures %+v (samples %+v)", name, m, r.Samples)
		}
		for k, w := range DefaultWorkloads {
			e := m.Echo[k]
			if e.MsgsPerSec <= 0 || e.P50 <= 0 || e.P99 < e.P50 {
				t.Errorf("%s, %s: echo figures %+v", name, w, e)
			}
			if r.Proxy && (e.CPU <= 0 || e.CPUPerMsg <= 0) {
				t.Errorf("%s, %s: proxy CPU %+v", name, w, e)
			}
			if ext := r.Samples[0].Echo[k].Extensions; w.Deflate != strings.Contains(ext, "permessage-deflate") {
				t.Errorf("%s, %s: handshake got Sec-WebSocket-Extensions %q", name, w, ext)
			}
		}
	}
	for _, w := range DefaultWorkloads {
		if !strings.Contains(md, "#### Echo, "+w.String()+"\n") {
			t.Errorf("no table for %s", w)
		}
	}
	if strings.Contains(strings.Join(only, ","), Nginx) {
		for _, row := range []string{"| memory per idle connection |", "| 4 KiB, deflate: proxy CPU per echo |", "| handshakes/s (each a new session) |"} {
			if !strings.Contains(md, row) {
				t.Errorf("no ratio row %q against nginx", row)
			}
		}
	}
	js, err := rep.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var sum struct {
		Candidates []struct {
			Name string
			Echo []struct {
				Workload   string
				MsgsPerSec struct{ Median float64 } `json:"msgs_per_sec"`
			}
		}
	}
	if err := json.Unmarshal(js, &sum); err != nil || len(sum.Candidates) != len(only) || len(sum.Candidates[0].Echo) != 4 ||
		sum.Candidates[0].Echo[3].Workload != "4096z" || sum.Candidates[0].Echo[3].MsgsPerSec.Median <= 0 {
		t.Errorf("JSON summary (%v):\n%s", err, js)
	}
	if len(rep.Diagnoses) != 2 {
		t.Fatalf("%d diagnoses, want one per sidecar candidate", len(rep.Diagnoses))
	}
	for _, d := range rep.Diagnoses {
		// The dump was read and the connections cost memory. Not "a goroutine
		// per connection": that is one relay design, not the harness's concern.
		if d.Goroutines == 0 || len(d.Groups) == 0 || d.RSSAfter <= d.RSSBefore {
			t.Errorf("%s diagnosis: %d goroutines for %d connections, groups %v, gc %+v", d.Name, d.Goroutines, d.Idle, d.Groups, d.After)
		}
		// The sidecar's own profiles, read back by go tool pprof.
		pr := d.Profiles
		if pr == nil || !strings.Contains(pr.HeapTop, "inuse_space") || !strings.Contains(pr.CPUTop, "flat%") || pr.Echo.MsgsPerSec <= 0 ||
			!strings.Contains(pr.HandshakeTop, "flat%") || pr.HandshakesPerSec <= 0 {
			t.Errorf("%s profiles: %+v", d.Name, pr)
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

func TestParseWorkloads(t *testing.T) {
	got, err := ParseWorkloads(" 128, 4k,128z,4096Z")
	if err != nil {
		t.Fatal(err)
	}
	want := []Workload{{128, false}, {4096, false}, {128, true}, {4096, true}}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("workload %d: %v, want %v", i, got[i], want[i])
		}
	}
	if s := got[3].String(); s != "4 KiB, deflate" {
		t.Errorf("String() = %q", s)
	}
	for _, bad := range []string{"", "x", "-1", "128,128", "12kk"} {
		if _, err := ParseWorkloads(bad); err == nil {
			t.Errorf("ParseWorkloads(%q): no error", bad)
		}
	}
}

// TestEchoMessage: exact size, valid JSON that carries the session, and
// text that deflate shrinks like chat text rather than to nothing.
func TestEchoMessage(t *testing.T) {
	for _, size := range []int{64, 128, 4096} {
		m := echoMessage("bench-sidecar-presence-2-echo-49", size, 7)
		if len(m) != size {
			t.Errorf("size %d: %d bytes", size, len(m))
		}
		var v struct {
			Action string
			Data   struct{ SessionID, Text string }
		}
		if err := json.Unmarshal(m, &v); err != nil || v.Action != "message" {
			t.Errorf("size %d: %v: %s", size, err, m)
		}
		if size >= 128 && v.Data.SessionID == "" {
			t.Errorf("size %d: no session id: %s", size, m)
		}
		if string(m) == string(echoMessage("bench-sidecar-presence-2-echo-49", size, 8)) {
			t.Errorf("size %d: variants alike", size)
		}
		// What gorilla/websocket puts on the wire, inflated back.
		share := deflatedShare(m)
		if share < 0.2 || share > 1.1 {
			t.Errorf("size %d: deflated to %.0f%%", size, 100*share)
		}
		var z bytes.Buffer
		fw, _ := flate.NewWriter(&z, 1)
		fw.Write(m)
		fw.Close()
		back, err := io.ReadAll(flate.NewReader(&z))
		if err != nil || !bytes.Equal(back, m) {
			t.Errorf("size %d: deflate round trip: %v", size, err)
		}
	}
	if s := deflatedShare(echoMessage("s", 4096, 0)); s > 0.6 {
		t.Errorf("4 KiB of chat text deflates only to %.0f%%", 100*s)
	}
}

func TestCheckDeflate(t *testing.T) {
	const on = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
	for _, c := range []struct {
		w   Workload
		ext string
		ok  bool
	}{
		{Workload{128, true}, on, true},
		{Workload{128, true}, "", false}, // a proxy that dropped the offer or the answer
		{Workload{128, false}, "", true},
		{Workload{128, false}, on, false},
	} {
		if err := checkDeflate(c.w, c.ext); (err == nil) != c.ok {
			t.Errorf("checkDeflate(%v, %q) = %v", c.w, c.ext, err)
		}
	}
}

func TestBinaryRev(t *testing.T) {
	if rev := binaryRev("/nonexistent"); rev != "" {
		t.Errorf("binaryRev of nothing = %q", rev)
	}
	self, _ := os.Executable()
	t.Logf("this test binary's stamped revision: %q", binaryRev(self)) // empty under -buildvcs=false
}
