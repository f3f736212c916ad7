package harness

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

func environment() Environment {
	e := Environment{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.Kernel = strings.TrimSpace(string(b))
	}
	return e
}

// Median and range of one figure over a candidate's samples.
type stat struct{ med, lo, hi float64 }

func (r *Result) stat(f func(Sample) float64) stat {
	v := make([]float64, len(r.Samples))
	for i, s := range r.Samples {
		v[i] = f(s)
	}
	slices.Sort(v)
	n := len(v)
	if n == 0 {
		return stat{}
	}
	med := v[n/2]
	if n%2 == 0 {
		med = (v[n/2-1] + v[n/2]) / 2
	}
	return stat{med, v[0], v[n-1]}
}

func memPerConn(s Sample) float64 { return s.MemPerConn }
func memHeld(s Sample) float64    { return s.MemPerConnHeld }
func msgsPerSec(s Sample) float64 { return s.MsgsPerSec }
func p50(s Sample) float64        { return float64(s.P50) }
func p99(s Sample) float64        { return float64(s.P99) }
func cpu(s Sample) float64        { return s.CPU }
func handshakes(s Sample) float64 { return s.HandshakesPerSec }
func cpuPerHS(s Sample) float64   { return s.CPUPerHandshake }

// cpuPerMsg is the proxy's CPU time per round trip, in seconds: less
// sensitive to other load on the machine than msgs/s.
func cpuPerMsg(s Sample) float64 {
	if s.MsgsPerSec == 0 {
		return 0
	}
	return s.CPU / s.MsgsPerSec
}

// Figures are the medians of one candidate, for tests and tools.
type Figures struct {
	MemPerConn, MsgsPerSec float64
	P50, P99               time.Duration
	CPU                    float64
	CPUPerMsg              float64 // seconds of proxy CPU per round trip
	HandshakesPerSec       float64
}

// Medians returns the candidate's median figures.
func (r *Result) Medians() Figures {
	return Figures{
		MemPerConn:       r.stat(memPerConn).med,
		MsgsPerSec:       r.stat(msgsPerSec).med,
		P50:              time.Duration(r.stat(p50).med),
		P99:              time.Duration(r.stat(p99).med),
		CPU:              r.stat(cpu).med,
		CPUPerMsg:        r.stat(cpuPerMsg).med,
		HandshakesPerSec: r.stat(handshakes).med,
	}
}

// Result returns the named candidate's result, or nil.
func (rep *Report) Result(name string) *Result {
	for _, r := range rep.Results {
		if r.Name == name {
			return r
		}
	}
	return nil
}

