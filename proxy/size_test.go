package proxy

import (
	"testing"
	"unsafe"

	"github.com/presence-sidecar/presence-sidecar/proxy/wsframe"
)

// TestPartSizes pins the bytes of each part of a connection's state
// (docs/ARCHITECTURE.md, "Memory per connection"): the bench's memory per
// idle connection is these, the two sockets, the probe's timer and the
// goroutines. A part may shrink; growing one is a decision, made here.
func TestPartSizes(t *testing.T) {
	parts := []struct {
		name      string
		size, max uintptr
	}{
		{"wsConn (all below, inline)", unsafe.Sizeof(wsConn{}), 808},
		{"clientTap (parser, held bytes)", unsafe.Sizeof(clientTap{}), 248},
		{"upstreamTap (parser)", unsafe.Sizeof(upstreamTap{}), 152},
		{"wsframe.Parser", unsafe.Sizeof(wsframe.Parser{}), 128},
		{"probeState", unsafe.Sizeof(probeState{}), 64},
		{"direction (one per way)", unsafe.Sizeof(direction{}), 88},
		{"socketReader (one per way, heap)", unsafe.Sizeof(socketReader{}), 72},
	}
	for _, p := range parts {
		t.Logf("%-34s %4d bytes", p.name, p.size)
		if p.size > p.max {
			t.Errorf("%s is %d bytes; keep it at most %d", p.name, p.size, p.max)
		}
	}
}
