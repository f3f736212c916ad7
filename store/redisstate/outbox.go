package redisstate

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/redis/rueidis"

	"github.com/presence-sidecar/presence-sidecar/store"
)

// The operators' view of the shared outbox, the cluster's counterpart of
// store.Store's DeadLetters, Recent and Replay and of the embedded
// deliverer's depth: each reads or changes every shard, pipelined (one
// round trip, rueidis sending each command to its slot's node).

// perShard builds one command per shard, for the key of shard n named name.
func (s *State) perShard(build func(key string) rueidis.Completed, name string) rueidis.Commands {
	cmds := make(rueidis.Commands, Shards)
	for n := range Shards {
		cmds[n] = build(s.shardPrefix(n) + name)
	}
	return cmds
}

// lists reads list name of every shard whole, decoded, shard by shard.
func (s *State) lists(ctx context.Context, call, name string) ([]Note, error) {
	rs := s.doMulti(ctx, call, s.perShard(func(k string) rueidis.Completed {
		return s.c.B().Lrange().Key(k).Start(0).Stop(-1).Build()
	}, name))
	return decodeNotes(rs, "a "+name+" entry")
}

// decodeNotes decodes the notifications of list replies, in order; what
// names them in an error.
func decodeNotes(rs []rueidis.RedisResult, what string) ([]Note, error) {
	out := []Note{}
	for _, r := range rs {
		v, err := r.AsStrSlice()
		if err != nil {
			return nil, err
		}
		for _, e := range v {
			var n Note
			if err := json.Unmarshal([]byte(e), &n); err != nil {
				return nil, fmt.Errorf("redisstate: %s does not decode: %w", what, err)
			}
			out = append(out, n)
		}
	}
	return out, nil
}

// byAt orders notes by decision time, then webhook-id: shards have no
// common order of their own, and the decision time is by Redis's clock,
// the same for every shard on one Redis (docs/ARCHITECTURE.md, "Cluster
// mode").
func byAt(a, b Note) int {
	return cmp.Or(cmp.Compare(a.At, b.At), cmp.Compare(a.ID, b.ID))
}

// DeadLetters lists every shard's dead letters, oldest first by decision
// time (store.Store's DeadLetters; each shard keeps Options.DeadLetters).
func (s *State) DeadLetters(ctx context.Context) ([]Note, error) {
	out, err := s.lists(ctx, "deadletters", "dead")
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, byAt)
	return out, nil
}

// Recent lists up to limit of the last delivered or dead notifications of
// every shard, newest first by decision time (store.Store's Recent); limit
// <= 0 returns none.
func (s *State) Recent(ctx context.Context, limit int) ([]Note, error) {
	if limit <= 0 {
		return []Note{}, nil
	}
	// Each shard's list is bounded (Options.Recent) and ordered by when its
	// notifications were answered, not decided: read them whole, so that the
	// newest by decision time are never missed.
	out, err := s.lists(ctx, "recent", "recent")
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b Note) int { return byAt(b, a) })
	return out[:min(limit, len(out))], nil
}

// Replay moves the dead letter with webhook-id id back into its session's
// queue (store.Store's Replay: the same id, attempts reset, the retry
// horizon restarted at Note.Replayed), and returns it as queued; an error
// wrapping store.ErrNotFound when no shard has it. The shard is unknown
// from the id alone, so every shard's script runs, pipelined: an id is
// derived from its session, so only that session's shard can match.
func (s *State) Replay(ctx context.Context, id string) (Note, error) {
	execs := make([]rueidis.LuaExec, Shards)
	for n := range Shards {
		p := s.shardPrefix(n)
		execs[n] = rueidis.LuaExec{Keys: []string{p + "dead"}, Args: []string{p, id}}
	}
	rs := s.execMulti(ctx, replayScript, execs)
	var found *Note
	for _, r := range rs {
		head, err := r.ToString()
		if rueidis.IsRedisNil(err) {
			continue
		}
		if err != nil {
			return Note{}, err
		}
		var n Note
		if err := json.Unmarshal([]byte(head), &n); err != nil {
			return Note{}, fmt.Errorf("redisstate: a replayed notification does not decode: %w", err)
		}
		found = &n
	}
	if found == nil {
		return Note{}, fmt.Errorf("redisstate: dead letter %q: %w", id, store.ErrNotFound)
	}
	return *found, nil
}

// Depth is the number of notifications queued in every shard, delivering
// or waiting: the scripts keep a counter per shard (the prelude's enqueue
// and unqueued), so it costs one read per shard whatever the backlog.
func (s *State) Depth(ctx context.Context) (int64, error) {
	rs := s.doMulti(ctx, "depth", s.perShard(func(k string) rueidis.Completed {
		return s.c.B().Get().Key(k).Build()
	}, "depth"))
	var sum int64
	for _, r := range rs {
		v, err := r.AsInt64()
		if rueidis.IsRedisNil(err) {
			continue
		}
		if err != nil {
			return 0, err
		}
		sum += max(v, 0)
	}
	return sum, nil
}

// OldestReady is the earliest due time over every shard's ready set: the
// head waiting longest (now minus it is the outbox's age), or one being
// retried at its next attempt (a time that may be ahead). A leased head
// keeps its score until acked, so a stuck delivery shows as age too. false
// when nothing is queued.
func (s *State) OldestReady(ctx context.Context) (time.Time, bool, error) {
	rs := s.doMulti(ctx, "oldest", s.perShard(func(k string) rueidis.Completed {
		return s.c.B().Zrange().Key(k).Min("0").Max("0").Withscores().Build()
	}, "ready"))
	var oldest int64
	ok := false
	for _, r := range rs {
		v, err := r.AsZScores()
		if err != nil {
			return time.Time{}, false, err
		}
		if len(v) == 0 {
			continue
		}
		if at := int64(v[0].Score); !ok || at < oldest {
			oldest, ok = at, true
		}
	}
	if !ok {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(oldest).UTC(), true, nil
}
