package proxy

import (
	"runtime"
	"sync"
	"time"
)

// probeClock holds the probe deadlines of many connections in one min-heap
// with one timer, instead of a runtime timer per connection: an idle
// connection's deadline costs a 16-byte heap entry and its index, not a
// time.Timer of about 140 bytes (docs/ARCHITECTURE.md, "Memory per
// connection"). There is one clock per GOMAXPROCS, as there is one event
// loop, and a connection keeps its clock for life.
//
// The heap is written out rather than container/heap's, whose Push and
// Pop box each entry: an allocation per connection and probe round.
//
// Lock order: probeState.mu, then probeClock.mu; the connections' probe
// work (probeTimerFired) runs with no clock lock held.
type probeClock struct {
	mu      sync.Mutex
	heap    []clockEntry // by due; a connection's probe.slot is its index
	timer   *time.Timer
	armedAt int64 // monoNow the timer fires at; 0: not armed
}

type clockEntry struct {
	due int64
	c   *wsConn
}

var (
	probeClocksOnce sync.Once
	probeClocks     []*probeClock
)

// A connection's probe.slot when it is not in the heap.
const (
	slotNone    = -1 // no deadline now
	slotRetired = -2 // closed: never again (a fire that raced the close may try)
)

// probeClockOf returns c's clock.
func probeClockOf(c *wsConn) *probeClock {
	probeClocksOnce.Do(func() {
		for range runtime.GOMAXPROCS(0) {
			probeClocks = append(probeClocks, newProbeClock())
		}
	})
	return probeClocks[uint64(c.id)%uint64(len(probeClocks))]
}

func newProbeClock() *probeClock {
	k := &probeClock{}
	k.timer = time.AfterFunc(time.Hour, k.fire)
	k.timer.Stop()
	return k
}

// schedule sets c's deadline to due (monoNow), moving it if c has one.
func (k *probeClock) schedule(c *wsConn, due int64) {
	k.mu.Lock()
	if i := c.probe.slot; i == slotRetired {
		k.mu.Unlock()
		return
	} else if i >= 0 {
		up := due < k.heap[i].due
		k.heap[i].due = due
		if up {
			k.siftUp(int(i))
		} else {
			k.siftDown(int(i))
		}
	} else {
		c.probe.slot = int32(len(k.heap))
		k.heap = append(k.heap, clockEntry{due, c})
		k.siftUp(len(k.heap) - 1)
	}
	k.armLocked()
	k.mu.Unlock()
}

// retire drops c's deadline, if it has one, and refuses any later.
func (k *probeClock) retire(c *wsConn) {
	k.mu.Lock()
	if i := c.probe.slot; i >= 0 {
		k.removeAt(int(i))
	}
	c.probe.slot = slotRetired
	k.mu.Unlock()
}

// fire runs on the clock's timer: it takes every deadline that passed out
// of the heap, re-arms the timer for the next, and then tells each
// connection (which may schedule itself again).
func (k *probeClock) fire() {
	k.mu.Lock()
	k.armedAt = 0
	now := monoNow()
	var fired []*wsConn
	for len(k.heap) > 0 && k.heap[0].due <= now {
		fired = append(fired, k.heap[0].c)
		k.removeAt(0)
	}
	k.armLocked()
	k.mu.Unlock()
	for _, c := range fired {
		if c.looped {
			c.probeTimerFired() // its writes never block (evloop_linux.go)
		} else {
			// The goroutine relay's Ping waits for toClient.mu, which a
			// write to a slow client holds: the other connections must not.
			go c.probeTimerFired()
		}
	}
}

// armLocked points the timer at the earliest deadline when it is armed for
// a later one (or not at all); a timer armed early finds nothing due and
// re-arms itself.
func (k *probeClock) armLocked() {
	if len(k.heap) == 0 {
		return
	}
	due := k.heap[0].due
	if k.armedAt != 0 && k.armedAt <= due {
		return
	}
	k.armedAt = due
	k.timer.Reset(time.Duration(due - monoNow()))
}

func (k *probeClock) removeAt(i int) {
	last := len(k.heap) - 1
	k.heap[i].c.probe.slot = slotNone
	if i != last {
		k.heap[i] = k.heap[last]
		k.heap[i].c.probe.slot = int32(i)
	}
	k.heap[last] = clockEntry{}
	k.heap = k.heap[:last]
	if i != last {
		k.siftDown(i)
		k.siftUp(i)
	}
	if cap(k.heap) > 64 && len(k.heap) < cap(k.heap)/4 {
		k.heap = append([]clockEntry(nil), k.heap...) // give back a burst's memory
	}
}

func (k *probeClock) siftUp(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if k.heap[parent].due <= k.heap[i].due {
			return
		}
		k.swap(i, parent)
		i = parent
	}
}

func (k *probeClock) siftDown(i int) {
	n := len(k.heap)
	for {
		least := i
		if l := 2*i + 1; l < n && k.heap[l].due < k.heap[least].due {
			least = l
		}
		if r := 2*i + 2; r < n && k.heap[r].due < k.heap[least].due {
			least = r
		}
		if least == i {
			return
		}
		k.swap(i, least)
		i = least
	}
}

func (k *probeClock) swap(i, j int) {
	k.heap[i], k.heap[j] = k.heap[j], k.heap[i]
	k.heap[i].c.probe.slot = int32(i)
	k.heap[j].c.probe.slot = int32(j)
}
