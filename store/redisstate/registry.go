package redisstate

import (
	"context"
	"strconv"
	"time"
)

var (
	renewScript  = script("renew")
	lapsedScript = script("lapsed")
	retireScript = script("retire")
)

// The registry of replicas is one sorted set, P + "replicas": replica →
// when its lease lapses (Redis ms). It is outside every shard: its scripts
// touch only it.
func (s *State) registryKey() string { return s.o.Prefix + "replicas" }

// Renew extends replica's lease by ttl. lapsed reports that the lease had
// lapsed or was missing (the replica was paused past its lease, or Redis
// lost it): the replica must then reap itself and re-assert its connections.
func (s *State) Renew(ctx context.Context, replica string, ttl time.Duration) (now time.Time, lapsed bool, err error) {
	v, err := s.exec(ctx, renewScript, []string{s.registryKey()}, []string{replica, ms(ttl)}).AsIntSlice()
	if err != nil || len(v) != 2 {
		return time.Time{}, false, err
	}
	return time.UnixMilli(v[0]), v[1] == 1, nil
}

// LapsedReplica is a replica whose lease lapsed and is to be reaped.
type LapsedReplica struct {
	ID    string
	Lapse time.Time
	score string // the registry's score, for Retire's compare-and-swap
}

// Lapsed lists the replicas whose lease lapsed.
func (s *State) Lapsed(ctx context.Context) ([]LapsedReplica, error) {
	v, err := s.exec(ctx, lapsedScript, []string{s.registryKey()}, nil).AsStrSlice()
	if err != nil {
		return nil, err
	}
	out := make([]LapsedReplica, 0, len(v)/2)
	for i := 0; i+1 < len(v); i += 2 {
		at, _ := strconv.ParseFloat(v[i+1], 64)
		out = append(out, LapsedReplica{ID: v[i], Lapse: time.UnixMilli(int64(at)), score: strconv.FormatInt(int64(at), 10)})
	}
	return out, nil
}

// ReapReplica removes a lapsed replica's connections from every shard and
// then the replica from the registry (unless it renewed meanwhile). Any
// number of survivors may run it at once: each step is idempotent.
func (s *State) ReapReplica(ctx context.Context, r LapsedReplica) (sessions int64, err error) {
	for n := range Shards {
		c, err := s.Reap(ctx, n, r.ID, r.Lapse)
		if err != nil {
			return sessions, err
		}
		sessions += c
	}
	_, err = s.exec(ctx, retireScript, []string{s.registryKey()}, []string{r.ID, r.score}).AsInt64()
	return sessions, err
}
