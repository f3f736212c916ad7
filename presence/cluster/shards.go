package cluster

import (
	"hash/fnv"
	"strconv"
	"sync/atomic"

	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
)

// Sweeping every shard costs a script run per shard whether anything is due
// or not, so with many replicas the idle cluster would pay that many times
// over. The live replicas share the shards instead: each sweeps the shards
// it owns at every round, by rendezvous hashing over the registry (every
// replica computes the same owners from the same list, and a replica that
// joins or leaves moves only its share), and every shard at every
// fullSweepEvery-th round, so that a shard whose owner just died, or that
// two replicas' views of the registry disagree about, still waits at most
// that long. Ownership is an economy, never a lock: the scripts decide
// with compare-and-swap, so any replica may sweep any shard.

// fullSweepEvery is how often (in sweep rounds) a replica sweeps every shard.
const fullSweepEvery = 4

// ownership is which shards this replica sweeps at every round.
type ownership struct {
	owned atomic.Pointer[[redisstate.Shards]bool] // nil: all
}

// owns reports whether shard n is this replica's to sweep each round.
func (o *ownership) owns(n int) bool {
	p := o.owned.Load()
	return p == nil || p[n]
}

// assign recomputes the shares from the live replicas' ids; me not among
// them (the registry does not list us yet, or Redis lost it) means all.
func (o *ownership) assign(me string, live []string) {
	found := false
	for _, r := range live {
		found = found || r == me
	}
	if !found || len(live) < 2 {
		o.owned.Store(nil)
		return
	}
	var owned [redisstate.Shards]bool
	for n := range redisstate.Shards {
		best, bestScore := "", uint64(0)
		for _, r := range live {
			h := fnv.New64a()
			h.Write([]byte(r))
			h.Write([]byte{0})
			h.Write([]byte(strconv.Itoa(n)))
			if s := h.Sum64(); best == "" || s > bestScore || (s == bestScore && r < best) {
				best, bestScore = r, s
			}
		}
		owned[n] = best == me
	}
	o.owned.Store(&owned)
}
