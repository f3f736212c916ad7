// Package event is the small vocabulary the proxy uses to tell others what
// passes through it. It has no dependencies so that observers (presence) do
// not depend on the relay.
package event

// ConnID names one proxied WebSocket connection for the life of the process.
type ConnID uint64

// Identity is who a connection or request belongs to. Either field may be empty.
type Identity struct {
	SessionID string
	BotID     string
}

// Direction says which peer sent a frame. The server is the upstream, the
// conversation service behind UPSTREAM_URL; the rule language names the two
// directions "client" and "server" too.
type Direction uint8

const (
	FromClient Direction = iota // client -> server
	FromServer                  // server -> client
)

func (d Direction) String() string {
	if d == FromClient {
		return "client"
	}
	return "server"
}

// CloseReason says why a proxied connection ended.
type CloseReason string

const (
	CloseClean        CloseReason = "close"         // a Close frame was seen
	CloseClientGone   CloseReason = "client_gone"   // the client's socket ended without a Close frame
	CloseUpstreamGone CloseReason = "upstream_gone" // the upstream's socket ended without a Close frame
	CloseProbeTimeout CloseReason = "probe_timeout" // the client did not answer the liveness probe
	CloseShutdown     CloseReason = "shutdown"      // the sidecar is draining
)

// Message is a complete WebSocket data message as seen by the frame tap.
type Message struct {
	Text      bool   // text (true) or binary
	Size      int64  // payload bytes on the wire
	Prefix    []byte // first payload bytes, unmasked and inflated; valid only during the call
	Truncated bool   // the payload was longer than Prefix
}

// Open describes a WebSocket upgrade that succeeded.
type Open struct {
	// Who may be empty when the ids are still to come from frames.
	Who Identity
	// Trace is the W3C traceparent the handshake went upstream with (the
	// upgrade's span), so that what an observer decides later belongs to
	// the connection's trace. "" when unknown.
	Trace string
}

// Request describes a plain HTTP request of a session.
type Request struct {
	Who Identity
	// Body is the inspected prefix of the request body (may be nil), valid
	// only during the call.
	Body []byte
	// Trace is the W3C traceparent the request went upstream with; "" when unknown.
	Trace string
}

// Observer receives what the proxy sees. The proxy calls it from its relay
// goroutines, so implementations must be safe for concurrent use and must
// return quickly: every call sits on the data path.
type Observer interface {
	// ConnOpened: a WebSocket upgrade succeeded.
	ConnOpened(id ConnID, o Open)
	// ConnIdentified: ids found after the open (frame: sources). Only the
	// newly found fields are set.
	ConnIdentified(id ConnID, who Identity)
	// Message: a complete data message passed in direction dir.
	Message(id ConnID, dir Direction, m Message)
	// ConnClosed: the connection is gone; no more calls for id follow.
	ConnClosed(id ConnID, reason CloseReason)
	// HTTPRequest: a plain HTTP request passed (with or without a session id).
	HTTPRequest(r Request)
	// UpgradeFailed: a WebSocket upgrade did not become a connection: the
	// upstream was unreachable (502), refused it (its answer relayed), or
	// the sidecar refused it (503). The client was there, trying to reach
	// the service (docs/ARCHITECTURE.md, "Presence invariants", 7). Body is
	// nil; Who holds the ids of the handshake request (query, header,
	// cookie), since no frame ever passed.
	UpgradeFailed(r Request)
}

// Nop ignores everything: the proxy without presence.
type Nop struct{}

func (Nop) ConnOpened(ConnID, Open)            {}
func (Nop) ConnIdentified(ConnID, Identity)    {}
func (Nop) Message(ConnID, Direction, Message) {}
func (Nop) ConnClosed(ConnID, CloseReason)     {}
func (Nop) HTTPRequest(Request)                {}
func (Nop) UpgradeFailed(Request)              {}
