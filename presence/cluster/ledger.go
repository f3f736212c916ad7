package cluster

import (
	"sync"
	"time"

	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
)

// The ledger is what one replica knows that Redis must hear: per session,
// how many live connections this replica holds, whether activity or a
// hand-over change waits to be sent. The proxy's callbacks only write it
// (a map write under a shard's mutex) and kick the writer; they never wait
// for Redis (docs/ARCHITECTURE.md, "Cluster mode"). What is written is a
// state, not a list of events, so bursts coalesce, a failed write is simply
// retried, and after Redis was away (or came back empty) the whole ledger
// is replayed as it stands.
type ledger struct {
	shards [redisstate.Shards]ledgerShard
	kick   chan struct{} // capacity 1: "something is dirty"
}

type ledgerShard struct {
	mu       sync.Mutex
	sessions map[string]*entry
	dirty    map[string]*entry
}

// entry is one session in the ledger.
type entry struct {
	sid   string
	bot   string
	trace string // the traceparent of its latest connection or request

	conns      int  // live connections of the session on this replica
	connsDirty bool // conns not yet stated to Redis
	// opened: a connection opened since conns was last stated. The count
	// alone would hide an open and close that both came before the writer
	// took the entry, and with them a brief return.
	opened bool

	activityAt time.Time // a sign of presence not yet sent (zero: none)

	handoff int8 // hand-over change to send: +1 start, -1 end, 0 none
	// handedOver is the last hand-over change this replica saw for the
	// session (+1, -1, 0 none). A session Redis does not have (it came back
	// empty) is created handed over when the last change was a start; one it
	// has keeps its own state, which may be newer than ours.
	handedOver int8
}

func newLedger() *ledger {
	l := &ledger{kick: make(chan struct{}, 1)}
	for i := range l.shards {
		l.shards[i] = ledgerShard{sessions: map[string]*entry{}, dirty: map[string]*entry{}}
	}
	return l
}

// update runs fn on sid's entry (created if missing) under its shard's lock,
// marks it dirty and kicks the writer.
func (l *ledger) update(sid string, fn func(e *entry)) {
	sh := &l.shards[redisstate.ShardOf(sid)]
	sh.mu.Lock()
	e := sh.sessions[sid]
	if e == nil {
		e = &entry{sid: sid}
		sh.sessions[sid] = e
	}
	fn(e)
	sh.dirty[sid] = e
	sh.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// pending is a copy of a dirty entry, taken for writing.
type pending struct {
	entry
	shard int
}

// take removes and returns the dirty entries of shard n.
func (l *ledger) take(n int) []pending {
	sh := &l.shards[n]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if len(sh.dirty) == 0 {
		return nil
	}
	out := make([]pending, 0, len(sh.dirty))
	for sid, e := range sh.dirty {
		out = append(out, pending{entry: *e, shard: n})
		e.connsDirty, e.opened, e.handoff, e.activityAt = false, false, 0, time.Time{}
		delete(sh.dirty, sid)
		if e.conns == 0 {
			delete(sh.sessions, sid) // nothing left to re-assert
		}
	}
	return out
}

// putBack marks what a failed write carried dirty again, unless something
// newer replaced it meanwhile.
func (l *ledger) putBack(p pending) {
	sh := &l.shards[p.shard]
	sh.mu.Lock()
	e := sh.sessions[p.sid]
	if e == nil {
		e = &entry{sid: p.sid, bot: p.bot, trace: p.trace}
		sh.sessions[p.sid] = e
	}
	if p.connsDirty {
		e.connsDirty = true // e.conns is the newest count
	}
	e.opened = e.opened || p.opened
	if !p.activityAt.IsZero() && e.activityAt.IsZero() {
		e.activityAt = p.activityAt
	}
	if p.handoff != 0 && e.handoff == 0 {
		e.handoff = p.handoff
	}
	sh.dirty[p.sid] = e
	sh.mu.Unlock()
}

// reassert marks every session with live connections dirty: Redis lost
// this replica's lease (it lapsed, or Redis came back empty) and must hear
// its connections again.
func (l *ledger) reassert() {
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for sid, e := range sh.sessions {
			if e.conns > 0 {
				e.connsDirty = true
				sh.dirty[sid] = e
			}
		}
		sh.mu.Unlock()
	}
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// size counts the sessions and connections the ledger holds.
func (l *ledger) size() (sessions, conns, dirty int) {
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		sessions += len(sh.sessions)
		dirty += len(sh.dirty)
		for _, e := range sh.sessions {
			conns += e.conns
		}
		sh.mu.Unlock()
	}
	return
}

// trace is the traceparent of sid's latest connection or request on this
// replica ("" when it holds none).
func (l *ledger) trace(sid string) string {
	sh := &l.shards[redisstate.ShardOf(sid)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.sessions[sid]; e != nil {
		return e.trace
	}
	return ""
}

// sawHandoff remembers a hand-over change made elsewhere (the admin API) on
// the entry of a session this replica holds connections of, for a Redis
// that comes back empty (handedOver). It never creates an entry.
func (l *ledger) sawHandoff(sid string, on bool) {
	sh := &l.shards[redisstate.ShardOf(sid)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.sessions[sid]; e != nil {
		e.handedOver = -1
		if on {
			e.handedOver = 1
		}
	}
}

// held lists the sessions of shard n with live connections on this replica.
func (l *ledger) held(n int) map[string]bool {
	sh := &l.shards[n]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	out := make(map[string]bool, len(sh.sessions))
	for sid, e := range sh.sessions {
		if e.conns > 0 {
			out[sid] = true
		}
	}
	return out
}

// restate makes shard n's entries agree with what Redis records of this
// replica (inRedis: the sessions it lists as having connections here):
// a session Redis lists but this replica does not hold gets its count, 0,
// stated again; one held but not listed gets its count stated again. Both
// are absolute counts, so stating them twice is harmless. It reports how
// many entries it marked.
func (l *ledger) restate(n int, inRedis []string) int {
	sh := &l.shards[n]
	sh.mu.Lock()
	listed := make(map[string]bool, len(inRedis))
	marked := 0
	for _, sid := range inRedis {
		listed[sid] = true
		e := sh.sessions[sid]
		if e == nil {
			e = &entry{sid: sid}
			sh.sessions[sid] = e
		}
		if e.conns == 0 && !e.connsDirty {
			e.connsDirty = true
			sh.dirty[sid] = e
			marked++
		}
	}
	for sid, e := range sh.sessions {
		if e.conns > 0 && !listed[sid] && !e.connsDirty {
			e.connsDirty = true
			sh.dirty[sid] = e
			marked++
		}
	}
	sh.mu.Unlock()
	if marked > 0 {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	return marked
}
