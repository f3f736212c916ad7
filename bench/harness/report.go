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
func handshakes(s Sample) float64 { return s.HandshakesPerSec }
func cpuPerHS(s Sample) float64   { return s.CPUPerHandshake }

// echoStat is stat over one workload's echo figures.
func (r *Result) echoStat(k int, f func(Echo) float64) stat {
	return r.stat(func(s Sample) float64 { return f(s.Echo[k]) })
}

func msgsPerSec(e Echo) float64 { return e.MsgsPerSec }
func p50(e Echo) float64        { return float64(e.P50) }
func p99(e Echo) float64        { return float64(e.P99) }
func cpu(e Echo) float64        { return e.CPU }
func foreign(e Echo) float64    { return e.Foreign }

// cpuPerMsg is the proxy's CPU time per round trip, in seconds: less
// sensitive to other load on the machine than msgs/s.
func cpuPerMsg(e Echo) float64 {
	if e.MsgsPerSec == 0 {
		return 0
	}
	return e.CPU / e.MsgsPerSec
}

// Figures are the medians of one candidate, for tests and tools.
type Figures struct {
	MemPerConn       float64
	HandshakesPerSec float64
	CPUPerHandshake  float64       // seconds of proxy CPU per handshake
	Echo             []EchoFigures // one per Config.Workloads
}

// EchoFigures are the medians of one echo workload.
type EchoFigures struct {
	MsgsPerSec float64
	P50, P99   time.Duration
	CPU        float64
	CPUPerMsg  float64 // seconds of proxy CPU per round trip
}

