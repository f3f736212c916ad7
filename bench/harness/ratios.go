package harness

import (
	"fmt"
	"strings"
)

// ratioRow is one line of the table against nginx: a figure of one
// workload (or of none), and how to get it from a candidate's medians.
type ratioRow struct {
	name  string
	proxy bool // a figure of the proxy process: none for direct
	get   func(Figures) float64
}

func (rep *Report) ratioRows() []ratioRow {
	rows := []ratioRow{
		{"memory per idle connection", true, func(f Figures) float64 { return f.MemPerConn }},
		{"handshakes/s (each a new session)", false, func(f Figures) float64 { return f.HandshakesPerSec }},
	}
	for k, w := range rep.Config.Workloads {
		rows = append(rows,
			ratioRow{w.String() + ": echo msgs/s", false, func(f Figures) float64 { return f.Echo[k].MsgsPerSec }},
			ratioRow{w.String() + ": p99", false, func(f Figures) float64 { return float64(f.Echo[k].P99) }},
			ratioRow{w.String() + ": proxy CPU per echo", true, func(f Figures) float64 { return f.Echo[k].CPUPerMsg }},
		)
	}
	return rows
}

// writeRatios writes one table against nginx: a row per figure, a column
// per candidate, so that every workload fits side by side.
func (rep *Report) writeRatios(b *strings.Builder) {
	ng := rep.Result(Nginx)
	if ng == nil || len(rep.Results) < 2 {
		return
	}
	base := ng.Medians()
	var others []*Result
	for _, r := range rep.Results {
		if r.Name != Nginx {
			others = append(others, r)
		}
	}
	fmt.Fprintf(b, "\n#### Against nginx\n\n")
	fmt.Fprintf(b, "Ratio of medians to nginx's; msgs/s and handshakes/s: higher is better; memory, p99 and CPU per echo: lower is better.\n\n")
	b.WriteString("| |")
	for _, r := range others {
		fmt.Fprintf(b, " %s |", r.Label)
	}
	b.WriteString("\n|---|")
	b.WriteString(strings.Repeat("---|", len(others)))
	b.WriteString("\n")
	for _, row := range rep.ratioRows() {
		fmt.Fprintf(b, "| %s |", row.name)
		for _, r := range others {
			v := "—"
			if r.Proxy || !row.proxy {
				v = ratio(row.get(r.Medians()), row.get(base))
			}
			fmt.Fprintf(b, " %s |", v)
		}
		b.WriteString("\n")
	}
}

func ratio(v, base float64) string {
	if base == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", v/base)
}
