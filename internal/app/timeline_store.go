package app

import (
	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/timeline"
)

// timelineBackend gives the recorder its store: Redis in cluster mode, a
// bbolt file of its own under DATA_DIR in the embedded mode. A file that
// cannot be opened leaves the timeline in memory only, with a warning: the
// timeline explains presence and must never stop it.
func (a *App) timelineBackend() {
	if a.timeline == nil {
		return
	}
	if a.redis != nil {
		a.timeline.UseBackend(a.redis.Timeline(timeline.DefaultPerSession))
	} else {
		f, err := store.OpenTimeline(a.cfg.DataDir, timeline.DefaultPerSession, a.cfg.PresenceForgetAfter)
		if err != nil {
			a.log.Warn("timeline: session histories are kept in memory only", zap.Error(err))
		} else {
			a.timeline.UseBackend(f)
			a.closers = append(a.closers, f.Close)
		}
	}
	a.runners = append(a.runners, runner{"timeline", a.timeline.Run})
}
