package presence

import "github.com/presence-sidecar/presence-sidecar/store"

// Transitions counts presence transitions since start.
type Transitions struct {
	Absent     uint64 `json:"absent"`  // present -> absent
	Present    uint64 `json:"present"` // absent -> present
	HandoffOn  uint64 `json:"handoffOn"`
	HandoffOff uint64 `json:"handoffOff"`
}

// Stats is a snapshot for metrics.
type Stats struct {
	Sessions             int         `json:"sessions"` // tracked sessions
	Present              int         `json:"present"`
	Absent               int         `json:"absent"`
	HandedOver           int         `json:"handedOver"`
	Connections          int         `json:"connections"`          // live connections of tracked sessions
	UntrackedConnections int64       `json:"untrackedConnections"` // live connections without a session id
	UntrackedRequests    uint64      `json:"untrackedRequests"`    // HTTP requests without a session id, since start
	Transitions          Transitions `json:"transitions"`
	OfflineCommitted     uint64      `json:"offlineCommitted"` // client.offline notifications written to the outbox
	OnlineCommitted      uint64      `json:"onlineCommitted"`  // client.online notifications written to the outbox
	UnsentNotifications  int         `json:"unsentNotifications"`
	CommitErrors         uint64      `json:"commitErrors"`
	IDsRefused           uint64      `json:"idsRefused"`      // ids longer than store.MaxIDBytes, not tracked, since start
	Deadlines            int         `json:"deadlines"`       // heap entries, stale ones included
	MaxSessions          int         `json:"maxSessions"`     // the cap (0: none)
	SessionsShed         uint64      `json:"sessionsShed"`    // sessions shed to make room under the cap, since start
	SessionsRefused      uint64      `json:"sessionsRefused"` // new sessions not tracked at the cap, since start
}

// Stats counts sessions by state, connections and transitions.
func (e *Engine) Stats() Stats {
	st := Stats{
		UntrackedConnections: e.counts.untrackedConns.Load(),
		UntrackedRequests:    e.counts.untrackedReqs.Load(),
		Transitions: Transitions{
			Absent: e.counts.absent.Load(), Present: e.counts.returned.Load(),
			HandoffOn: e.counts.handoffOn.Load(), HandoffOff: e.counts.handoffOff.Load(),
		},
		OfflineCommitted: e.counts.offlineCommitted.Load(),
		OnlineCommitted:  e.counts.onlineCommitted.Load(),
		CommitErrors:     e.counts.commitErrors.Load(),
		IDsRefused:       e.counts.idsRefused.Load(),
		MaxSessions:      int(e.cap.max),
		SessionsShed:     e.counts.sessionsShed.Load(),
		SessionsRefused:  e.counts.sessionsRefused.Load(),
	}
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		st.Sessions += len(sh.sessions)
		st.Deadlines += len(sh.due)
		for _, s := range sh.sessions {
			if s.state == store.Absent {
				st.Absent++
			} else {
				st.Present++
			}
			if e.isHandedOver(s) {
				st.HandedOver++
			}
			st.Connections += int(s.conns)
		}
		for _, q := range sh.unsent {
			st.UnsentNotifications += len(q)
		}
		sh.mu.Unlock()
	}
	return st
}
