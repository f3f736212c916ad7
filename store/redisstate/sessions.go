package redisstate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/rueidis"
)

const (
	// scanCount is the COUNT hint of each SCAN: keys looked at per round
	// trip, a trade between round trips and how long each blocks Redis
	// (https://redis.io/docs/latest/commands/scan/).
	scanCount = 1000
	// readBatch is how many session hashes one pipelined read fetches.
	readBatch = 500
)

// Sessions lists up to limit of the sessions Redis holds, the first by id,
// for the admin API and the status page in cluster mode; limit <= 0
// returns none. It walks every primary's keyspace with SCAN (a Redis
// Cluster keeps each shard on one master, so each must be scanned), keeping
// only the limit smallest ids, then reads their hashes pipelined. A session
// written during the walk may be missed or seen twice (SCAN's guarantee:
// only what exists for the whole walk is returned); the ids are
// deduplicated.
func (s *State) Sessions(ctx context.Context, limit int) ([]SessionState, error) {
	if limit <= 0 {
		return []SessionState{}, nil
	}
	ids, err := s.sessionIDs(ctx, limit)
	if err != nil {
		return nil, err
	}
	out := make([]SessionState, 0, len(ids))
	for batch := range slices.Chunk(ids, readBatch) {
		cmds := make(rueidis.Commands, len(batch))
		for i, sid := range batch {
			_, key := s.sessionKey(sid)
			cmds[i] = s.c.B().Hgetall().Key(key).Build()
		}
		for i, r := range s.doMulti(ctx, "sessions", cmds) {
			m, err := r.AsStrMap()
			if err != nil {
				return nil, err
			}
			if len(m) > 0 { // else forgotten since the walk
				out = append(out, parseSession(batch[i], m))
			}
		}
	}
	return out, nil
}

// sessionIDs walks every primary for session hashes and returns the limit
// smallest ids, sorted, holding at most about limit+scanCount at a time.
func (s *State) sessionIDs(ctx context.Context, limit int) ([]string, error) {
	pattern := globEscape(s.o.Prefix) + "{*}:s:*"
	var ids []string
	keep := func() {
		slices.Sort(ids)
		ids = slices.Compact(ids)
		ids = ids[:min(limit, len(ids))]
	}
	nodes := s.c.Nodes()
	if len(nodes) == 0 { // else an empty list would pass for an empty Redis
		return nil, errors.New("redisstate: no Redis node known (not connected yet?)")
	}
	for addr, node := range nodes {
		primary, err := s.isPrimary(ctx, node)
		if err != nil {
			return nil, fmt.Errorf("redisstate: the role of %s: %w", addr, err)
		}
		if !primary {
			continue // a replica's keys are its primary's, maybe behind
		}
		for cursor := uint64(0); ; {
			e, err := s.doOn(ctx, node, "scan", node.B().Scan().Cursor(cursor).Match(pattern).Count(scanCount).
				Type("hash").Build()).AsScanEntry()
			if err != nil {
				return nil, fmt.Errorf("redisstate: scanning %s: %w", addr, err)
			}
			for _, k := range e.Elements {
				if sid, ok := s.sessionOfKey(k); ok {
					ids = append(ids, sid)
				}
			}
			if len(ids) >= limit+scanCount {
				keep()
			}
			if cursor = e.Cursor; cursor == 0 {
				break
			}
		}
	}
	keep()
	return ids, nil
}

// isPrimary reports whether node is a primary: rueidis's Nodes lists a
// Cluster's replicas too, and a standalone or Sentinel client's replicas
// when it reads from them.
func (s *State) isPrimary(ctx context.Context, node rueidis.Client) (bool, error) {
	v, err := s.doOn(ctx, node, "role", node.B().Role().Build()).ToArray()
	if err != nil {
		return false, err
	}
	if len(v) == 0 {
		return false, fmt.Errorf("empty ROLE reply")
	}
	role, err := v[0].ToString()
	return role == "master", err
}

// sessionOfKey is the session id of key if key is a session hash of this
// State's prefix: "P{N}:s:SID" with N the shard of SID. The check keeps out
// what MATCH cannot, a queue or lease key whose session id itself contains
// "}:s:".
func (s *State) sessionOfKey(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, s.o.Prefix+"{")
	if !ok {
		return "", false
	}
	shard, sid, ok := strings.Cut(rest, "}:s:")
	if !ok || sid == "" {
		return "", false
	}
	n, err := strconv.Atoi(shard)
	if err != nil || n < 0 || n >= Shards || strconv.Itoa(n) != shard || ShardOf(sid) != n {
		return "", false
	}
	return sid, true
}

// globEscape quotes the characters SCAN's MATCH pattern treats as special,
// so that a prefix containing them matches only itself.
func globEscape(s string) string {
	var b strings.Builder
	for i := range len(s) { // bytes: a key is bytes, not necessarily UTF-8
		if strings.IndexByte(`\*?[]`, s[i]) >= 0 {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
