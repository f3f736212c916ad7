package store

import (
	"errors"
	"time"
)

const (
	// recentLimit bounds the list of delivered and dead-lettered notifications kept for operators.
	recentLimit = 200
	// deadLimit bounds the dead-letter list: a platform that rejects everything
	// for weeks must not fill the disk. The oldest are dropped first.
	deadLimit = 10_000
)

// validateCommit rejects what no store can key: every store checks the same
// things before writing anything, so a bad Commit fails the same way everywhere.
func validateCommit(put []Session, forget []string, notes []Notification) error {
	for _, s := range put {
		if s.ID == "" {
			return errors.New("store: commit: session with an empty id")
		}
	}
	for _, id := range forget {
		if id == "" {
			return errors.New("store: commit: forget of an empty session id")
		}
	}
	for _, n := range notes {
		if n.ID == "" {
			return errors.New("store: commit: notification with an empty id (the webhook-id)")
		}
	}
	return nil
}

var errEmptyBotID = errors.New("store: bot settings with an empty bot id")

// stampDelivered and stampDead fill in the time of the outcome when the caller did not.
func stampDelivered(n Notification) Notification {
	if n.DeliveredAt.IsZero() {
		n.DeliveredAt = time.Now()
	}
	return n
}

func stampDead(n Notification) Notification {
	if n.DeadAt.IsZero() {
		n.DeadAt = time.Now()
	}
	return n
}

// ResetForReplay gives a dead letter a fresh delivery schedule under its old id.
func ResetForReplay(n Notification, seq uint64) Notification {
	n.Seq, n.Attempts, n.LastError, n.LastStatus = seq, 0, "", 0
	n.NextAttemptAt, n.DeadAt, n.DeliveredAt = time.Time{}, time.Time{}, time.Time{}
	n.ReplayedAt = time.Now()
	return n
}

// cloneBot copies the Enabled pointer so that a caller's later write through
// it cannot change what the store holds.
func cloneBot(s BotSettings) BotSettings {
	if s.Enabled != nil {
		v := *s.Enabled
		s.Enabled = &v
	}
	return s
}
