package proxy

import (
	"net"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/proxy/wsframe"
)

// wsConn is one relayed WebSocket: a client socket, an upstream socket, a
// pump and a frame tap per direction, and the liveness probe.
//
// The peers are the client and the upstream. Directions have the rule
// language's names (event.Direction): frames from the client are
// event.FromClient, frames from the upstream are event.FromServer, the
// "server" direction (as in Options.InspectServer).
//
// Who touches what (docs/ARCHITECTURE.md, "Concurrency"):
//   - each pump's goroutine owns its tap: fromClient (with who and idTries)
//     and fromUpstream;
//   - toClient.mu serialises writes to the client (the upstream pump's
//     chunks, the probe's Pings, goAway's Close) and guards toClient;
//   - toUpstream.mu serialises writes to the upstream (the client pump's
//     chunks, goAway's Close) and guards toUpstream;
//   - probe.mu guards the probe's state; it may be taken while toClient.mu
//     is held, never the other way round;
//   - everything else is atomic, or set before the pumps start.
type wsConn struct {
	p        *Proxy
	id       event.ConnID
	client   peer
	upstream peer
	tapped   bool // the upgrade is a WebSocket: frames are parsed
	looped   bool // an event loop relays it (evloop_linux.go); set before it is shared
	// who and idTries belong to the client pump (identify); closeAndReport
	// reads who once both pumps stopped.
	idTries uint8
	who     event.Identity

	fromClient   clientTap
	fromUpstream upstreamTap
	toClient     clientWriter
	toUpstream   upstreamWriter
	probe        probeState

	shutdown shutdownState
	ending   connEnding

	socks loopSocks // the sockets when looped
}

// peer is what the relay needs of a socket: a net.Conn in the goroutine
// relay, a loopSock in the event loop.
type peer interface {
	Write(b []byte) (int, error)
	Close() error
	SetReadDeadline(t time.Time) error
}

// connEnding records how the connection ends. It is atomic: any goroutine
// may end the connection. closeAndReport turns it into the close reason.
type connEnding struct {
	pumpsRunning atomic.Int32 // directions still relaying; the last to stop closes up
	// closeSeen: a Close frame passed either way, or goAway sent one. The
	// close handshake has begun: no Ping may follow.
	closeSeen atomic.Bool
	killed    atomic.Pointer[event.CloseReason] // why kill closed both sockets; the first reason stays
	firstGone atomic.Pointer[event.CloseReason] // the side whose socket ended first
}

func (p *Proxy) newWSConn(client, upstream net.Conn, who event.Identity, extensions []string, tapped bool) *wsConn {
	c := &wsConn{p: p, id: event.ConnID(p.nextID.Add(1)), client: client, upstream: upstream, who: who, tapped: tapped}
	c.toClient.atFrame, c.toUpstream.atFrame = true, true
	c.fromClient.c, c.fromUpstream.c = c, c
	c.fromClient.candidate = -1
	if tapped {
		c2s, s2c := wsframe.ParseDeflateExtension(extensions)
		clientPrefix, serverPrefix := 0, 0
		if p.o.InspectClient || p.o.SessionFrom.has(fromFrame) || p.o.BotFrom.has(fromFrame) {
			clientPrefix = p.o.InspectBytes
		}
		if p.o.InspectServer {
			serverPrefix = p.o.InspectBytes
		}
		// The client is not trusted to compress honestly: its messages are
		// inflated within a bound (wsframe.Options.LimitInflate). The
		// upstream's are inflated whole: what it compressed cost it more
		// than inflating costs us.
		c.fromClient.parser.Init(wsframe.Options{ExpectMasked: true, PrefixLimit: clientPrefix, Deflate: c2s, LimitInflate: true}, &c.fromClient)
		c.fromUpstream.parser.Init(wsframe.Options{PrefixLimit: serverPrefix, Deflate: s2c}, &c.fromUpstream)
	}
	return c
}

// log is c's logger with its session id: call it only from the client
// direction's goroutine (which writes c.who) or after both pumps stopped.
func (c *wsConn) log() *zap.Logger {
	return c.p.log.With(zap.Uint64("conn", uint64(c.id)), zap.String("session", c.who.SessionID))
}

