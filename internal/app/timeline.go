package app

import (
	"time"

	"github.com/presence-sidecar/presence-sidecar/handoff"
	"github.com/presence-sidecar/presence-sidecar/timeline"
)

// buildTimeline makes the recorder of the sessions' histories (package
// timeline) that both modes' engines and the deliverer write to. Events are
// stamped with the replica that saw them: cluster mode's replica id, or the
// host name in the embedded mode.
func (a *App) buildTimeline() {
	replica := hostName()
	if a.cfg.RedisURL != "" {
		a.replica = replicaID()
		replica = a.replica
	}
	a.timeline = timeline.New(timeline.Options{Replica: replica, Log: a.log.Named("timeline")})
}

// observeDelivery reports each delivery attempt to the metrics and to the
// session's timeline: one event per attempt, which says its outcome.
func (a *App) observeDelivery(o handoff.Outcome) {
	a.metrics.delivery(o)
	a.observePlatform(o) // readiness.go
	a.recordDelivery(o)  // history.go
	e := timeline.Event{Notification: string(o.Kind), WebhookID: o.ID, Attempt: o.Attempts, Status: o.Status,
		Error: o.Error, DurationMs: float64(o.Latency.Microseconds()) / 1000}
	switch o.Result {
	case handoff.Delivered:
		e.Kind = timeline.Delivered
	case handoff.Dead:
		e.Kind = timeline.DeadLettered
	default:
		e.Kind = timeline.Attempted
		if !o.NextAttemptAt.IsZero() {
			next := o.NextAttemptAt.UTC().Truncate(time.Millisecond)
			e.NextAttempt = &next
		}
	}
	a.timeline.Add(o.SessionID, e)
}
