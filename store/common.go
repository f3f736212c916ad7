package store

import (
	"errors"
	"fmt"
	"time"
)

const (
	// recentLimit bounds the list of delivered and dead-lettered notifications kept for operators.
	recentLimit = 200
	// deadLimit bounds the dead-letter list: a platform that rejects everything
	// for weeks must not fill the disk. The oldest are dropped first.
	deadLimit = 10_000
)

// MaxIDBytes bounds session and bot ids, for every store: bbolt refuses keys
// over 32 KiB, and an id that long is no client's but an attacker's. The
// presence engine does not track ids over it (they never reach a store);
// Commit refuses them too, so that no caller can poison a batch.
const MaxIDBytes = 512

// RejectedError is Commit's error when some of its records can never be
// stored: nothing was written, and the same batch would fail the same way
// again. SessionIDs names the sessions at fault (shortened to MaxIDBytes),
// so that a caller can set them aside and commit the rest.
type RejectedError struct {
	SessionIDs []string
	Reason     string
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("store: commit refused for %d session(s), %s", len(e.SessionIDs), e.Reason)
}

// validateCommit rejects what no store can key: every store checks the same
// things before writing anything, so a bad Commit fails the same way everywhere.
func validateCommit(put []Session, forget []string, notes []Notification) error {
	var tooLong []string
	for _, s := range put {
		if s.ID == "" {
			return errors.New("store: commit: session with an empty id")
		}
		if len(s.ID) > MaxIDBytes || len(s.BotID) > MaxIDBytes {
			tooLong = append(tooLong, s.ID[:min(len(s.ID), MaxIDBytes)])
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
		if len(n.SessionID) > MaxIDBytes || len(n.BotID) > MaxIDBytes {
			tooLong = append(tooLong, n.SessionID[:min(len(n.SessionID), MaxIDBytes)])
		}
	}
	if tooLong != nil {
		return &RejectedError{SessionIDs: tooLong, Reason: fmt.Sprintf("a session or bot id is longer than %d bytes", MaxIDBytes)}
	}
	return nil
}

// validateBotID rejects a bot id no store can key.
func validateBotID(botID string) error {
	switch {
	case botID == "":
		return errors.New("store: bot settings with an empty bot id")
	case len(botID) > MaxIDBytes:
		return fmt.Errorf("store: bot id of %d bytes, longer than %d", len(botID), MaxIDBytes)
	}
	return nil
}

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