// track registers c as open before its relay starts, so Shutdown cannot
// miss it; a connection whose handshake finished during a shutdown is sent
// away at once.
func (p *Proxy) track(c *wsConn) {
	p.stats.OpenWebSockets.Add(1)
	p.connsMu.Lock()
	p.conns[c] = struct{}{}
	p.connsMu.Unlock()
	if p.closing.Load() {
		go c.goAway()
	}
}

// run relays until both directions ended, then reports the close.
// clientBuffered and upstreamBuffered are what each peer sent along with
// the handshake; they are relayed first. trace is the upgrade's traceparent
// for the observer (an argument, not a field: an idle connection should not
// keep it).
func (c *wsConn) run(clientBuffered, upstreamBuffered []byte, trace string) {
	p := c.p
	p.obs.ConnOpened(c.id, event.Open{Who: c.who, Trace: trace})
	if c.tapped && p.o.ProbeInterval > 0 {
		c.startProbe()
	}

	c.ending.pumpsRunning.Store(2)
	if c.looped {
		c.startLoop(clientBuffered, upstreamBuffered)
		return
	}
	// Each direction runs on its own goroutine; whichever stops last closes
	// up. No goroutine waits for the other (one parked stack less per
	// connection).
	up, down := c.direction(true), c.direction(false)
	go c.pump(&down, upstreamBuffered)
	c.pump(&up, clientBuffered)
}

// direction describes one way of c: from the client to the upstream when
// fromClient, else back.
func (c *wsConn) direction(fromClient bool) direction {
	if fromClient {
		return direction{src: c.client, dst: c.upstream, relay: c.relayFromClient, srcGone: event.CloseClientGone, dstGone: event.CloseUpstreamGone}
	}
	return direction{src: c.upstream, dst: c.client, relay: c.relayFromUpstream, srcGone: event.CloseUpstreamGone, dstGone: event.CloseClientGone}
}

// pumpStopped is called by each direction once it stopped relaying; the
// last one closes the connection.
func (c *wsConn) pumpStopped() {
	if c.ending.pumpsRunning.Add(-1) == 0 {
		c.closeAndReport()
	}
}

// closeAndReport runs once, after both directions stopped: it closes both
// sockets, gives back the taps' buffers and the connection's slot, and
// reports the close.
func (c *wsConn) closeAndReport() {
	p := c.p
	c.stopProbe()
	c.closeSockets()
	c.fromClient.parser.Release()
	c.fromUpstream.parser.Release()
	p.connsMu.Lock()
	delete(p.conns, c)
	p.connsMu.Unlock()
	p.stats.OpenWebSockets.Add(-1)
	p.active.Add(-1)
	if c.who.SessionID == "" {
		p.stats.Untracked.Add(1)
	}

	reason := c.closeReason()
	if reason == event.CloseProbeTimeout {
		p.stats.ProbeTimeouts.Add(1)
		c.log().Info("client stopped answering the liveness probe; closed both sides")
	}
	p.obs.ConnClosed(c.id, reason)
}

// closeReason says why the connection ended, the strongest evidence first:
// a kill, a shutdown that interrupted it, a close handshake, the side that
// left first.
func (c *wsConn) closeReason() event.CloseReason {
	switch {
	case c.ending.killed.Load() != nil:
		return *c.ending.killed.Load()
	case c.shutdown.interrupted.Load():
		return event.CloseShutdown
	case c.ending.closeSeen.Load():
		return event.CloseClean
	case c.ending.firstGone.Load() != nil:
		return *c.ending.firstGone.Load()
	}
	return event.CloseClientGone
}

// kill closes both sockets at once: a dead peer, a failed write, the probe,
// or the end of the shutdown grace.
func (c *wsConn) kill(reason event.CloseReason) {
	if c.shutdown.interrupted.Load() {
		// The sidecar ended this connection: a peer resetting or timing out
		// its answer to the 1001 is a consequence, not a client leaving
		// (docs/ARCHITECTURE.md, "Presence invariants" 6).
		reason = event.CloseShutdown
	}
	if c.ending.killed.CompareAndSwap(nil, &reason) {
		c.client.Close()
		c.upstream.Close()
	}
}
