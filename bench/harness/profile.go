package harness

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Profiles are the sidecar's own pprof profiles, taken by the diagnosis
// through its admin listener (/debug/pprof/, behind ADMIN_TOKEN): the heap
// while it holds the idle connections, and the CPU while it echoes the
// first workload with them still open, and while new connections arrive
// (handshakes, each a new session). The files are kept; the report shows
// the top of each (`go tool pprof -top`).
type Profiles struct {
	Heap, CPU, Handshake          string // the profile files
	HeapTop, CPUTop, HandshakeTop string // go tool pprof -top, trimmed
	Workload                      Workload
	Echo                          Echo // what the profiled echo measured
	HandshakesPerSec              float64
	CPUPerHandshake               float64 // seconds
}

// profileHeap takes p's heap profile (after a GC) into dir.
func profileHeap(ctx context.Context, p *proxyProc, dir string) (*Profiles, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	pr := &Profiles{Heap: filepath.Join(dir, p.name+"-heap.pb.gz")}
	if err := p.fetchProfile(ctx, "/debug/pprof/heap?gc=1", pr.Heap); err != nil {
		return nil, fmt.Errorf("heap profile: %w", err)
	}
	pr.HeapTop = pprofTop(ctx, pr.Heap, "-sample_index=inuse_space")
	return pr, nil
}

// profileCPU takes p's CPU profile over one echo of w, then another over
// handshakes, beside the heap's.
func (r *runner) profileCPU(ctx context.Context, p *proxyProc, tag string, pr *Profiles, w Workload) error {
	dir := filepath.Dir(pr.Heap)
	pr.Workload = w
	pr.CPU = filepath.Join(dir, p.name+"-cpu-"+w.Flag()+".pb.gz")
	secs := int(max(r.cfg.Duration, time.Second) / time.Second)
	err := p.profileDuring(ctx, pr.CPU, secs, func() (err error) {
		cfg := r.cfg
		cfg.Duration = time.Duration(secs) * time.Second
		pr.Echo, err = runEcho(ctx, p, r.upstream, tag, cfg, w)
		return err
	})
	if err != nil {
		return fmt.Errorf("profiled echo %s: %w", w, err)
	}
	pr.CPUTop = pprofTop(ctx, pr.CPU)
	pr.Handshake = filepath.Join(dir, p.name+"-cpu-handshakes.pb.gz")
	err = p.profileDuring(ctx, pr.Handshake, secs, func() (err error) {
		pr.HandshakesPerSec, pr.CPUPerHandshake, err = runHandshakes(ctx, p, tag+"-profiled", time.Duration(secs)*time.Second)
		return err
	})
	if err != nil {
		return fmt.Errorf("profiled handshakes: %w", err)
	}
	pr.HandshakeTop = pprofTop(ctx, pr.Handshake)
	return nil
}

// profileDuring saves p's CPU profile of the secs seconds that run takes.
func (p *proxyProc) profileDuring(ctx context.Context, file string, secs int, run func() error) error {
	done := make(chan error, 1)
	go func() { done <- p.fetchProfile(ctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), file) }()
	runErr := run()
	if err := <-done; err != nil {
		return fmt.Errorf("CPU profile: %w", err)
	}
	return runErr
}

// fetchProfile saves one of the admin listener's profiles to file.
func (p *proxyProc) fetchProfile(ctx context.Context, path, file string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resp, err := p.adminGet(ctx, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// pprofTop is `go tool pprof -top` of file, its first rows; on failure, the
// reason (the report still names the file).
func pprofTop(ctx context.Context, file string, args ...string) string {
	cmd := exec.CommandContext(ctx, "go", append(append([]string{"tool", "pprof", "-top", "-nodecount=14"}, args...), file)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("(go tool pprof failed: %v)", err)
	}
	var keep []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		// Drop the header's file, build id and time lines: they name this
		// machine's temporary paths.
		if strings.HasPrefix(line, "File:") || strings.HasPrefix(line, "Build ID:") || strings.HasPrefix(line, "Time:") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}

// Markdown renders the three profiles' tops.
func (pr *Profiles) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Heap in use with the idle connections open (`go tool pprof -sample_index=inuse_space -top %s`):\n\n```\n%s\n```\n\n", filepath.Base(pr.Heap), pr.HeapTop)
	fmt.Fprintf(&b, "CPU while echoing %s with them open (%s msgs/s, %s per echo; `go tool pprof -top %s`):\n\n```\n%s\n```\n",
		pr.Workload, rate(pr.Echo.MsgsPerSec), micros(pr.Echo.CPU/max(pr.Echo.MsgsPerSec, 1)), filepath.Base(pr.CPU), pr.CPUTop)
	fmt.Fprintf(&b, "\nCPU while clients open new connections, each a new session (%s handshakes/s, %s each; `go tool pprof -top %s`):\n\n```\n%s\n```\n",
		rate(pr.HandshakesPerSec), micros(pr.CPUPerHandshake), filepath.Base(pr.Handshake), pr.HandshakeTop)
	return b.String()
}