// Medians returns the candidate's median figures.
func (r *Result) Medians() Figures {
	f := Figures{
		MemPerConn:       r.stat(memPerConn).med,
		HandshakesPerSec: r.stat(handshakes).med,
		CPUPerHandshake:  r.stat(cpuPerHS).med,
	}
	if len(r.Samples) == 0 {
		return f
	}
	for k := range r.Samples[0].Echo {
		f.Echo = append(f.Echo, EchoFigures{
			MsgsPerSec: r.echoStat(k, msgsPerSec).med,
			P50:        time.Duration(r.echoStat(k, p50).med),
			P99:        time.Duration(r.echoStat(k, p99).med),
			CPU:        r.echoStat(k, cpu).med,
			CPUPerMsg:  r.echoStat(k, cpuPerMsg).med,
		})
	}
	return f
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

// Markdown renders the report: how it was run, the ratios against nginx,
// the figures (idle connections and handshakes, then each echo workload)
// and, when asked for, the look inside the sidecar.
func (rep *Report) Markdown() string {
	var b strings.Builder
	rep.writeSetup(&b)
	rep.writeRatios(&b)
	rep.writeIdle(&b)
	for k, w := range rep.Config.Workloads {
		rep.writeEcho(&b, k, w)
	}
	for _, d := range rep.Diagnoses {
		b.WriteString("\n")
		b.WriteString(d.Markdown())
	}
	fmt.Fprintf(&b, "\n(whole run: %s)\n", rep.Elapsed.Round(time.Second))
	return b.String()
}

func (rep *Report) writeSetup(b *strings.Builder) {
	c, e := rep.Config, rep.Env
	fmt.Fprintf(b, "### WebSocket proxies side by side\n\n")
	fmt.Fprintf(b, "%d CPUs, Linux %s, %s", e.CPUs, e.Kernel, e.GoVersion)
	if e.NginxVersion != "" {
		fmt.Fprintf(b, ", nginx %s", e.NginxVersion)
	}
	if e.HAProxyVersion != "" {
		fmt.Fprintf(b, ", HAProxy %s", e.HAProxyVersion)
	}
	if e.SidecarRev != "" {
		fmt.Fprintf(b, ", presence-sidecar %s", e.SidecarRev)
	}
	fmt.Fprintf(b, ". Client, proxy and a gorilla/websocket echo upstream on the same machine.\n")
	var names []string
	for _, w := range c.Workloads {
		names = append(names, w.String())
	}
	fmt.Fprintf(b, "Each run: %d idle connections (memory); then, per workload (%s), %d fresh clients echoing text messages in a closed loop for %s after %s warm-up; then %d clients opening connections, each a new session, for %s (handshakes). ",
		c.Idle, strings.Join(names, "; "), c.Clients, c.Duration, c.Warmup, handshakeWorkers, handshakeTime(c))
	fmt.Fprintf(b, "%d interleaved run(s) of each candidate, fresh proxy process each run; median (min–max).\n", c.Reps)
	fmt.Fprintf(b, "Messages: the seed's `{\"action\":\"message\",\"data\":{\"sessionId\":…,\"text\":…}}`, the text chat-like words to the exact size.")
	if exts := rep.extensions(); len(exts) > 0 {
		fmt.Fprintf(b, " Deflate: offered by every client, accepted by the upstream, checked on every echo client's handshake through every proxy (`Sec-WebSocket-Extensions: %s`). ", strings.Join(exts, "`, `"))
		fmt.Fprintf(b, "gorilla/websocket compresses at level 1 with no context takeover either way (a browser's peer usually keeps the context, which costs an inspecting proxy more; not measured here)")
		var shares []string
		for _, w := range c.Workloads {
			if w.Deflate {
				shares = append(shares, fmt.Sprintf("%s ≈ %.0f%%", strings.TrimSuffix(w.String(), ", deflate"), 100*deflatedShare(echoMessage("bench-sidecar-presence-0-echo-0", w.Size, 0))))
			}
		}
		fmt.Fprintf(b, "; on the wire a message is %s of its size. presence-sidecar inflates what it inspects; nginx and HAProxy relay the compressed frames as they are.", strings.Join(shares, ", "))
	}
	b.WriteString("\n")
	var noise []float64
	for _, r := range rep.Results {
		for _, s := range r.Samples {
			for _, e := range s.Echo {
				noise = append(noise, e.Foreign)
			}
		}
	}
	if len(noise) > 0 {
		slices.Sort(noise)
		fmt.Fprintf(b, "Other work on the machine during the measured echo windows: median %.2f, max %.2f of %d cores (more than ~0.1 makes msgs/s and p99 noisy; CPU per echo and memory much less so).\n",
			noise[len(noise)/2], noise[len(noise)-1], e.CPUs)
	}
}

// extensions lists the distinct Sec-WebSocket-Extensions the deflate
// workloads' handshakes got.
func (rep *Report) extensions() []string {
	var out []string
	for _, r := range rep.Results {
		for _, s := range r.Samples {
			for k, e := range s.Echo {
				if rep.Config.Workloads[k].Deflate && !slices.Contains(out, e.Extensions) {
					out = append(out, e.Extensions)
				}
			}
		}
	}
	return out
}

func (rep *Report) writeIdle(b *strings.Builder) {
	c := rep.Config
	fmt.Fprintf(b, "\n#### %d idle connections, and handshakes\n\n", c.Idle)
	heldHead, heldSep := "", ""
	if c.Hold > 0 {
		heldHead, heldSep = fmt.Sprintf(" … after holding them %s |", c.Hold), "---|"
	}
	fmt.Fprintf(b, "| candidate | memory per idle connection (proxy RSS) |%s handshakes/s (each a new session) | proxy CPU per handshake |\n", heldHead)
	fmt.Fprintf(b, "|---|---|%s---|---|\n", heldSep)
	for _, r := range rep.Results {
		n := len(r.Samples)
		mem, held, perHS := "—", "—", "—"
		if r.Proxy {
			mem = cell(r.stat(memPerConn), n, kib)
			held = cell(r.stat(memHeld), n, kib)
			perHS = cell(r.stat(cpuPerHS), n, micros)
		}
		if c.Hold > 0 {
			mem += " | " + held
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", r.Label, mem, cell(r.stat(handshakes), n, rate), perHS)
	}
}

func (rep *Report) writeEcho(b *strings.Builder, k int, w Workload) {
	fmt.Fprintf(b, "\n#### Echo, %s\n\n", w)
	fmt.Fprintf(b, "| candidate | msgs/s | p50 | p99 | proxy CPU (cores) | proxy CPU per echo |\n")
	fmt.Fprintf(b, "|---|---|---|---|---|---|\n")
	for _, r := range rep.Results {
		n := len(r.Samples)
		cpuCell, perMsg := "—", "—"
		if r.Proxy {
			cpuCell = cell(r.echoStat(k, cpu), n, cores)
			perMsg = cell(r.echoStat(k, cpuPerMsg), n, micros)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s |\n", r.Label,
			cell(r.echoStat(k, msgsPerSec), n, rate), cell(r.echoStat(k, p50), n, ms), cell(r.echoStat(k, p99), n, ms), cpuCell, perMsg)
	}
}
