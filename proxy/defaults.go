package proxy

import "time"

// Defaults of Options fields left zero; the config layer refers to them.
const (
	// DefaultDialTimeout bounds connecting to the upstream and, for an
	// upgrade, getting its handshake answer: an upgrade needs a bound.
	DefaultDialTimeout = 10 * time.Second
	// DefaultResponseTimeout bounds the wait for a plain request's response
	// headers, as nginx's proxy_read_timeout does (60 s, then 504). It is
	// the config's default; Options.ResponseTimeout 0 means no limit.
	DefaultResponseTimeout = 60 * time.Second
	// DefaultInspectBytes is how much of each message and HTTP body ids and
	// rules look at.
	DefaultInspectBytes = 4096
)
