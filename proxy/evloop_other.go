//go:build !linux

package proxy

// Without epoll every connection takes the goroutine relay (pump.go).

type loopSocks struct{}

func (c *wsConn) adoptSockets() bool { return false }

func (c *wsConn) startLoop(clientBuf, upstreamBuf []byte) {}

func (c *wsConn) closeSockets() {
	c.client.Close()
	c.upstream.Close()
}
