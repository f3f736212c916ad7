package status

import (
	"fmt"
	"html/template"
	"strings"
	"time"

	"github.com/presence-sidecar/presence-sidecar/internal/history"
)

// chart is one small inline SVG of the last hour: no script, no external
// asset, readable with the page's CSP (img-src data: only).
type chart struct {
	ID, Title string
	Now       string // the latest minute's figure, in words
	SVG       template.HTML
	Legend    []legend
}

type legend struct{ Color, Label string }

const (
	chartW, chartH = 360, 110
	padL, padB     = 34, 16 // room for the y labels and the time axis
	green, red     = "#1f9d55", "#c53030"
	amber, blue    = "#b7791f", "#2b6cb0"
)

// series is one chart's values per minute; stack draws them as stacked bars,
// otherwise as lines.
type series struct {
	color, label string
	values       []float64
	has          []bool // a value exists for that minute
}

// charts draws the hour h (oldest first, as history.Recorder.Last gives).
func charts(h []history.Minute) []chart {
	n := len(h)
	conns, depth, absent, back := make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
	deliv, retry, dead, p95 := make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
	sampled, depthKnown, hasP95 := make([]bool, n), make([]bool, n), make([]bool, n)
	all := make([]bool, n)
	for i, m := range h {
		all[i], sampled[i] = true, m.Sampled
		conns[i] = float64(m.Connections)
		depth[i], depthKnown[i] = float64(m.OutboxDepth), m.Sampled && m.OutboxDepth >= 0
		absent[i], back[i] = float64(m.Absences), float64(m.Returns)
		deliv[i], retry[i], dead[i] = float64(m.Outcomes[history.Delivered]), float64(m.Outcomes[history.Retried]), float64(m.Outcomes[history.Dead])
		p95[i], hasP95[i] = m.P95.Seconds()*1000, m.P95 > 0
	}
	last := h[n-1]
	return []chart{
		lineChart("chart-connections", "Open connections", fmt.Sprintf("%d now", last.Connections), integer,
			series{blue, "open WebSocket connections", conns, sampled}),
		barChart("chart-transitions", "Absences and returns per minute",
			fmt.Sprintf("%d absent, %d back this minute", last.Absences, last.Returns),
			series{red, "went absent", absent, all}, series{green, "came back", back, all}),
		barChart("chart-deliveries", "Delivery attempts per minute",
			fmt.Sprintf("%d delivered, %d retried, %d dead-lettered this minute", last.Outcomes[history.Delivered], last.Outcomes[history.Retried], last.Outcomes[history.Dead]),
			series{green, "delivered", deliv, all}, series{amber, "failed, to be retried", retry, all}, series{red, "dead-lettered", dead, all}),
		lineChart("chart-latency", "Delivery latency, p95", latencyNow(last.P95), millis,
			series{amber, "p95 of the minute's HTTP exchanges", p95, hasP95}),
		lineChart("chart-outbox", "Outbox depth", depthNow(last), integer,
			series{red, "notifications not delivered yet", depth, depthKnown}),
	}
}

func latencyNow(d time.Duration) string {
	if d == 0 {
		return "no delivery this minute"
	}
	return millis(d.Seconds()*1000) + " this minute"
}

func depthNow(m history.Minute) string {
	if m.OutboxDepth < 0 {
		return "unknown"
	}
	return fmt.Sprintf("%d now", m.OutboxDepth)
}

// integer and millis label the y axis.
func integer(v float64) string { return fmt.Sprintf("%.0f", v) }
func millis(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.3gs", v/1000)
	}
	return fmt.Sprintf("%.3gms", v)
}

