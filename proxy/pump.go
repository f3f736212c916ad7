package proxy

import (
	"errors"
	"io"
	"net"
	"time"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// linger bounds a half-closed connection after one side ended.
const linger = 10 * time.Second

// direction is one direction of a connection: what a pump needs to relay it.
type direction struct {
	src, dst         peer
	relay            func(buf []byte, n int) error // relayFromClient or relayFromUpstream (relay.go)
	srcGone, dstGone event.CloseReason             // the close reason when src, or dst, fails
	reader           *socketReader
	onFreshStack     bool // pumpLoop moved to a new goroutine after the first data
}

// pump relays one direction until it ends (see pumpLoop). buffered are the
// bytes src sent along with the handshake; they go first.
func (c *wsConn) pump(d *direction, buffered []byte) {
	if len(buffered) > 0 {
		buf := make([]byte, headroom+len(buffered))
		copy(buf[headroom:], buffered)
		if err := d.relay(buf, len(buffered)); err != nil {
			c.kill(d.dstGone)
			c.pumpStopped()
			return
		}
	}
	d.reader = newSocketReader(d.src.(net.Conn))
	c.pumpLoop(d)
}

// pumpLoop reads src until it ends, handing each chunk to relay. On a clean
// end of src it half-closes dst so the other direction can complete its
// close handshake, bounded by linger.
//
// The first messages of a connection take the deepest path (ids, rules,
// the presence engine), which grows the goroutine's stack, and a parked
// goroutine keeps its stack. So once the first data has passed, the loop
// moves to a new goroutine, which starts small, and the old one ends.
func (c *wsConn) pumpLoop(d *direction) {
	for {
		bp, n, err := d.reader.read()
		var werr error
		if n > 0 {
			werr = d.relay(*bp, n)
		}
		if bp != nil {
			relayBufs.Put(bp)
		}
		if werr != nil {
			c.kill(d.dstGone)
			c.pumpStopped()
			return
		}
		if err != nil {
			c.sourceEnded(d, err)
			c.pumpStopped()
			return
		}
		if !d.onFreshStack && n > 0 {
			d.onFreshStack = true
			go c.pumpLoop(d)
			return
		}
	}
}

// sourceEnded handles the end of d's source: err is io.EOF when the peer
// closed its side, and anything else closes the whole connection.
func (c *wsConn) sourceEnded(d *direction, err error) {
	gone := d.srcGone
	if !c.ending.firstGone.CompareAndSwap(nil, &gone) {
		// The other side ended first; this one failing afterwards (the
		// linger deadline, a reset) does not change who left.
		gone = *c.ending.firstGone.Load()
	}
	if d.src == c.client {
		c.fromClient.flushHeld()
	}
	if !errors.Is(err, io.EOF) {
		c.kill(gone)
		return
	}
	if cw, ok := d.dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		d.dst.Close()
	}
	// The other direction gets a little time to complete its close handshake.
	d.dst.SetReadDeadline(time.Now().Add(linger))
}