func kib(v float64) string { return fmt.Sprintf("%.1f KiB", v/1024) }
func rate(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	// thousands separators
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
func ms(v float64) string     { return fmtDur(time.Duration(v)) }
func cores(v float64) string  { return fmt.Sprintf("%.2f", v) }
func micros(v float64) string { return fmt.Sprintf("%.1f µs", v*1e6) }

// cell is "median (min–max)", or just the median for a single sample.
func cell(st stat, n int, f func(float64) string) string {
	if n <= 1 || f(st.lo) == f(st.hi) {
		return f(st.med)
	}
	lo, hi := f(st.lo), f(st.hi)
	// "0.31–0.35 ms" rather than "0.31 ms–0.35 ms"
	if u := unit(lo); u != "" && u == unit(hi) {
		lo = strings.TrimSuffix(lo, " "+u)
	}
	return fmt.Sprintf("%s (%s–%s)", f(st.med), lo, hi)
}

func unit(s string) string {
	if i := strings.LastIndexByte(s, ' '); i >= 0 {
		return s[i+1:]
	}
	return ""
}

// Markdown renders the report: the figures, the ratios against nginx and,
// when asked for, the look inside the sidecar.
func (rep *Report) Markdown() string {
	var b strings.Builder
	c, e := rep.Config, rep.Env
	fmt.Fprintf(&b, "### WebSocket proxies side by side\n\n")
	fmt.Fprintf(&b, "%d CPUs, Linux %s, %s", e.CPUs, e.Kernel, e.GoVersion)
	if e.NginxVersion != "" {
		fmt.Fprintf(&b, ", nginx %s", e.NginxVersion)
	}
	if e.HAProxyVersion != "" {
		fmt.Fprintf(&b, ", HAProxy %s", e.HAProxyVersion)
	}
	if e.SidecarRev != "" {
		fmt.Fprintf(&b, ", presence-sidecar %s", e.SidecarRev)
	}
	fmt.Fprintf(&b, ". Client, proxy and a gorilla/websocket echo upstream on the same machine.\n")
	fmt.Fprintf(&b, "%d idle connections per candidate, then %d clients echoing %d-byte text messages for %s (after %s warm-up); ",
		c.Idle, c.Clients, c.MsgSize, c.Duration, c.Warmup)
	fmt.Fprintf(&b, "%d interleaved run(s) of each, fresh proxy process each run; median (min–max).\n", c.Reps)
	var noise []float64
	for _, r := range rep.Results {
		for _, s := range r.Samples {
			noise = append(noise, s.Foreign)
		}
	}
	if len(noise) > 0 {
		slices.Sort(noise)
		fmt.Fprintf(&b, "Other work on the machine during the measured echo windows: median %.2f, max %.2f of %d cores (more than ~0.1 makes msgs/s and p99 noisy).\n",
			noise[len(noise)/2], noise[len(noise)-1], e.CPUs)
	}
	b.WriteString("\n")

	heldHead, heldSep := "", ""
	if c.Hold > 0 {
		heldHead, heldSep = fmt.Sprintf(" … after holding them %s |", c.Hold), "---|"
	}
	fmt.Fprintf(&b, "| candidate | memory per idle connection (proxy RSS) |%s echo msgs/s | p50 | p99 | proxy CPU (cores) | proxy CPU per echo | handshakes/s | proxy CPU per handshake |\n", heldHead)
	fmt.Fprintf(&b, "|---|---|%s---|---|---|---|---|---|---|\n", heldSep)
	for _, r := range rep.Results {
		n := len(r.Samples)
		mem, held, cpuCell, perMsg, perHS := "—", "—", "—", "—", "—"
		if r.Proxy {
			perHS = cell(r.stat(cpuPerHS), n, micros)
			mem = cell(r.stat(memPerConn), n, kib)
			held = cell(r.stat(memHeld), n, kib)
			cpuCell = cell(r.stat(cpu), n, cores)
			perMsg = cell(r.stat(cpuPerMsg), n, micros)
		}
		if c.Hold > 0 {
			mem += " | " + held
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Label, mem,
			cell(r.stat(msgsPerSec), n, rate), cell(r.stat(p50), n, ms), cell(r.stat(p99), n, ms), cpuCell, perMsg,
			cell(r.stat(handshakes), n, rate), perHS)
	}

	if ng := rep.Result(Nginx); ng != nil {
		base := ng.Medians()
		fmt.Fprintf(&b, "\nAgainst nginx (ratio of medians; msgs/s: higher is better; the others: lower is better):\n\n")
		fmt.Fprintf(&b, "| candidate | memory per idle connection | echo msgs/s | p50 | p99 | proxy CPU per echo | handshakes/s |\n")
		fmt.Fprintf(&b, "|---|---|---|---|---|---|---|\n")
		for _, r := range rep.Results {
			if r.Name == Nginx {
				continue
			}
			m := r.Medians()
			mem, perMsg := "—", "—"
			if r.Proxy {
				mem = ratio(m.MemPerConn, base.MemPerConn)
				perMsg = ratio(m.CPUPerMsg, base.CPUPerMsg)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", r.Label, mem,
				ratio(m.MsgsPerSec, base.MsgsPerSec), ratio(float64(m.P50), float64(base.P50)), ratio(float64(m.P99), float64(base.P99)), perMsg,
				ratio(m.HandshakesPerSec, base.HandshakesPerSec))
		}
	}
	for _, d := range rep.Diagnoses {
		b.WriteString("\n")
		b.WriteString(d.Markdown())
	}
	fmt.Fprintf(&b, "\n(whole run: %s)\n", rep.Elapsed.Round(time.Second))
	return b.String()
}

func ratio(v, base float64) string {
	if base == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", v/base)
}
