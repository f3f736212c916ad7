package redisstate

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/presence-sidecar/presence-sidecar/timeline"
)

// Cluster mode's session histories (package timeline): one capped list per
// session, P{N}:tl:SID, in the session's shard (hash tag) like its other
// keys, newest first, trimmed to the bound and expiring with ForgetAfter.
// Every replica writes there and reads from there, so a session's history
// is the same from every replica.

var timelineScript = luaScript{name: "timeline", lua: rueidis.NewLuaScript(mustRead("lua/timeline.lua"))}

func mustRead(name string) string {
	b, err := luaFiles.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// TimelineBackend is a timeline.Backend in Redis.
type TimelineBackend struct {
	s          *State
	perSession int
}

// Timeline returns the State's timeline backend, keeping perSession events
// per session.
func (s *State) Timeline(perSession int) *TimelineBackend {
	return &TimelineBackend{s: s, perSession: max(perSession, 1)}
}

func (t *TimelineBackend) key(sid string) string {
	return t.s.shardPrefix(ShardOf(sid)) + "tl:" + sid
}

// Name implements timeline.Backend.
func (t *TimelineBackend) Name() string { return "redis" }

// Save implements timeline.Backend: one script run per session, pipelined.
func (t *TimelineBackend) Save(ctx context.Context, batch map[string][]timeline.Event) error {
	execs := make([]rueidis.LuaExec, 0, len(batch))
	for sid, evs := range batch {
		args := []string{strconv.Itoa(t.perSession), strconv.FormatInt(max(t.s.o.ForgetAfter, time.Minute).Milliseconds(), 10)}
		for _, e := range evs {
			b, err := json.Marshal(e)
			if err != nil {
				return err
			}
			args = append(args, e.ID, string(b))
		}
		execs = append(execs, rueidis.LuaExec{Keys: []string{t.key(sid)}, Args: args})
	}
	if len(execs) == 0 {
		return nil
	}
	return firstErr(t.s.execMulti(ctx, timelineScript, execs))
}

// Load implements timeline.Backend.
func (t *TimelineBackend) Load(ctx context.Context, sid string) ([]timeline.Event, error) {
	list, err := t.s.do(ctx, "timeline_read", t.s.c.B().Lrange().Key(t.key(sid)).Start(0).Stop(-1).Build()).AsStrSlice()
	if err != nil {
		return nil, err
	}
	out := make([]timeline.Event, 0, len(list))
	for _, v := range slices.Backward(list) {
		_, body, ok := strings.Cut(v, "\t")
		var e timeline.Event
		if ok && json.Unmarshal([]byte(body), &e) == nil {
			out = append(out, e)
		}
	}
	return timeline.Merge(0, out), nil
}
