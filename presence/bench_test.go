package presence

import (
	"strconv"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/timeline"
)

// Benchmarks of the engine's event handling, as the proxy calls it: with a
// timeline recorder, as the sidecar runs it. Messages on an open
// connection are the hot path and allocate nothing (TestEngineNoAllocs); a
// new session allocates its state once.

// benchRig is an engine in mode, with a timeline, and connection 1 open
// on session "s1".
func benchRig(tb testing.TB, mode Mode) *rig {
	tb.Helper()
	clk := newClock()
	r := newRig(tb, nil, clk, func(o *Options) {
		o.Defaults.Mode = mode
		o.Timeline = timeline.New(timeline.Options{Now: clk.Now})
	})
	r.open(1, "s1", "bot")
	return r
}

var benchMessages = []struct {
	name string
	mode Mode
	dir  event.Direction
	msg  []byte
}{
	{"client/connection", ModeConnection, event.FromClient, userMsg},
	{"client/activity", ModeActivity, event.FromClient, userMsg},
	{"client/ignored", ModeActivity, event.FromClient, keepAlive},
	{"server", ModeConnection, event.FromServer, []byte(`{"action":"message","data":{"text":"Olá! Como posso ajudar?"}}`)},
}

func BenchmarkEngineMessage(b *testing.B) {
	for _, bm := range benchMessages {
		b.Run(bm.name, func(b *testing.B) {
			r := benchRig(b, bm.mode)
			m := event.Message{Text: true, Size: int64(len(bm.msg)), Prefix: bm.msg}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				r.e.Message(1, bm.dir, m)
			}
		})
	}
}

// BenchmarkEngineHandover is a hand-over frame and its end: two store
// commits with their notification, in the memory store.
func BenchmarkEngineHandover(b *testing.B) {
	r := benchRig(b, ModeConnection)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		r.server(1, transferFrame)
		r.server(1, endFrame)
	}
}

// BenchmarkEngineConnection is what each handshake costs presence: a
// connection opened on a new session, and closed.
func BenchmarkEngineConnection(b *testing.B) {
	clk := newClock()
	r := newRig(b, store.NewMemory(), clk, func(o *Options) {
		o.Timeline = timeline.New(timeline.Options{Now: clk.Now})
	})
	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = "s" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		id := event.ConnID(i + 1)
		r.open(id, ids[i], "bot")
		r.close(id)
		if i%1024 == 1023 {
			clk.Advance(time.Millisecond)
		}
	}
}
