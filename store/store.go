// Package store keeps what must survive a restart: each session's presence
// state and deadline, per-bot settings changed at run time, and the outbox of
// notifications still to deliver. A transition and the notification it causes
// are written in one Commit (transactional outbox).
package store

import (
	"errors"
	"fmt"
	"time"
)

// Presence is a session's inferred presence.
type Presence uint8

const (
	Present Presence = iota
	Absent
)

func (p Presence) String() string {
	if p == Absent {
		return "absent"
	}
	return "present"
}

// MarshalText shows the state by name in JSON (API, store files).
func (p Presence) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText reads what MarshalText writes.
func (p *Presence) UnmarshalText(b []byte) error {
	switch string(b) {
	case "present":
		*p = Present
	case "absent":
		*p = Absent
	default:
		return fmt.Errorf("unknown presence state %q", b)
	}
	return nil
}

// Session is the durable part of one session's presence state.
type Session struct {
	ID         string    `json:"id"`
	BotID      string    `json:"botId,omitempty"`
	State      Presence  `json:"state"`
	HandedOver bool      `json:"handedOver"`
	Episode    uint64    `json:"episode"`    // absence episodes so far; the current one while Absent
	ExpireSent bool      `json:"expireSent"` // an offline notification was queued for the current episode
	Conns      int       `json:"conns"`      // live connections when last written: a hint for recovery
	LastSeenAt time.Time `json:"lastSeenAt"`
	AbsentAt   time.Time `json:"absentAt,omitzero"`   // when the current absence was detected
	Deadline   time.Time `json:"deadline,omitzero"`   // becomes absent at this time unless seen; zero: none
	Reason     string    `json:"reason,omitempty"`    // why the current absence: "disconnected" | "inactive"
	ReturnedAt time.Time `json:"returnedAt,omitzero"` // when the client last came back from an absence
	UpdatedAt  time.Time `json:"updatedAt"`
}

// Kind is a notification's event name, as sent in its body.
type Kind string

const (
	KindOffline Kind = "client.offline" // POST {HANDOFF_URL}{HANDOFF_EXPIRE_PATH}?offline=true
	KindOnline  Kind = "client.online"  // POST {HANDOFF_URL}{HANDOFF_MESSAGE_PATH}
)

// Notification is one outbox entry: a transition the human-service platform
// must hear about, plus its delivery bookkeeping.
type Notification struct {
	ID           string    `json:"id"`  // webhook-id: stable across retries and restarts
	Seq          uint64    `json:"seq"` // outbox order, assigned by Commit
	Kind         Kind      `json:"kind"`
	SessionID    string    `json:"sessionId"`
	BotID        string    `json:"botId,omitempty"`
	Episode      uint64    `json:"episode"`
	Reason       string    `json:"reason,omitempty"` // offline: "disconnected" | "inactive"
	Text         string    `json:"text,omitempty"`   // online: the return message
	LastSeenAt   time.Time `json:"lastSeenAt,omitzero"`
	OfflineSince time.Time `json:"offlineSince,omitzero"`
	DetectedAt   time.Time `json:"detectedAt"`
	TraceParent  string    `json:"traceparent,omitempty"` // W3C trace context of the transition

	CreatedAt     time.Time `json:"createdAt"`
	Attempts      int       `json:"attempts"`
	NextAttemptAt time.Time `json:"nextAttemptAt,omitzero"`
	LastError     string    `json:"lastError,omitempty"`
	LastStatus    int       `json:"lastStatus,omitempty"`
	DeliveredAt   time.Time `json:"deliveredAt,omitzero"`
	DeadAt        time.Time `json:"deadAt,omitzero"`
	ReplayedAt    time.Time `json:"replayedAt,omitzero"` // the retry horizon restarts here after a replay
}

// BotSettings are per-bot overrides of the presence settings; nil/zero fields
// fall back to the environment's defaults. JSON names match PRESENCE_BOTS_FILE.
type BotSettings struct {
	Enabled       *bool  `json:"enabled,omitempty"`
	CheckInterval string `json:"checkInterval,omitempty"` // Go duration
	ReturnMessage string `json:"returnMessage,omitempty"`
	Mode          string `json:"mode,omitempty"`
}

// ErrNotFound is returned for an unknown id.
var ErrNotFound = errors.New("not found")

// Store is implemented by the embedded (bbolt) store and an
// in-memory store for tests. All methods are safe for concurrent use.
type Store interface {
	// Sessions returns every persisted session (read at start-up).
	Sessions() ([]Session, error)
	// Commit atomically writes put, removes the sessions named in forget and
	// appends notes to the outbox, assigning each note's Seq (notes is
	// modified in place). Nothing is written if it fails.
	Commit(put []Session, forget []string, notes []Notification) error

	// Pending returns undelivered, not dead-lettered notifications in Seq order.
	Pending() ([]Notification, error)
	// PendingAfter is Pending restricted to the notifications whose Seq is
	// above seq: what was committed or replayed since a read that saw seq, at
	// a cost that depends on what it returns, not on what waits before it.
	// The deliverer relies on it to follow the outbox without reading it
	// whole (docs/ARCHITECTURE.md, "Delivery"), so a store must make Seqs
	// visible in order: once a read has seen Seq s, no note with a Seq at
	// or below s may appear later.
	PendingAfter(seq uint64) ([]Notification, error)
	// Attempted records a failed attempt (Attempts, NextAttemptAt, LastError, LastStatus).
	Attempted(n Notification) error
	// Delivered removes n from the outbox and keeps it in the bounded recent list.
	Delivered(n Notification) error
	// DeadLetter moves n from the outbox to the dead-letter list.
	DeadLetter(n Notification) error
	// DeadLetters lists dead-lettered notifications, oldest first.
	DeadLetters() ([]Notification, error)
	// Replay moves a dead letter back into the outbox (new Seq, attempts reset,
	// same ID) and returns it; ErrNotFound if there is none with that id.
	Replay(id string) (Notification, error)
	// Recent lists the last delivered or dead-lettered notifications, newest first.
	Recent(limit int) ([]Notification, error)

	// Bots returns the per-bot settings changed at run time.
	Bots() (map[string]BotSettings, error)
	// PutBot stores a bot's settings.
	PutBot(botID string, s BotSettings) error

	Close() error
}
