package proxy

import "time"

// Defaults of Options fields left zero; the config layer refers to them.
const (
	// DefaultDialTimeout bounds connecting to the upstream and, for an
	// upgrade, getting its handshake answer: an upgrade needs a bound.
	DefaultDialTimeout = 10 * time.Second
	// DefaultInspectBytes is how much of each message and HTTP body ids and
	// rules look at.
	DefaultInspectBytes = 4096
)
