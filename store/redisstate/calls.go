package redisstate

import (
	"context"
	"time"

	"github.com/redis/rueidis"
)

// Every round trip State makes goes through these, so that Options.Observe
// sees each one, once, under one name: a script run (exec, execMulti) under
// the script's name, any other command (do, doOn, doMulti) under the name
// its caller gives. A pipeline is one round trip, so one call.

// exec runs sc with keys and args.
func (s *State) exec(ctx context.Context, sc luaScript, keys, args []string) rueidis.RedisResult {
	start := time.Now()
	r := sc.lua.Exec(ctx, s.c, keys, args)
	s.observe(sc.name, start, r.Error())
	return r
}

// execMulti runs sc once per exec, pipelined (rueidis routes each to its
// slot's node): one call for Observe.
func (s *State) execMulti(ctx context.Context, sc luaScript, execs []rueidis.LuaExec) []rueidis.RedisResult {
	start := time.Now()
	rs := sc.lua.ExecMulti(ctx, s.c, execs...)
	s.observe(sc.name, start, firstErr(rs))
	return rs
}

// do sends cmd through the State's client, doOn through c (one node's).
func (s *State) do(ctx context.Context, call string, cmd rueidis.Completed) rueidis.RedisResult {
	return s.doOn(ctx, s.c, call, cmd)
}

func (s *State) doOn(ctx context.Context, c rueidis.Client, call string, cmd rueidis.Completed) rueidis.RedisResult {
	start := time.Now()
	r := c.Do(ctx, cmd)
	s.observe(call, start, r.Error())
	return r
}

// doMulti pipelines cmds: one call for Observe.
func (s *State) doMulti(ctx context.Context, call string, cmds rueidis.Commands) []rueidis.RedisResult {
	start := time.Now()
	rs := s.c.DoMulti(ctx, cmds...)
	s.observe(call, start, firstErr(rs))
	return rs
}

// observe reports one call to Options.Observe. A nil reply (HGET of a
// missing field, GET of a missing key) is an answer, not a failure.
func (s *State) observe(call string, start time.Time, err error) {
	if s.o.Observe == nil {
		return
	}
	if rueidis.IsRedisNil(err) {
		err = nil
	}
	s.o.Observe(call, time.Since(start), err)
}

// firstErr is the first error of a pipeline's replies other than a nil
// reply, or nil.
func firstErr(rs []rueidis.RedisResult) error {
	for _, r := range rs {
		if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
			return err
		}
	}
	return nil
}
