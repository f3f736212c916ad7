package presence

import (
	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/timeline"
)

// The event.Observer methods below sit on the proxy's data path: they take
// one or two shard locks and touch the store only for a decision that must
// not be lost (a notification or a hand-over change).

// attach adds one live connection to session id; tr is its upgrade's trace.
// It returns nil when the session cap refuses a new session: the connection
// is then an untracked one for its life.
func (e *Engine) attach(id, bot string, tr *traceRef) (*sess, bool) {
	now := e.now()
	sh := &e.shards[shardOf(id)]
	e.lockForNew(sh, id, now)
	s := e.getOrCreateLocked(sh, id, bot, now)
	if s == nil {
		sh.mu.Unlock()
		return nil, false
	}
	s.conns++
	if tr != nil {
		s.trace = *tr
	}
	c := change{s: s}
	set := e.bots.settings(s.bot)
	if set.Mode == ModeConnection {
		s.lastSeen = now
		if s.state == store.Absent {
			e.returnLocked(sh, s, set, now, &c)
		} else {
			s.deadline = 0
		}
	}
	// Activity mode: an open is not activity (the client's first message is).
	sh.markDirty(s)
	e.rearm(sh, s)
	woke := e.commitIfUrgent(sh, &c, now)
	sh.mu.Unlock()
	return s, woke
}

// ConnOpened implements event.Observer.
func (e *Engine) ConnOpened(id event.ConnID, o event.Open) {
	var c conn
	woke := false
	who := e.boundIDs(o.Who)
	var tr *traceRef
	if t, ok := parseTrace(o.Trace); ok {
		tr = &t
	}
	if who.SessionID != "" {
		c.s, woke = e.attach(who.SessionID, who.BotID, tr)
	}
	if c.s != nil {
		e.timeline.Add(c.s.id, timeline.Event{Kind: timeline.ConnOpened, Conn: uint64(id)})
	}
	if c.s == nil {
		e.counts.untrackedConns.Add(1)
		c.bot = e.bots.intern(who.BotID)
		c.trace = tr // for the session the frames will name
	}
	// No call for id can come before ConnOpened returns, so inserting last is safe.
	cs := e.connShard(id)
	cs.mu.Lock()
	cs.byConn[id] = c
	cs.mu.Unlock()
	if woke {
		e.wakeDeliverer()
	}
}

// ConnIdentified implements event.Observer.
func (e *Engine) ConnIdentified(id event.ConnID, who event.Identity) {
	who = e.boundIDs(who)
	if who.SessionID == "" && who.BotID == "" {
		return
	}
	cs := e.connShard(id)
	woke := false
	cs.mu.Lock()
	c, ok := cs.byConn[id]
	switch {
	case !ok:
	case c.s == nil && who.SessionID != "":
		// Under cs.mu so that a concurrent close cannot miss the new count.
		bot := who.BotID
		if bot == "" {
			bot = c.bot
		}
		if c.s, woke = e.attach(who.SessionID, bot, c.trace); c.s != nil {
			c.bot, c.trace = "", nil
			cs.byConn[id] = c
			e.timeline.Add(c.s.id, timeline.Event{Kind: timeline.ConnOpened, Conn: uint64(id)})
			e.counts.untrackedConns.Add(-1)
		}
	case c.s == nil:
		c.bot = e.bots.intern(who.BotID)
		cs.byConn[id] = c
	case who.BotID != "":
		// A session id never changes for a connection; only a missing bot id is filled in.
		s := c.s
		sh := &e.shards[s.shard]
		sh.mu.Lock()
		if !s.forgotten && s.bot == "" {
			s.bot = e.bots.intern(who.BotID)
			sh.markDirty(s)
		}
		sh.mu.Unlock()
	}
	cs.mu.Unlock()
	if woke {
		e.wakeDeliverer()
	}
}

