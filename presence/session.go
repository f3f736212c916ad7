package presence

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
)

// Absence reasons, stored compactly in sess.reason.
const (
	reasonNone uint8 = iota
	reasonDisconnected
	reasonInactive
)

var reasonText = [...]string{"", "disconnected", "inactive"}

func reasonCode(s string) uint8 {
	switch s {
	case "disconnected":
		return reasonDisconnected
	case "inactive":
		return reasonInactive
	}
	return reasonNone
}

// sess is one session's state in memory, kept small (112 bytes, a size class): times are
// Unix nanoseconds, 0 meaning none. Its shard's mutex guards every field.
type sess struct {
	id         string
	bot        string // interned when the bot is known to the settings table
	lastSeen   int64  // LastSeenAt: last presence (connection mode) or activity (activity mode)
	absentAt   int64
	returnedAt int64 // ReturnedAt: the last return from an absence
	deadline   int64 // becomes absent at this time unless seen; 0: none
	armedAt    int64 // at of this session's live heap entry; 0: none
	episode    uint32
	conns      int32
	state      store.Presence
	handedOver bool
	expireSent bool // ExpireSent: this episode's client.offline is in the outbox (or unsent)
	reason     uint8
	trace      traceRef // of the latest connection or request that brought one
	dirty      bool     // changed since last written
	forgotten  bool     // dropped from its shard; heap entries and conns still pointing here are stale
	shard      uint8
}

// shard owns the sessions whose id hashes to it (shardOf). mu guards every
// field but head, and every field of those sessions.
type shard struct {
	mu       sync.Mutex
	sessions map[string]*sess
	due      dueHeap      // when to look at which session again (deadlines.go)
	head     atomic.Int64 // due[0].at or MaxInt64, read by Run without the lock
	dirty    []*sess      // changed sessions for the next Flush
	toForget []string     // ids of forgotten sessions the next Flush removes from the store
	// unsent holds notifications whose Commit failed, per session, in order.
	// Such a session's later notes are appended after them, and the session
	// is not written without them, so a crash cannot keep a state that claims
	// a notification which is not in the outbox.
	unsent map[*sess][]store.Notification
	// fence is closed when the Flush that last snapshotted this shard has
	// committed. A decision waits for it, so the flush's older copy of a
	// session can never land after the decision's newer one.
	fence chan struct{}
}

// conn is what the engine knows of one live connection.
type conn struct {
	s     *sess     // nil: no session id yet (untracked)
	bot   string    // a bot id seen before the session id
	trace *traceRef // the upgrade's trace, kept until the session id comes
}

// connShard is one part of the connection table; mu guards byConn.
type connShard struct {
	mu     sync.Mutex
	byConn map[event.ConnID]conn
}

func shardOf(id string) uint8 {
	// FNV-1a, inline so that no hasher is allocated per event.
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return uint8(h & (numShards - 1))
}

func (e *Engine) connShard(id event.ConnID) *connShard { return &e.conns[id&(numShards-1)] }

// getOrCreateLocked returns session id, creating it (present, seen now)
// when it is not tracked. bot fills in a missing bot id. It returns nil when
// the session cap leaves no room for a new one (cap.go; the caller locked sh
// with lockForNew, which makes room when it can).
func (e *Engine) getOrCreateLocked(sh *shard, id, bot string, now int64) *sess {
	s := sh.sessions[id]
	if s == nil {
		if !e.cap.admit() {
			e.refuse()
			return nil
		}
		s = &sess{id: strings.Clone(id), bot: e.bots.intern(bot), lastSeen: now, shard: shardOf(id), handedOver: e.detect.Always}
		s.deadline = now + int64(e.bots.settings(s.bot).CheckInterval)
		sh.sessions[s.id] = s
		// A pending forget of an earlier session with this id must not delete this one.
		for i, f := range sh.toForget {
			if f == id {
				sh.toForget = append(sh.toForget[:i], sh.toForget[i+1:]...)
				break
			}
		}
		sh.markDirty(s)
		return s
	}
	if s.bot == "" && bot != "" {
		s.bot = e.bots.intern(bot)
		sh.markDirty(s)
	}
	return s
}

func (sh *shard) markDirty(s *sess) {
	if !s.dirty {
		s.dirty = true
		sh.dirty = append(sh.dirty, s)
	}
}

// isHandedOver reports whether s counts as handed over to a human: by its
// own hand-over, or because HANDOFF_DETECT says always.
func (e *Engine) isHandedOver(s *sess) bool { return s.handedOver || e.detect.Always }

// snapshot is s as the store keeps it, written at now.
func (e *Engine) snapshot(s *sess, now int64) store.Session {
	return store.Session{
		ID: s.id, BotID: s.bot, State: s.state, HandedOver: e.isHandedOver(s),
		Episode: uint64(s.episode), ExpireSent: s.expireSent, Conns: int(s.conns),
		LastSeenAt: fromUnixNano(s.lastSeen), AbsentAt: fromUnixNano(s.absentAt), Deadline: fromUnixNano(s.deadline),
		Reason: reasonText[s.reason], ReturnedAt: fromUnixNano(s.returnedAt), UpdatedAt: fromUnixNano(now),
	}
}

// unixNano is t in Unix nanoseconds, 0 for the zero time (sess's "none").
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromUnixNano undoes unixNano: 0 is the zero time.
func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
