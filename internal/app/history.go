package app

import (
	"context"
	"time"

	"github.com/presence-sidecar/presence-sidecar/handoff"
	"github.com/presence-sidecar/presence-sidecar/internal/history"
)

// historySample is how often the status page's charts read the gauges.
const historySample = 5 * time.Second

// buildHistory starts the last hour the status page charts (package
// history): this replica's connections, transitions and deliveries.
func (a *App) buildHistory() {
	stats, depth := a.presenceStats(), a.outboxDepth()
	a.history = history.New(func() history.Totals {
		t := history.Totals{Connections: a.proxy.Stats().OpenWebSockets.Load(), OutboxDepth: -1}
		if stats != nil {
			st := stats()
			t.Absences, t.Returns = int64(st.Transitions.Absent), int64(st.Transitions.Present)
		}
		if depth != nil {
			if n, err := depth(); err == nil {
				t.OutboxDepth = n
			}
		}
		return t
	}, nil)
	a.runners = append(a.runners, runner{"history", func(ctx context.Context) error { return a.history.Run(ctx, historySample) }})
}

// recordDelivery is one attempt in the charts.
func (a *App) recordDelivery(o handoff.Outcome) {
	out := history.Retried
	switch o.Result {
	case handoff.Delivered:
		out = history.Delivered
	case handoff.Dead:
		out = history.Dead
	}
	a.history.Delivery(out, o.Status != 0 || o.Latency > 0, o.Latency)
}
