package harness

import (
	"encoding/json"
	"math"
	"time"
)

// The JSON summary: the medians and ranges the Markdown shows, and the
// ratios against nginx, for tools that compare runs.
type (
	jsonStat struct {
		Median float64 `json:"median"`
		Min    float64 `json:"min"`
		Max    float64 `json:"max"`
	}
	jsonEcho struct {
		Workload       string    `json:"workload"` // as -workloads spells it
		Size           int       `json:"size_bytes"`
		Deflate        bool      `json:"deflate"`
		Extensions     string    `json:"extensions,omitempty"` // Sec-WebSocket-Extensions of the first run's handshakes
		MsgsPerSec     jsonStat  `json:"msgs_per_sec"`
		P50            jsonStat  `json:"p50_ms"`
		P99            jsonStat  `json:"p99_ms"`
		CPU            *jsonStat `json:"proxy_cpu_cores,omitempty"`
		CPUPerEcho     *jsonStat `json:"proxy_cpu_per_echo_us,omitempty"`
		OtherLoad      jsonStat  `json:"other_load_cores"`
		VsNginxMsgs    *float64  `json:"vs_nginx_msgs_per_sec,omitempty"`
		VsNginxP99     *float64  `json:"vs_nginx_p99,omitempty"`
		VsNginxCPUEcho *float64  `json:"vs_nginx_proxy_cpu_per_echo,omitempty"`
	}
	jsonCandidate struct {
		Name            string     `json:"name"`
		Label           string     `json:"label"`
		Runs            int        `json:"runs"`
		MemPerConn      *jsonStat  `json:"mem_per_idle_conn_bytes,omitempty"`
		MemPerConnHeld  *jsonStat  `json:"mem_per_idle_conn_held_bytes,omitempty"`
		Handshakes      jsonStat   `json:"handshakes_per_sec"`
		CPUPerHandshake *jsonStat  `json:"proxy_cpu_per_handshake_us,omitempty"`
		VsNginxMem      *float64   `json:"vs_nginx_mem_per_idle_conn,omitempty"`
		VsNginxHS       *float64   `json:"vs_nginx_handshakes_per_sec,omitempty"`
		Echo            []jsonEcho `json:"echo"`
	}
	jsonReport struct {
		CPUs          int             `json:"cpus"`
		Kernel        string          `json:"kernel"`
		Go            string          `json:"go"`
		Nginx         string          `json:"nginx,omitempty"`
		HAProxy       string          `json:"haproxy,omitempty"`
		Sidecar       string          `json:"sidecar_rev,omitempty"`
		Idle          int             `json:"idle_conns"`
		Clients       int             `json:"echo_clients"`
		Duration      float64         `json:"echo_seconds"`
		Warmup        float64         `json:"warmup_seconds"`
		HandshakeTime float64         `json:"handshake_seconds"`
		HoldTime      float64         `json:"hold_seconds,omitempty"`
		Reps          int             `json:"runs"`
		Elapsed       float64         `json:"elapsed_seconds"`
		Candidates    []jsonCandidate `json:"candidates"`
	}
)

// JSON renders the summary, indented.
func (rep *Report) JSON() ([]byte, error) {
	c, e := rep.Config, rep.Env
	out := jsonReport{
		CPUs: e.CPUs, Kernel: e.Kernel, Go: e.GoVersion, Nginx: e.NginxVersion, HAProxy: e.HAProxyVersion, Sidecar: e.SidecarRev,
		Idle: c.Idle, Clients: c.Clients, Duration: c.Duration.Seconds(), Warmup: c.Warmup.Seconds(),
		HandshakeTime: handshakeTime(c).Seconds(), HoldTime: c.Hold.Seconds(), Reps: c.Reps,
		Elapsed: math.Round(rep.Elapsed.Seconds()),
	}
	var base *Figures
	if ng := rep.Result(Nginx); ng != nil {
		m := ng.Medians()
		base = &m
	}
	// vs is the ratio to nginx's median, unless this is nginx or there is none.
	vs := func(r *Result, get func(Figures) float64) *float64 {
		if base == nil || r.Name == Nginx || get(*base) == 0 {
			return nil
		}
		v := round(get(r.Medians())/get(*base), 3)
		return &v
	}
	for _, r := range rep.Results {
		jc := jsonCandidate{Name: r.Name, Label: r.Label, Runs: len(r.Samples),
			Handshakes: js(r.stat(handshakes), 1, 0),
			VsNginxHS:  vs(r, func(f Figures) float64 { return f.HandshakesPerSec }),
		}
		if r.Proxy {
			jc.MemPerConn = ptr(js(r.stat(memPerConn), 1, 0))
			if c.Hold > 0 {
				jc.MemPerConnHeld = ptr(js(r.stat(memHeld), 1, 0))
			}
			jc.CPUPerHandshake = ptr(js(r.stat(cpuPerHS), 1e6, 1))
			jc.VsNginxMem = vs(r, func(f Figures) float64 { return f.MemPerConn })
		}
		for k, w := range c.Workloads {
			je := jsonEcho{Workload: w.Flag(), Size: w.Size, Deflate: w.Deflate,
				MsgsPerSec:  js(r.echoStat(k, msgsPerSec), 1, 0),
				P50:         js(r.echoStat(k, p50), 1/float64(time.Millisecond), 3),
				P99:         js(r.echoStat(k, p99), 1/float64(time.Millisecond), 3),
				OtherLoad:   js(r.echoStat(k, foreign), 1, 2),
				VsNginxMsgs: vs(r, func(f Figures) float64 { return f.Echo[k].MsgsPerSec }),
				VsNginxP99:  vs(r, func(f Figures) float64 { return float64(f.Echo[k].P99) }),
			}
			if len(r.Samples) > 0 {
				je.Extensions = r.Samples[0].Echo[k].Extensions
			}
			if r.Proxy {
				je.CPU = ptr(js(r.echoStat(k, cpu), 1, 3))
				je.CPUPerEcho = ptr(js(r.echoStat(k, cpuPerMsg), 1e6, 2))
				je.VsNginxCPUEcho = vs(r, func(f Figures) float64 { return f.Echo[k].CPUPerMsg })
			}
			jc.Echo = append(jc.Echo, je)
		}
		out.Candidates = append(out.Candidates, jc)
	}
	b, err := json.MarshalIndent(out, "", "  ")
	return append(b, '\n'), err
}

// js scales a stat into the JSON's unit and rounds it to digits decimals.
func js(s stat, scale float64, digits int) jsonStat {
	return jsonStat{round(s.med*scale, digits), round(s.lo*scale, digits), round(s.hi*scale, digits)}
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

func ptr[T any](v T) *T { return &v }
