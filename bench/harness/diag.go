package harness

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Diagnosis is a look inside a sidecar process holding the idle
// connections: where its memory goes, without changing the sidecar. It runs
// the sidecar with GODEBUG=gctrace=1 (heap and stack figures at each GC) and
// ends it with SIGQUIT under GOTRACEBACK=all (a dump of every goroutine).
type Diagnosis struct {
	Name, Label           string
	Idle                  int
	RSSBefore, RSSAfter   int64 // bytes
	AnonBefore, AnonAfter int64 // RssAnon, bytes
	Threads               int
	Held                  time.Duration // the connections were held this long before the look
	Before, After         gcLine        // the last GC before and after opening the idle connections
	Goroutines            int
	Groups                []GoroutineGroup
	Profiles              *Profiles // with Config.ProfileDir
}

// GoroutineGroup counts goroutines parked in the same state at the same place.
type GoroutineGroup struct {
	Count        int
	State, Where string
}

type gcLine struct {
	N                        int
	LiveMB, GoalMB, StacksMB int
	ok                       bool
}

var (
	gcRe   = regexp.MustCompile(`^gc (\d+) @.* (\d+)->(\d+)->(\d+) MB, (\d+) MB goal, (\d+) MB stacks`)
	goroRe = regexp.MustCompile(`^goroutine \d+ (?:gp=\S+ m=\S+ (?:mp=\S+ )?)?\[([^\]]*)\]:$`)
)

func (r *runner) diagnose(ctx context.Context, name string) (Diagnosis, error) {
	d := Diagnosis{Name: name, Label: labels[name]}
	if err := r.upstream.waitIdle(ctx, 10*time.Second); err != nil {
		return d, err
	}
	p, err := r.start(ctx, name, name+"-diag", []string{"GODEBUG=gctrace=1", "GOTRACEBACK=all"})
	if err != nil {
		return d, err
	}
	defer p.stop()
	if err := warmUp(ctx, p.url()); err != nil {
		return d, p.failed(err)
	}
	time.Sleep(200 * time.Millisecond)
	pid := p.cmd.Process.Pid
	if d.RSSBefore, err = p.rss(); err != nil {
		return d, err
	}
	anon, _ := statusField(pid, "RssAnon")
	d.AnonBefore = anon * 1024
	logBefore, _ := os.ReadFile(p.logPath)
	d.Before = lastGC(logBefore)

	conns, err := openIdle(ctx, p.url(), name+"-diag", r.cfg.Idle)
	defer closeAll(conns)
	if err != nil {
		return d, p.failed(err)
	}
	d.Idle = len(conns)
	if d.RSSAfter, err = settledRSS(p); err != nil {
		return d, err
	}
	if r.cfg.Hold > 0 {
		if err := holdIdle(ctx, conns, r.cfg.Hold); err != nil {
			return d, p.failed(err)
		}
		if d.RSSAfter, err = p.rss(); err != nil {
			return d, err
		}
		d.Held = r.cfg.Hold
	}
	anon, _ = statusField(pid, "RssAnon")
	d.AnonAfter = anon * 1024
	threads, _ := statusField(pid, "Threads")
	d.Threads = int(threads)
	if r.cfg.ProfileDir != "" {
		if d.Profiles, err = profileHeap(ctx, p, r.cfg.ProfileDir); err != nil {
			return d, p.failed(err)
		}
	}
	logIdle, err := os.ReadFile(p.logPath)
	if err != nil {
		return d, err
	}
	d.After = lastGC(logIdle) // before the profiled echo's garbage
	if d.Profiles != nil {
		if err := r.profileCPU(ctx, p, name+"-diag", d.Profiles, r.cfg.Workloads[0]); err != nil {
			return d, p.failed(err)
		}
	}

	p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		return d, fmt.Errorf("%s did not exit on SIGQUIT", name)
	}
	p.stopped = true
	log, err := os.ReadFile(p.logPath)
	if err != nil {
		return d, err
	}
	d.Goroutines, d.Groups = goroutineGroups(log[len(logBefore):])
	fmt.Fprintf(r.log, "diagnosis %s: %d goroutines for %d idle connections, heap live %d→%d MB\n",
		name, d.Goroutines, d.Idle, d.Before.LiveMB, d.After.LiveMB)
	return d, nil
}

func lastGC(log []byte) gcLine {
	var g gcLine
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := gcRe.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		a := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
		g = gcLine{N: a(1), LiveMB: a(4), GoalMB: a(5), StacksMB: a(6), ok: true}
	}
	return g
}