// frame starts an SVG with its axes: y from 0 to top, x the last hour.
func frame(b *strings.Builder, title string, top float64, label func(float64) string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s">`,
		chartW, chartH, chartW, chartH, template.HTMLEscapeString(title))
	x0, y0 := padL, chartH-padB
	fmt.Fprintf(b, `<line x1="%d" y1="4" x2="%d" y2="%d" stroke="#c9d0db"/><line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#c9d0db"/>`,
		x0, x0, y0, x0, y0, chartW-2, y0)
	fmt.Fprintf(b, `<text x="%d" y="12" font-size="10" text-anchor="end" fill="#667">%s</text>`, x0-4, label(top))
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="10" text-anchor="end" fill="#667">0</text>`, x0-4, y0)
	for _, t := range []struct {
		at           float64
		anchor, text string
	}{{0, "start", "−60 min"}, {0.5, "middle", "−30 min"}, {1, "end", "now"}} {
		fmt.Fprintf(b, `<text x="%.1f" y="%d" font-size="10" text-anchor="%s" fill="#667">%s</text>`,
			float64(x0)+t.at*float64(chartW-2-x0), chartH-3, t.anchor, t.text)
	}
}

// scale is the y axis's top: the largest value rounded up to 1, 2 or 5 × 10ⁿ.
func scale(ss ...series) float64 {
	top := 0.0
	for _, s := range ss {
		for i, v := range s.values {
			if s.has[i] {
				top = max(top, v)
			}
		}
	}
	if top <= 0 {
		return 1
	}
	p := 1.0
	for p*10 <= top {
		p *= 10
	}
	for p > top {
		p /= 10
	}
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= top {
			return m * p
		}
	}
	return top
}

func lineChart(id, title, now string, label func(float64) string, s series) chart {
	var b strings.Builder
	top := scale(s)
	frame(&b, title, top, label)
	n := len(s.values)
	step := float64(chartW-2-padL) / float64(max(1, n-1))
	y := func(v float64) float64 { return float64(chartH-padB) - v/top*float64(chartH-padB-6) }
	var pts []string
	flush := func() {
		if len(pts) > 1 {
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, s.color, strings.Join(pts, " "))
		}
		pts = pts[:0]
	}
	for i, v := range s.values {
		if !s.has[i] {
			flush()
			continue
		}
		x := float64(padL) + float64(i)*step
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y(v)))
		// A dot with a tooltip per minute; a lone minute shows as a dot.
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="1.6" fill="%s"><title>%s: %s</title></circle>`,
			x, y(v), s.color, minuteLabel(n, i), label(v))
	}
	flush()
	b.WriteString(`</svg>`)
	return chart{ID: id, Title: title, Now: now, SVG: template.HTML(b.String()), Legend: []legend{{s.color, s.label}}}
}

func barChart(id, title, now string, ss ...series) chart {
	var b strings.Builder
	n := len(ss[0].values)
	sums := series{values: make([]float64, n), has: make([]bool, n)}
	for i := range n {
		sums.has[i] = true
		for _, s := range ss {
			sums.values[i] += s.values[i]
		}
	}
	top := scale(sums)
	frame(&b, title, top, integer)
	slot := float64(chartW-2-padL) / float64(n)
	h := float64(chartH - padB - 6)
	var lg []legend
	for _, s := range ss {
		lg = append(lg, legend{s.color, s.label})
	}
	for i := range n {
		if sums.values[i] == 0 {
			continue
		}
		base := float64(chartH - padB)
		var tip []string
		for _, s := range ss {
			v := s.values[i]
			if v == 0 {
				continue
			}
			bh := v / top * h
			base -= bh
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`,
				float64(padL)+float64(i)*slot+0.5, base, max(1, slot-1), bh, s.color)
			tip = append(tip, fmt.Sprintf("%.0f %s", v, s.label))
		}
		fmt.Fprintf(&b, `<rect x="%.1f" y="4" width="%.1f" height="%d" fill="transparent"><title>%s: %s</title></rect>`,
			float64(padL)+float64(i)*slot, slot, chartH-padB-4, minuteLabel(n, i), template.HTMLEscapeString(strings.Join(tip, ", ")))
	}
	b.WriteString(`</svg>`)
	return chart{ID: id, Title: title, Now: now, SVG: template.HTML(b.String()), Legend: lg}
}

// minuteLabel is minute i of n in a tooltip: "12 min ago", "this minute".
func minuteLabel(n, i int) string {
	if ago := n - 1 - i; ago > 0 {
		return fmt.Sprintf("%d min ago", ago)
	}
	return "this minute"
}
