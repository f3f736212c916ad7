package admin

import (
	"context"

	"github.com/presence-sidecar/presence-sidecar/presence"
	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
	"github.com/presence-sidecar/presence-sidecar/timeline"
)

// Cluster is what the admin listener shows of cluster mode beyond the
// sessions: the registry of replicas.
type Cluster interface {
	Replicas() ([]redisstate.Replica, error)
}

// Presence is what the admin listener reads and changes of presence: the
// embedded engine (presence.Engine) or cluster mode's (presence/cluster),
// whose views are the cluster's, read from Redis.
type Presence interface {
	Sessions() []presence.View
	Session(id string) (presence.View, bool)
	SetHandoff(id, botID string, on bool) error
	BotSettings(botID string) presence.Settings
	PutBotSettings(botID string, o store.BotSettings, clear ...string) (presence.Settings, error)
	// BotIDs lists the bots with settings of their own (file or API).
	BotIDs() []string
	Stats() presence.Stats
	// Timeline is a session's recent history (GET /v1/sessions/{id}/events).
	Timeline(ctx context.Context, id string) timeline.History
}

// Outbox is what the admin listener shows and replays of the notifications:
// the embedded store and deliverer, or Redis's shared queues.
type Outbox interface {
	// Pending lists up to limit notifications waiting for delivery, oldest
	// first, and how many wait in all.
	Pending(limit int) ([]store.Notification, int, error)
	Recent(limit int) ([]store.Notification, error)
	DeadLetters() ([]store.Notification, error)
	// Replay queues a dead letter again (store.ErrNotFound: no such id).
	Replay(id string) (store.Notification, error)
}
