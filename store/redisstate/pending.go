package redisstate

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/redis/rueidis"
)

// Pending lists up to limit notifications still to deliver, the sessions
// whose heads are due soonest first and each session's queue in order (the
// operator's view of the outbox, as store.Store's Pending). Two pipelined
// rounds: every shard's ready set, then the queues of the first sessions.
func (s *State) Pending(ctx context.Context, limit int) ([]Note, error) {
	if limit <= 0 {
		return []Note{}, nil
	}
	rs := s.doMulti(ctx, "pending", s.perShard(func(k string) rueidis.Completed {
		return s.c.B().Zrange().Key(k).Min("0").Max(fmt.Sprint(limit - 1)).Withscores().Build()
	}, "ready"))
	type ready struct {
		shard int
		sid   string
		at    float64
	}
	var heads []ready
	for n, r := range rs {
		v, err := r.AsZScores()
		if err != nil {
			return nil, err
		}
		for _, z := range v {
			heads = append(heads, ready{shard: n, sid: z.Member, at: z.Score})
		}
	}
	slices.SortFunc(heads, func(a, b ready) int { return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.sid, b.sid)) })
	heads = heads[:min(len(heads), limit)]
	cmds := make(rueidis.Commands, len(heads))
	for i, h := range heads {
		cmds[i] = s.c.B().Lrange().Key(s.shardPrefix(h.shard) + "q:" + h.sid).Start(0).Stop(int64(limit - 1)).Build()
	}
	out, err := decodeNotes(s.doMulti(ctx, "pending", cmds), "a queued notification")
	if err != nil {
		return nil, err
	}
	return out[:min(len(out), limit)], nil
}
