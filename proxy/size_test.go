//go:build linux

package proxy

import (
	"testing"
	"unsafe"

	"github.com/presence-sidecar/presence-sidecar/proxy/wsframe"
)

// TestPartSizes pins the bytes of each part of a connection's state
// (docs/ARCHITECTURE.md, "Memory per connection"): on the event loop, an
// idle connection's proxy state is the wsConn (one 704-byte allocation,
// Go's size class of that name), its probe deadline (a 16-byte entry in
// a clock shared by many connections, probeclock.go) and two slots of its
// loop; the rest is the session's (presence, TestMemoryPerSession) and the
// kernel's. A part may shrink; growing one is a decision, made here.
func TestPartSizes(t *testing.T) {
	parts := []struct {
		name      string
		size, max uintptr
	}{
		{"wsConn (all below, inline)", unsafe.Sizeof(wsConn{}), 704},
		{"clientTap (parser, held bytes)", unsafe.Sizeof(clientTap{}), 232},
		{"upstreamTap (parser)", unsafe.Sizeof(upstreamTap{}), 152},
		{"wsframe.Parser", unsafe.Sizeof(wsframe.Parser{}), 128},
		{"probeState", unsafe.Sizeof(probeState{}), 48},
		{"loopSocks (loop, linger timer, two sockets)", unsafe.Sizeof(loopSocks{}), 112},
		{"loop slot (one per socket, in the loop)", unsafe.Sizeof(slotEntry{}), 16},
		{"probe deadline (in its clock's heap)", unsafe.Sizeof(clockEntry{}), 16},
		// The goroutine relay's (TLS upstreams, non-Linux), on its stacks and heap:
		{"direction (one per way)", unsafe.Sizeof(direction{}), 88},
		{"socketReader (one per way, heap)", unsafe.Sizeof(socketReader{}), 72},
	}
	for _, p := range parts {
		t.Logf("%-44s %4d bytes", p.name, p.size)
		if p.size > p.max {
			t.Errorf("%s is %d bytes; keep it at most %d", p.name, p.size, p.max)
		}
	}
}
