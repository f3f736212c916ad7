// Package redisclient measures the two Redis clients the sidecar could use,
// go-redis v9 and rueidis, on the work cluster mode gives Redis: small Lua
// scripts (EVALSHA) on one session's keys, from many goroutines at once,
// against a real redis-server on this machine. It lives in bench/ so that
// the client not chosen never becomes a dependency of the sidecar.
//
//	go test -run '^$' -bench . -benchtime 3s ./redisclient
package redisclient

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil/redistest"
)

// connScript is shaped like a connection-open decision: read and change a
// session's hash and the shard's deadline set, in one slot, with Redis's clock.
const connScript = `
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local n = redis.call('HINCRBY', KEYS[1], 'conns', 1)
redis.call('HSET', KEYS[1], 'seen', now)
redis.call('ZREM', KEYS[2], ARGV[1])
return n`

// parallelism: goroutines per GOMAXPROCS, about what a replica's relay
// goroutines reporting connection events look like.
const parallelism = 32

func keys(i uint64) []string {
	shard := i % 64
	return []string{fmt.Sprintf("{ps:%d}:s:sess-%d", shard, i%10000), fmt.Sprintf("{ps:%d}:due", shard)}
}

func BenchmarkScript(b *testing.B) {
	srv := redistest.Start(b)
	ctx := context.Background()

	b.Run("go-redis", func(b *testing.B) {
		c := goredis.NewClient(&goredis.Options{Addr: srv.Addr, PoolSize: 64})
		defer c.Close()
		script := goredis.NewScript(connScript)
		if err := script.Load(ctx, c).Err(); err != nil {
			b.Fatal(err)
		}
		var seq atomic.Uint64
		b.ReportAllocs()
		b.SetParallelism(parallelism)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := seq.Add(1)
				k := keys(i)
				if err := script.EvalSha(ctx, c, k, k[0]).Err(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})

	b.Run("rueidis", func(b *testing.B) {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr}, DisableCache: true})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		script := rueidis.NewLuaScript(connScript)
		var seq atomic.Uint64
		b.ReportAllocs()
		b.SetParallelism(parallelism)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := seq.Add(1)
				k := keys(i)
				if err := script.Exec(ctx, c, k, []string{k[0]}).Error(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
