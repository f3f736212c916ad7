package cluster

import (
	"testing"

	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
)

// Every shard has exactly one owner among the live replicas, the shares are
// about even, and a replica that leaves moves only its own shards.
func TestShardsSharedAmongLiveReplicas(t *testing.T) {
	live := []string{"a1b2c3d4", "0f9e8d7c", "55aa55aa"}
	owners := map[string]*ownership{}
	for _, r := range live {
		owners[r] = &ownership{}
		owners[r].assign(r, live)
	}
	count := map[string]int{}
	owner := map[int]string{}
	for n := range redisstate.Shards {
		k := 0
		for _, r := range live {
			if owners[r].owns(n) {
				k++
				count[r]++
				owner[n] = r
			}
		}
		if k != 1 {
			t.Fatalf("shard %d has %d owners", n, k)
		}
	}
	for r, c := range count {
		if c < redisstate.Shards/6 {
			t.Errorf("replica %s owns %d of %d shards", r, c, redisstate.Shards)
		}
	}
	// live[2] leaves: the others keep what they had.
	rest := live[:2]
	for _, r := range rest {
		o := &ownership{}
		o.assign(r, rest)
		for n := range redisstate.Shards {
			if owner[n] == r && !o.owns(n) {
				t.Fatalf("shard %d moved away from %s when another replica left", n, r)
			}
		}
	}
	// Not in the list (not registered yet), or alone: everything.
	o := &ownership{}
	o.assign("new", live)
	o2 := &ownership{}
	o2.assign("solo", []string{"solo"})
	for n := range redisstate.Shards {
		if !o.owns(n) || !o2.owns(n) {
			t.Fatal("an unlisted or lone replica must sweep every shard")
		}
	}
}