// Message implements event.Observer. In activity mode a client message not
// matched by Ignore is activity; in any mode the hand-over rules apply.
func (e *Engine) Message(id event.ConnID, dir event.Direction, m event.Message) {
	cs := e.connShard(id)
	cs.mu.Lock()
	s := cs.byConn[id].s
	cs.mu.Unlock()
	if s == nil {
		return
	}
	if dir == event.FromClient {
		e.timeline.Activity(s.id, false)
	}
	start, end := e.handoffMatch(dir, m.Prefix)
	if dir != event.FromClient && !start && !end {
		return // server messages matter only for the rules
	}
	now := e.now()
	sh := &e.shards[s.shard]
	sh.mu.Lock()
	if s.forgotten {
		sh.mu.Unlock()
		return
	}
	c := change{s: s}
	if dir == event.FromClient {
		if set := e.bots.settings(s.bot); set.Mode == ModeActivity && !e.rules.ignore.Match(event.FromClient, m.Prefix) {
			e.seenLocked(sh, s, set, now, &c)
		}
	}
	if start || end {
		e.handoffLocked(sh, s, start, now, &c)
	}
	woke := e.commitIfUrgent(sh, &c, now)
	sh.mu.Unlock()
	if woke {
		e.wakeDeliverer()
	}
}

// ConnClosed implements event.Observer. Every reason counts the same: the
// connection is gone.
func (e *Engine) ConnClosed(id event.ConnID, reason event.CloseReason) {
	cs := e.connShard(id)
	cs.mu.Lock()
	c, ok := cs.byConn[id]
	delete(cs.byConn, id)
	cs.mu.Unlock()
	if !ok {
		return
	}
	if c.s == nil {
		e.counts.untrackedConns.Add(-1)
		return
	}
	if reason == event.CloseProbeTimeout {
		e.timeline.Add(c.s.id, timeline.Event{Kind: timeline.ProbeTimeout, Conn: uint64(id), Reason: string(reason)})
	}
	e.timeline.Add(c.s.id, timeline.Event{Kind: timeline.ConnClosed, Conn: uint64(id), Reason: string(reason)})
	if reason == event.CloseShutdown {
		// The sidecar, not the client, ended it: the session stays counted
		// as connected, so the last flush stores it so and the next start
		// gives the client a whole interval to come back, as after a crash.
		return
	}
	s := c.s
	now := e.now()
	sh := &e.shards[s.shard]
	sh.mu.Lock()
	if !s.forgotten && s.conns > 0 {
		s.conns--
		if s.conns == 0 && s.state == store.Present {
			if set := e.bots.settings(s.bot); set.Mode == ModeConnection {
				s.lastSeen = now
				s.deadline = now + int64(set.CheckInterval)
			}
		}
		sh.markDirty(s)
		e.rearm(sh, s) // arms the deadline, or the forget time of an absent session
	}
	sh.mu.Unlock()
}

// UpgradeFailed implements event.Observer. Invariant 7 (docs/ARCHITECTURE.md,
// "Presence invariants"): a client whose handshake failed (the upstream
// unreachable or refusing) is trying to reach the service, so it is present
// at that moment, as with an HTTP request of the session: while it keeps
// retrying its deadline keeps moving, and once it stops it is absent one
// interval after its last attempt. A close caused by the upstream needs no
// case of its own: the client that lost its socket retries, and its retries
// are these. A handshake carries no message: no rule applies.
func (e *Engine) UpgradeFailed(r event.Request) {
	r.Body = nil
	e.HTTPRequest(r)
}

// HTTPRequest implements event.Observer: a request of a session is a sign
// of presence (and activity) in either mode; its body is matched against the
// hand-over rules as a client message.
func (e *Engine) HTTPRequest(r event.Request) {
	who := e.boundIDs(r.Who)
	if who.SessionID == "" {
		e.counts.untrackedReqs.Add(1)
		return
	}
	start, end := e.handoffMatch(event.FromClient, r.Body)
	now := e.now()
	sh := &e.shards[shardOf(who.SessionID)]
	e.lockForNew(sh, who.SessionID, now)
	s := e.getOrCreateLocked(sh, who.SessionID, who.BotID, now)
	if s == nil {
		sh.mu.Unlock()
		return // refused by the session cap, counted
	}
	e.timeline.Activity(s.id, true)
	if s.conns == 0 {
		// A session with an open socket keeps its connection's trace: the
		// socket is what its presence (and so its absence) is about.
		s.setTrace(r.Trace)
	}
	c := change{s: s}
	e.seenLocked(sh, s, e.bots.settings(s.bot), now, &c)
	if start || end {
		e.handoffLocked(sh, s, start, now, &c)
	}
	woke := e.commitIfUrgent(sh, &c, now)
	sh.mu.Unlock()
	if woke {
		e.wakeDeliverer()
	}
}
