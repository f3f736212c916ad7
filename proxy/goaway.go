package proxy

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/proxy/wsframe"
)

// shutdownState is goAway's part of a connection.
type shutdownState struct {
	started     atomic.Bool // goAway runs once
	interrupted atomic.Bool // no close handshake had begun: the shutdown ends the connection (event.CloseShutdown)
}

// Shutdown waits for open WebSockets to end until ctx is done, then closes
// the rest with 1001 (going away) and waits for them to be closed.
func (p *Proxy) Shutdown(ctx context.Context) {
	p.closing.Store(true)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	busy := func() bool { return p.stats.OpenWebSockets.Load() > 0 || p.upgrading.Load() > 0 }
	for busy() {
		select {
		case <-tick.C:
			continue
		case <-ctx.Done():
		}
		break
	}
	p.connsMu.Lock()
	for c := range p.conns {
		go c.goAway() // may block on a peer that does not read, until its kill
	}
	p.connsMu.Unlock()
	// Handshakes still in progress send themselves away when they complete
	// (track); goAway closes everything within a second.
	for deadline := time.Now().Add(3 * time.Second); busy() && time.Now().Before(deadline); {
		<-tick.C
	}
}

// goAway starts closing the connection with 1001 (going away, RFC 6455
// §7.4.1) towards both peers, each at a frame boundary so no frame is cut,
// and closes the sockets after a short wait for the peers' answers.
func (c *wsConn) goAway() {
	if !c.shutdown.started.CompareAndSwap(false, true) {
		return
	}
	// The deadline comes first: a write below can block on a peer that
	// stopped reading (and so can taking a lock that a blocked relay write
	// holds); only closing the sockets ends that.
	time.AfterFunc(time.Second, func() { c.kill(event.CloseShutdown) })
	if !c.ending.closeSeen.Load() {
		c.shutdown.interrupted.Store(true)
	}
	if c.tapped {
		var frame [8]byte // a masked Close with a status code
		c.toClient.mu.Lock()
		if c.toClient.atFrame && !c.ending.closeSeen.Load() {
			// Frames to the client are not masked (RFC 6455 §5.1).
			c.client.Write(wsframe.AppendClose(frame[:0], wsframe.CloseGoingAway, nil))
		}
		c.toClient.mu.Unlock()
		c.toUpstream.mu.Lock()
		// toUpstream.atFrame implies that no client bytes are held back.
		if c.toUpstream.atFrame && !c.ending.closeSeen.Load() {
			// Frames to the upstream are masked, as a client's must be (RFC 6455 §5.3).
			var key [4]byte
			binary.LittleEndian.PutUint32(key[:], rand.Uint32())
			c.upstream.Write(wsframe.AppendClose(frame[:0], wsframe.CloseGoingAway, &key))
		}
		c.toUpstream.mu.Unlock()
		c.ending.closeSeen.Store(true)
	}
}
