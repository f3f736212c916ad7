package cluster

// What the admin listener reads and changes (internal/admin.Presence): the
// cluster's view, read from Redis, so every replica shows the same sessions
// and settings.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/presence-sidecar/presence-sidecar/presence"
	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
	"github.com/presence-sidecar/presence-sidecar/timeline"
)

// MaxListed bounds Sessions: the listing reads Redis, and an operator's
// page has no use for more.
const MaxListed = 1000

func (e *Engine) view(s redisstate.SessionState) presence.View {
	st := store.Present
	if s.Absent {
		st = store.Absent
	}
	return presence.View{
		Session: store.Session{ID: s.ID, BotID: s.BotID, State: st, HandedOver: s.HandedOver, Episode: s.Episode,
			ExpireSent: s.ExpireSent, Conns: int(s.Conns), LastSeenAt: s.LastSeenAt, AbsentAt: s.AbsentAt,
			Deadline: s.Deadline, Reason: s.Reason, ReturnedAt: s.ReturnedAt, UpdatedAt: later(s.LastSeenAt, s.AbsentAt)},
		Connections: int(s.Conns), Settings: e.o.Bots.Settings(s.BotID), Replicas: s.Replicas,
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Sessions lists up to MaxListed sessions Redis holds, ordered by id; none
// while Redis is unreachable.
func (e *Engine) Sessions() []presence.View {
	ctx, cancel := context.WithTimeout(context.Background(), redisstate.CallTimeout)
	defer cancel()
	out := []presence.View{}
	began := e.began()
	ss, err := e.o.State.Sessions(ctx, MaxListed)
	if err != nil {
		e.redisFailed(err, began)
		return out
	}
	for _, s := range ss {
		out = append(out, e.view(s))
	}
	slices.SortFunc(out, func(a, b presence.View) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Session reads one session from Redis.
func (e *Engine) Session(id string) (presence.View, bool) {
	if len(id) > store.MaxIDBytes {
		return presence.View{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), redisstate.CallTimeout)
	defer cancel()
	began := e.began()
	s, ok, err := e.o.State.Session(ctx, id)
	if err != nil {
		e.redisFailed(err, began)
		return presence.View{}, false
	}
	if !ok {
		return presence.View{}, false
	}
	return e.view(s), true
}

// BotSettings returns the effective settings of botID.
func (e *Engine) BotSettings(botID string) presence.Settings { return e.o.Bots.Settings(botID) }

// PutBotSettings changes a bot's settings for every replica (presence.Bots.Put,
// saved in Redis).
func (e *Engine) PutBotSettings(botID string, o store.BotSettings, clear ...string) (presence.Settings, error) {
	return e.o.Bots.Put(botID, o, clear...)
}

// BotIDs lists the bots with settings of their own.
func (e *Engine) BotIDs() []string { return e.o.Bots.IDs() }

// Stats counts what this replica did and holds: sessions and connections in
// its ledger, the decisions and notifications it made. The cluster's
// sessions by state are in Redis (Sessions), not counted here.
func (e *Engine) Stats() presence.Stats {
	s, c, _ := e.ledger.size()
	return presence.Stats{
		Sessions: s, Present: s, Connections: c,
		UntrackedConnections: e.counts.untrackedConns.Load(), UntrackedRequests: e.counts.untrackedReqs.Load(),
		Transitions: presence.Transitions{Absent: e.counts.decisions.Load(), Present: e.counts.returned.Load(),
			HandoffOn: e.counts.handoffOn.Load(), HandoffOff: e.counts.handoffOff.Load()},
		OfflineCommitted: e.counts.offline.Load(), OnlineCommitted: e.counts.online.Load(),
		CommitErrors: e.counts.redisErrors.Load(), IDsRefused: e.counts.idsRefused.Load(),
	}
}

// BotStore keeps run-time bot settings in Redis for presence.Bots, one call
// bounded by redisstate.CallTimeout.
func BotStore(st *redisstate.State) presence.BotStore { return botStore{st} }

type botStore struct{ st *redisstate.State }

func (b botStore) Bots() (map[string]store.BotSettings, error) {
	ctx, cancel := context.WithTimeout(context.Background(), redisstate.CallTimeout)
	defer cancel()
	return b.st.Bots(ctx)
}

func (b botStore) PutBot(id string, s store.BotSettings) error {
	ctx, cancel := context.WithTimeout(context.Background(), redisstate.CallTimeout)
	defer cancel()
	if err := b.st.PutBot(ctx, id, s); err != nil {
		return fmt.Errorf("Redis: %w", err)
	}
	return nil
}

var _ = time.Second

// Replicas lists the cluster's replicas from the registry in Redis.
func (e *Engine) Replicas() ([]redisstate.Replica, error) {
	ctx, cancel := context.WithTimeout(context.Background(), redisstate.CallTimeout)
	defer cancel()
	return e.o.State.Replicas(ctx)
}

// Timeline is session id's recent history (package timeline).
func (e *Engine) Timeline(ctx context.Context, id string) timeline.History {
	return e.o.Timeline.History(ctx, id)
}
