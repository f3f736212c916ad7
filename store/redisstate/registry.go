package redisstate

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

var (
	renewScript  = script("renew")
	lapsedScript = script("lapsed")
	retireScript = script("retire")
)

// The registry of replicas is one sorted set, P + "{registry}:replicas":
// replica → when its lease lapses (Redis ms), and a hash beside it in the
// same slot, P + "{registry}:hosts": replica → the host it runs on
// (Options.Host), for operators. Replica ids are short (they are in every
// session hash, once per replica holding its connections); the host says
// which pod an id is.
func (s *State) registryKey() string { return s.o.Prefix + "{registry}:replicas" }
func (s *State) hostsKey() string    { return s.o.Prefix + "{registry}:hosts" }

// Renew extends replica's lease by ttl. lapsed reports that the lease had
// lapsed or was missing (the replica was paused past its lease, or Redis
// lost it): the replica must then reap itself and re-assert its connections.
func (s *State) Renew(ctx context.Context, replica string, ttl time.Duration) (now time.Time, lapsed bool, err error) {
	v, err := s.exec(ctx, renewScript, []string{s.registryKey(), s.hostsKey()}, []string{replica, ms(ttl), s.o.Host}).AsIntSlice()
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
	_, err = s.exec(ctx, retireScript, []string{s.registryKey(), s.hostsKey()}, []string{r.ID, r.score}).AsInt64()
	return sessions, err
}

// Replica is one entry of the registry, for operators.
type Replica struct {
	ID         string    `json:"id"`
	Host       string    `json:"host,omitempty"`
	LeaseUntil time.Time `json:"leaseUntil"` // by Redis's clock
	Lapsed     bool      `json:"lapsed"`     // not renewed in time: survivors reap it
}

// Replicas lists the registry, by id.
func (s *State) Replicas(ctx context.Context) ([]Replica, error) {
	rs := s.doMulti(ctx, "replicas", rueidis.Commands{
		s.c.B().Zrange().Key(s.registryKey()).Min("0").Max("-1").Withscores().Build(),
		s.c.B().Hgetall().Key(s.hostsKey()).Build(),
		s.c.B().Time().Build(),
	})
	zs, err := rs[0].AsZScores()
	if err != nil {
		return nil, err
	}
	hosts, err := rs[1].AsStrMap()
	if err != nil {
		return nil, err
	}
	now, err := rs[2].AsStrSlice()
	if err != nil || len(now) != 2 {
		return nil, fmt.Errorf("redisstate: TIME: %v", err)
	}
	sec, _ := strconv.ParseInt(now[0], 10, 64)
	usec, _ := strconv.ParseInt(now[1], 10, 64)
	nowMs := sec*1000 + usec/1000
	out := make([]Replica, 0, len(zs))
	for _, z := range zs {
		out = append(out, Replica{ID: z.Member, Host: hosts[z.Member], LeaseUntil: time.UnixMilli(int64(z.Score)).UTC(),
			Lapsed: int64(z.Score) < nowMs})
	}
	slices.SortFunc(out, func(a, b Replica) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// ReplicaCounts is, per shard, how many sessions Redis records as having
// connections on replica: the replica compares them with what it holds to
// find writes Redis lost (a failover that dropped acknowledged writes).
func (s *State) ReplicaCounts(ctx context.Context, replica string) ([Shards]int64, error) {
	var out [Shards]int64
	rs := s.doMulti(ctx, "replicacounts", s.perShard(func(k string) rueidis.Completed {
		return s.c.B().Scard().Key(k).Build()
	}, "r:"+replica))
	for n, r := range rs {
		v, err := r.AsInt64()
		if err != nil {
			return out, err
		}
		out[n] = v
	}
	return out, nil
}

// ReplicaSessions lists the sessions of shard that Redis records as having
// connections on replica.
func (s *State) ReplicaSessions(ctx context.Context, shard int, replica string) ([]string, error) {
	return s.do(ctx, "replicasessions", s.c.B().Smembers().Key(s.shardPrefix(shard)+"r:"+replica).Build()).AsStrSlice()
}
