// Package timeline keeps each session's recent history for operators: when
// its connections opened and closed (with the reason and the replica), when
// the probe found one dead, its activity in summaries, its hand-overs, its
// absences and returns, and each notification's queueing, attempts and
// outcome with its webhook-id (GET /v1/sessions/{id}/events and the admin
// listener's /sessions/{id} page; README, "Admin listener").
//
// The contract:
//   - Bounded: at most Options.PerSession events per session (default 64)
//     and Options.Total in all (default 5,000) in memory; past either, the
//     oldest events go first, and every drop is counted (Stats).
//   - Never in the way: Recorder's methods take one mutex for a map lookup
//     and a slice write and return; nothing on the data path waits for a
//     disk or Redis. Run writes what changed to the Backend once per
//     Options.FlushEvery; a write that fails is dropped and counted, and
//     the events stay in memory.
//   - Where the store allows, persisted: the embedded mode's backend is a
//     bbolt file of its own under DATA_DIR (store.OpenTimeline), so the
//     history survives a restart; cluster mode's is a capped list per
//     session in Redis (store/redisstate), so every replica reads the same
//     history. A read merges the backend's events with this process's not
//     yet written ones.
//   - Best effort, not a ledger: the outbox and the state machine are the
//     truth (store); the timeline explains them.
package timeline

import (
	"context"
	"time"
)

// Kind names what happened.
type Kind string

const (
	ConnOpened   Kind = "conn.opened"   // a WebSocket of the session opened (or was identified by a frame)
	ConnClosed   Kind = "conn.closed"   // it closed; Reason is the proxy's (proxy/event.CloseReason)
	ProbeTimeout Kind = "probe.timeout" // the client did not answer the liveness probe; conn.closed follows
	Activity     Kind = "activity"      // Messages client messages and Requests HTTP requests from At to Until
	HandoffOn    Kind = "handoff.started"
	HandoffOff   Kind = "handoff.ended"
	Absent       Kind = "absent"   // decided absent: Episode, Reason (disconnected or inactive)
	Returned     Kind = "returned" // seen again after absence Episode
	Queued       Kind = "notification.queued"
	Attempted    Kind = "notification.attempt" // an attempt that will be retried (NextAttemptAt)
	Delivered    Kind = "notification.delivered"
	DeadLettered Kind = "notification.dead"
)

// Event is one entry of a session's history, as the API shows it. Fields
// that do not apply to a kind are omitted.
type Event struct {
	// ID is unique in the cluster and stable: an activity summary keeps its
	// id while it grows, so a backend replaces it rather than adding one.
	ID      string    `json:"id"`
	At      time.Time `json:"at"`
	Kind    Kind      `json:"kind"`
	Replica string    `json:"replica,omitempty"` // the replica that saw it (cluster mode: its id; embedded: the host)
	Conn    uint64    `json:"conn,omitempty"`    // the proxy's connection number, per replica
	Reason  string    `json:"reason,omitempty"`  // close reason, absence reason, or the hand-over's source (rules, api)
	Episode uint64    `json:"episode,omitempty"`

	Notification string     `json:"notification,omitempty"` // client.offline or client.online
	WebhookID    string     `json:"webhookId,omitempty"`
	Attempt      int        `json:"attempt,omitempty"`
	Status       int        `json:"status,omitempty"` // HTTP status of the attempt; 0: no response
	Error        string     `json:"error,omitempty"`
	DurationMs   float64    `json:"durationMs,omitempty"`
	NextAttempt  *time.Time `json:"nextAttemptAt,omitempty"`

	Messages int        `json:"messages,omitempty"` // activity: client data messages
	Requests int        `json:"requests,omitempty"` // activity: HTTP requests (and failed handshakes)
	Until    *time.Time `json:"until,omitempty"`    // activity: the last one counted
}

// Backend keeps the recent part of the history where the store allows.
// Both calls are bounded by ctx; Recorder never calls them on the data path.
type Backend interface {
	// Save adds each session's events (oldest first); an event whose ID is
	// stored already replaces it. A backend keeps at most its own bound
	// per session, the newest.
	Save(ctx context.Context, batch map[string][]Event) error
	// Load returns a session's stored events, oldest first.
	Load(ctx context.Context, sessionID string) ([]Event, error)
	// Name says where the history is kept ("bbolt", "redis"), for the API.
	Name() string
}

// History is what GET /v1/sessions/{id}/events answers.
type History struct {
	SessionID string  `json:"sessionId"`
	Events    []Event `json:"events"` // oldest first
	Bounds    Bounds  `json:"bounds"`
	// Kept says where the history lives: "memory", or "memory+bbolt",
	// "memory+redis". StoreError is set when the backend could not be read
	// (the events are then this process's memory only).
	Kept       string `json:"kept"`
	StoreError string `json:"storeError,omitempty"`
}

// Bounds are the figures a history is kept within.
type Bounds struct {
	PerSession int `json:"perSession"`
	Total      int `json:"total"`
}