const modPrefix = "github.com/presence-sidecar/presence-sidecar/"

// goroutineGroups parses a GOTRACEBACK=all dump: each goroutine is grouped
// by its state and its innermost frame in the sidecar's own code (else its
// innermost frame).
func goroutineGroups(dump []byte) (int, []GoroutineGroup) {
	counts := map[[2]string]int{}
	total := 0
	var state, where, first string
	inG := false
	flush := func() {
		if !inG {
			return
		}
		if where == "" {
			where = first
		}
		counts[[2]string{state, where}]++
		total++
		inG = false
	}
	sc := bufio.NewScanner(bytes.NewReader(dump))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := goroRe.FindStringSubmatch(line); m != nil {
			flush()
			inG, state, where, first = true, m[1], "", ""
			if i := strings.IndexByte(state, ','); i >= 0 {
				state = state[:i] // drop ", 3 minutes", ", locked to thread"
			}
			continue
		}
		if !inG {
			continue
		}
		if line == "" {
			flush()
			continue
		}
		if strings.HasPrefix(line, "\t") || strings.HasPrefix(line, "created by ") {
			continue
		}
		fn := line
		if strings.HasSuffix(fn, ")") {
			if i := strings.LastIndexByte(fn, '('); i > 0 {
				fn = fn[:i]
			}
		}
		if first == "" {
			first = fn
		}
		// The innermost two frames of the sidecar's own code say where.
		if strings.HasPrefix(fn, modPrefix) && !strings.Contains(where, " ← ") {
			if where == "" {
				where = strings.TrimPrefix(fn, modPrefix)
			} else {
				where += " ← " + strings.TrimPrefix(fn, modPrefix)
			}
		}
	}
	flush()
	groups := make([]GoroutineGroup, 0, len(counts))
	for k, n := range counts {
		groups = append(groups, GoroutineGroup{Count: n, State: k[0], Where: k[1]})
	}
	slices.SortFunc(groups, func(a, b GoroutineGroup) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Where, b.Where))
	})
	return total, groups
}

// Markdown renders the diagnosis.
func (d Diagnosis) Markdown() string {
	var b strings.Builder
	n := float64(max(d.Idle, 1))
	mib := func(v int64) string { return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20)) }
	fmt.Fprintf(&b, "#### Inside %s, holding %d idle connections", d.Label, d.Idle)
	if d.Held > 0 {
		fmt.Fprintf(&b, " for %s", d.Held)
	}
	b.WriteString("\n\n")
	fmt.Fprintf(&b, "- RSS %s → %s (%s per connection); anonymous memory %s → %s (%s per connection); %d OS threads\n",
		mib(d.RSSBefore), mib(d.RSSAfter), kib(float64(d.RSSAfter-d.RSSBefore)/n),
		mib(d.AnonBefore), mib(d.AnonAfter), kib(float64(d.AnonAfter-d.AnonBefore)/n), d.Threads)
	if d.After.ok {
		fmt.Fprintf(&b, "- Go GC (gctrace, MB granularity; last GC before → last GC with the connections open, gc #%d): live heap %d → %d MB (≈ %s per connection), heap goal %d MB, goroutine stacks scanned %d → %d MB (≈ %s per connection)\n",
			d.After.N, d.Before.LiveMB, d.After.LiveMB, kib(float64(d.After.LiveMB-d.Before.LiveMB)*(1<<20)/n),
			d.After.GoalMB, d.Before.StacksMB, d.After.StacksMB, kib(float64(d.After.StacksMB-d.Before.StacksMB)*(1<<20)/n))
	}
	fmt.Fprintf(&b, "- goroutines: %d (%.2f per idle connection)\n\n", d.Goroutines, float64(d.Goroutines)/n)
	fmt.Fprintf(&b, "| goroutines | state | innermost sidecar frames (callee ← caller) |\n|---|---|---|\n")
	rest := 0
	for i, g := range d.Groups {
		if i >= 8 {
			rest += g.Count
			continue
		}
		fmt.Fprintf(&b, "| %d | %s | `%s` |\n", g.Count, g.State, g.Where)
	}
	if rest > 0 {
		fmt.Fprintf(&b, "| %d | (others) | |\n", rest)
	}
	if d.Profiles != nil {
		b.WriteString("\n" + d.Profiles.Markdown())
	}
	return b.String()
}
