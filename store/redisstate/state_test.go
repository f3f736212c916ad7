package redisstate

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
	"github.com/presence-sidecar/presence-sidecar/internal/testutil/redistest"
	"github.com/presence-sidecar/presence-sidecar/store"
)

// interval is short: deadlines are decided by Redis's clock, which no test
// can move, so the tests wait for it.
const interval = 300 * time.Millisecond

var connMode = Mode{Interval: interval}

// deployments runs fn against a single redis-server and a 3-master Redis
// Cluster: every script must stay in one slot.
func deployments(t *testing.T, fn func(t *testing.T, s *State)) {
	t.Run("single", func(t *testing.T) {
		srv := redistest.Start(t)
		fn(t, newState(t, []string{srv.Addr}))
	})
	t.Run("cluster", func(t *testing.T) {
		c := redistest.StartCluster(t, 3)
		fn(t, newState(t, c.Addrs()))
	})
}

func newState(t *testing.T, addrs []string) *State {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return New(c, Options{Prefix: "test:", ForgetAfter: time.Hour})
}

// fireAll sweeps every shard once, as any replica's sweeper does.
func fireAll(t *testing.T, s *State) []Decision {
	t.Helper()
	var out []Decision
	for n := range Shards {
		d, err := s.Fire(context.Background(), n, 100)
		if err != nil {
			t.Fatalf("Fire shard %d: %v", n, err)
		}
		out = append(out, d...)
	}
	return out
}

// settle waits past the interval and sweeps; it returns the decisions.
func settle(t *testing.T, s *State) []Decision {
	t.Helper()
	time.Sleep(interval + 100*time.Millisecond)
	return fireAll(t, s)
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// open and closeConn state one more or one fewer connection of sid on
// replica, as a replica's engine does from its own count.
type replicaCounts map[string]int

func (rc replicaCounts) open(t *testing.T, s *State, sid, replica string, e Event) Sign {
	t.Helper()
	rc[sid+"/"+replica]++
	sg, _, err := s.Conns(context.Background(), sid, replica, rc[sid+"/"+replica], e)
	if err != nil {
		t.Fatal(err)
	}
	return sg
}

func (rc replicaCounts) closeConn(t *testing.T, s *State, sid, replica string, e Event) int64 {
	t.Helper()
	rc[sid+"/"+replica]--
	_, n, err := s.Conns(context.Background(), sid, replica, rc[sid+"/"+replica], e)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func claimAll(t *testing.T, s *State, owner string, lease time.Duration) []Lease {
	t.Helper()
	var out []Lease
	for n := range Shards {
		l, err := s.Claim(context.Background(), n, owner, lease, 10)
		if err != nil {
			t.Fatalf("Claim shard %d: %v", n, err)
		}
		out = append(out, l...)
	}
	return out
}

// A client moving from replica A to replica B inside the interval produces
// no decision; a session open on both and closed on both is decided once,
// with one /expire queued, however many sweepers race (invariants 1, 2).
func TestOneDecisionAcrossReplicas(t *testing.T) {
	deployments(t, func(t *testing.T, s *State) {
		ctx := context.Background()
		rc := replicaCounts{}
		ev := Event{Bot: "b", Mode: connMode}
		rc.open(t, s, "moving", "A", ev)
		must[bool](t)(s.Handoff(ctx, "moving", "b", true, ""))
		rc.closeConn(t, s, "moving", "A", Event{Mode: connMode})
		rc.open(t, s, "moving", "B", ev)
		if d := settle(t, s); len(d) != 0 {
			t.Fatalf("a reconnect to another replica was decided: %+v", d)
		}

		rc.open(t, s, "both", "A", ev)
		rc.open(t, s, "both", "B", ev)
		must[bool](t)(s.Handoff(ctx, "both", "b", true, ""))
		if v, ok, err := s.Session(ctx, "both"); err != nil || !ok || v.Conns != 2 || v.Replicas["A"] != 1 || v.Replicas["B"] != 1 || !v.HandedOver {
			t.Fatalf("the cluster's view of a session on two replicas: %+v %v %v", v, ok, err)
		}
		if n := rc.closeConn(t, s, "both", "A", Event{Mode: connMode}); n != 1 {
			t.Fatalf("connections left after A closed: %d, want 1", n)
		}
		rc.closeConn(t, s, "both", "B", Event{Mode: connMode})
		time.Sleep(interval + 100*time.Millisecond)
		var mu sync.Mutex
		var all []Decision
		var wg sync.WaitGroup
		for range 4 { // four replicas sweeping at once
			wg.Go(func() {
				d := fireAll(t, s)
				mu.Lock()
				all = append(all, d...)
				mu.Unlock()
			})
		}
		wg.Wait()
		if len(all) != 1 || all[0].SessionID != "both" || all[0].Episode != 1 || !all[0].Queued || all[0].Reason != "disconnected" {
			t.Fatalf("decisions: %+v, want one for session both, episode 1, queued", all)
		}
		leases := claimAll(t, s, "d1", time.Minute)
		if len(leases) != 1 || leases[0].Note.Kind != "client.offline" || len(leases[0].Note.ID) != len("msg_")+32 {
			t.Fatalf("queued: %+v", leases)
		}
	})
}

// An absence decided by one replica and the return seen by another: the
// return message is queued after the /expire and leased only once the
// /expire is delivered (invariant 3).
func TestReturnMessageFollowsItsExpire(t *testing.T) {
	deployments(t, func(t *testing.T, s *State) {
		ctx := context.Background()
		rc := replicaCounts{}
		ev := Event{Bot: "b", Mode: connMode, ReturnText: "voltou"}
		rc.open(t, s, "s", "A", ev)
		must[bool](t)(s.Handoff(ctx, "s", "b", true, ""))
		rc.closeConn(t, s, "s", "A", Event{Mode: connMode})
		if d := settle(t, s); len(d) != 1 {
			t.Fatalf("decisions: %+v", d)
		}
		if sg := rc.open(t, s, "s", "B", ev); !sg.Returned || !sg.Queued || sg.Episode != 1 {
			t.Fatalf("return: %+v", sg)
		}
		if v, _, err := s.Session(ctx, "s"); err != nil || v.ReturnedAt.IsZero() || v.Absent || !v.AbsentAt.IsZero() {
			t.Fatalf("after the return: %+v, %v; want it dated", v, err)
		}
		first := claimAll(t, s, "d1", time.Minute)
		if len(first) != 1 || first[0].Note.Kind != "client.offline" {
			t.Fatalf("first lease: %+v, want the /expire alone", first)
		}
		if again := claimAll(t, s, "d2", time.Minute); len(again) != 0 {
			t.Fatalf("the return message was leased while its /expire is: %+v", again)
		}
		if ok := must[bool](t)(s.Ack(ctx, first[0], Delivered, first[0].Note, time.Time{})); !ok {
			t.Fatal("ack refused")
		}
		second := claimAll(t, s, "d1", time.Minute)
		if len(second) != 1 || second[0].Note.Kind != "client.online" || second[0].Note.Text != "voltou" || second[0].DeadEpisode {
			t.Fatalf("second lease: %+v", second)
		}
	})
}

// A replica that dies leaves its connections as leases that lapse: a
// survivor reaps them, and the session left without connections is decided
// one interval after the lapse.
func TestDeadReplicaIsReaped(t *testing.T) {
	deployments(t, func(t *testing.T, s *State) {
		ctx := context.Background()
		rc := replicaCounts{}
		rc.open(t, s, "held", "A", Event{Mode: connMode})
		must[bool](t)(s.Handoff(ctx, "held", "", true, ""))
		if d := settle(t, s); len(d) != 0 {
			t.Fatalf("a connected session was decided: %+v", d)
		}
		lapse := time.Now()
		for n := range Shards {
			must[int64](t)(s.Reap(ctx, n, "A", lapse))
			must[int64](t)(s.Reap(ctx, n, "A", lapse)) // a second survivor: idempotent
		}
		var got []Decision
		testutil.Eventually(t, 5*time.Second, "the absence after the lapse", func() bool {
			got = append(got, fireAll(t, s)...)
			return len(got) > 0
		})
		if len(got) != 1 || got[0].SessionID != "held" {
			t.Fatalf("decisions: %+v", got)
		}
	})
}

// A lease that lapsed is taken over with a new fencing token; the old
// owner's late ack is refused, the new owner's applied.
func TestStaleLeaseAckIsRefused(t *testing.T) {
	deployments(t, func(t *testing.T, s *State) {
		ctx := context.Background()
		rc := replicaCounts{}
		rc.open(t, s, "f", "A", Event{Mode: connMode})
		must[bool](t)(s.Handoff(ctx, "f", "", true, ""))
		rc.closeConn(t, s, "f", "A", Event{Mode: connMode})
		settle(t, s)
		old := claimAll(t, s, "zombie", 100*time.Millisecond)
		if len(old) != 1 {
			t.Fatalf("leases: %+v", old)
		}
		time.Sleep(200 * time.Millisecond)
		cur := claimAll(t, s, "survivor", time.Minute)
		if len(cur) != 1 || cur[0].Token == old[0].Token || cur[0].Note.ID != old[0].Note.ID {
			t.Fatalf("takeover: %+v after %+v", cur, old)
		}
		if ok := must[bool](t)(s.Ack(ctx, old[0], Delivered, old[0].Note, time.Time{})); ok {
			t.Fatal("a lapsed lease's ack was applied")
		}
		if ok := must[bool](t)(s.Ack(ctx, cur[0], Delivered, cur[0].Note, time.Time{})); !ok {
			t.Fatal("the current lease's ack was refused")
		}
		if left := claimAll(t, s, "survivor", time.Minute); len(left) != 0 {
			t.Fatalf("still queued: %+v", left)
		}
	})
}

// A dead-lettered /expire marks its episode: the return message of that
// episode is leased flagged, so that the deliverer dead-letters it too.
func TestDeadExpireMarksItsEpisode(t *testing.T) {
	deployments(t, func(t *testing.T, s *State) {
		ctx := context.Background()
		rc := replicaCounts{}
		ev := Event{Mode: connMode, HandedOver: true}
		rc.open(t, s, "d", "A", ev)
		rc.closeConn(t, s, "d", "A", Event{Mode: connMode})
		settle(t, s)
		rc.open(t, s, "d", "A", ev)
		l := claimAll(t, s, "d1", time.Minute)
		if len(l) != 1 {
			t.Fatalf("leases: %+v", l)
		}
		n := l[0].Note
		n.Attempts, n.LastStatus, n.LastError = 1, 422, "refused"
		must[bool](t)(s.Ack(ctx, l[0], Dead, n, time.Time{}))
		l = claimAll(t, s, "d1", time.Minute)
		if len(l) != 1 || l[0].Note.Kind != "client.online" || !l[0].DeadEpisode {
			t.Fatalf("return message lease: %+v", l)
		}
	})
}

// The registry: a fresh lease is not lapsed; one left to lapse is listed,
// reaped by any survivor and retired; a replica that renews after lapsing is
// told so, to re-assert its connections.
func TestReplicaRegistry(t *testing.T) {
	srv := redistest.Start(t)
	s := newState(t, []string{srv.Addr})
	ctx := context.Background()
	rc := replicaCounts{}
	// A lease long enough that a loaded machine cannot outlive it between
	// two calls by accident.
	const ttl = 1500 * time.Millisecond
	if _, lapsed, err := s.Renew(ctx, "A", ttl); err != nil || !lapsed {
		t.Fatalf("first renew: lapsed=%v err=%v, want lapsed (nothing to keep)", lapsed, err)
	}
	if _, lapsed, _ := s.Renew(ctx, "A", ttl); lapsed {
		t.Fatal("a renew within the lease says lapsed")
	}
	rc.open(t, s, "x", "A", Event{Mode: connMode, HandedOver: true})
	if l := must[[]LapsedReplica](t)(s.Lapsed(ctx)); len(l) != 0 {
		t.Fatalf("lapsed too early: %+v", l)
	}
	time.Sleep(ttl + 100*time.Millisecond)
	l := must[[]LapsedReplica](t)(s.Lapsed(ctx))
	if len(l) != 1 || l[0].ID != "A" {
		t.Fatalf("lapsed: %+v", l)
	}
	if n := must[int64](t)(s.ReapReplica(ctx, l[0])); n != 1 {
		t.Fatalf("reaped %d sessions, want 1", n)
	}
	if l := must[[]LapsedReplica](t)(s.Lapsed(ctx)); len(l) != 0 {
		t.Fatalf("still listed after reaping: %+v", l)
	}
	if _, lapsed, _ := s.Renew(ctx, "A", time.Second); !lapsed {
		t.Fatal("a replica renewing after it was reaped is not told to re-assert")
	}
}

// A replica states absolute counts: the same statement retried (a timeout
// whose write did land) or replayed (after Redis was away) changes nothing,
// and a session whose replicas all state 0 starts its interval.
func TestConnsIsIdempotent(t *testing.T) {
	srv := redistest.Start(t)
	s := newState(t, []string{srv.Addr})
	ctx := context.Background()
	ev := Event{Mode: connMode, HandedOver: true}
	for range 3 {
		if _, n, err := s.Conns(ctx, "i", "A", 2, ev); err != nil || n != 2 {
			t.Fatalf("A states 2: total %d, %v", n, err)
		}
	}
	if _, n, _ := s.Conns(ctx, "i", "B", 1, ev); n != 3 {
		t.Fatalf("B states 1: total %d, want 3", n)
	}
	if d := settle(t, s); len(d) != 0 {
		t.Fatalf("decided while connected: %+v", d)
	}
	for range 2 {
		s.Conns(ctx, "i", "A", 0, ev)
		s.Conns(ctx, "i", "B", 0, ev)
	}
	if d := settle(t, s); len(d) != 1 || d[0].SessionID != "i" {
		t.Fatalf("decisions after both replicas stated 0: %+v", d)
	}
	if _, n, _ := s.Conns(ctx, "unknown", "A", 0, ev); n != 0 {
		t.Fatalf("stating 0 for an unknown session: %d", n)
	}
}

// Run-time bot settings are shared by every replica through Redis.
func TestBotsAreShared(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newState(t, []string{srv.Addr}), newState(t, []string{srv.Addr})
	on := true
	if err := a.PutBot(context.Background(), "sales", store.BotSettings{Enabled: &on, CheckInterval: "3m"}); err != nil {
		t.Fatal(err)
	}
	got, err := b.Bots(context.Background())
	if err != nil || len(got) != 1 || got["sales"].CheckInterval != "3m" || got["sales"].Enabled == nil || !*got["sales"].Enabled {
		t.Fatalf("bots seen by another replica: %+v %v", got, err)
	}
}

// webhook-ids are derived from session, creation, episode and kind: the
// same decision made twice (a failover that lost the first) carries the
// same id; a session forgotten and seen again later does not reuse one.
func TestWebhookIDsAreDerived(t *testing.T) {
	srv := redistest.Start(t)
	s := newState(t, []string{srv.Addr})
	ctx := context.Background()
	ev := Event{Mode: connMode, HandedOver: true}
	s.Conns(ctx, "w", "A", 1, ev)
	_, key := s.sessionKey("w")
	inc, err := srv.Do("HGET", key, "inc")
	if err != nil || inc == "" {
		t.Fatalf("inc: %q %v", inc, err)
	}
	s.Conns(ctx, "w", "A", 0, ev)
	settle(t, s)
	l := claimAll(t, s, "d", time.Minute)
	sum := sha1.Sum([]byte("w\n" + inc + "\n1\nclient.offline"))
	if len(l) != 1 || l[0].Note.ID != "msg_"+hex.EncodeToString(sum[:])[:32] {
		t.Fatalf("leases %+v, want the derived id", l)
	}
	if _, err := srv.Do("DEL", key); err != nil { // forgotten
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	s.Conns(ctx, "w", "A", 1, ev)
	if inc2, _ := srv.Do("HGET", key, "inc"); inc2 == inc {
		t.Fatalf("a session made again has the old creation time %s", inc)
	}
}

// A claim looks past heads other deliverers hold: with six sessions of one
// shard due and three leased by X, Y's claim of three gets the other three.
func TestClaimLooksPastHeldHeads(t *testing.T) {
	srv := redistest.Start(t)
	s := newState(t, []string{srv.Addr})
	ctx := context.Background()
	var sids []string
	for i := 0; len(sids) < 6; i++ {
		if sid := fmt.Sprintf("same-shard-%d", i); ShardOf(sid) == 0 {
			sids = append(sids, sid)
		}
	}
	ev := Event{Mode: connMode, HandedOver: true}
	for _, sid := range sids {
		s.Conns(ctx, sid, "A", 1, ev)
		s.Conns(ctx, sid, "A", 0, ev)
	}
	if d := settle(t, s); len(d) != 6 {
		t.Fatalf("decisions: %d, want 6", len(d))
	}
	x := must[[]Lease](t)(s.Claim(ctx, 0, "X", time.Minute, 3))
	y := must[[]Lease](t)(s.Claim(ctx, 0, "Y", time.Minute, 3))
	if len(x) != 3 || len(y) != 3 {
		t.Fatalf("X leased %d, Y leased %d; want 3 each", len(x), len(y))
	}
	seen := map[string]bool{}
	for _, l := range append(x, y...) {
		if seen[l.Note.SessionID] {
			t.Fatalf("session %s leased twice", l.Note.SessionID)
		}
		seen[l.Note.SessionID] = true
	}
}

// A claim for a few heads looks past every head already leased, however
// many: a deliverer with most of a shard's due heads in flight asks for one
// when one attempt finishes, and must get one while any is free (a window
// of four times the limit was filled by its own leases, and the shard
// looked drained).
func TestClaimLooksPastEveryHeldHead(t *testing.T) {
	srv := redistest.Start(t)
	s := newState(t, []string{srv.Addr})
	ctx := context.Background()
	var sids []string
	for i := 0; len(sids) < 20; i++ {
		if sid := fmt.Sprintf("crowded-%d", i); ShardOf(sid) == 0 {
			sids = append(sids, sid)
		}
	}
	absences(t, s, sids...)
	held := must[[]Lease](t)(s.Claim(ctx, 0, "X", time.Minute, 16))
	if len(held) != 16 {
		t.Fatalf("X leased %d, want 16", len(held))
	}
	seen := map[string]bool{}
	for _, l := range held {
		seen[l.Note.SessionID] = true
	}
	for _, owner := range []string{"X", "Y", "X", "Y"} {
		l := must[[]Lease](t)(s.Claim(ctx, 0, owner, time.Minute, 1))
		if len(l) != 1 || seen[l[0].Note.SessionID] {
			t.Fatalf("%s's claim of one with %d of 20 heads leased: %+v, want one not leased yet", owner, len(seen), l)
		}
		seen[l[0].Note.SessionID] = true
	}
	if l := must[[]Lease](t)(s.Claim(ctx, 0, "Y", time.Minute, 1)); len(l) != 0 {
		t.Fatalf("a claim with every head leased: %+v", l)
	}
}

// A hand-over that starts while the client is already absent queues that
// episode's /expire at once; one that ends after it closes the episode, so
// a new hand-over in the same absence is a new episode with its own /expire
// (invariants 2 and 4, as the embedded engine does).
func TestHandoffDuringAnAbsence(t *testing.T) {
	deployments(t, func(t *testing.T, s *State) {
		ctx := context.Background()
		rc := replicaCounts{}
		rc.open(t, s, "late", "A", Event{Bot: "b", Mode: connMode})
		rc.closeConn(t, s, "late", "A", Event{Mode: connMode})
		if d := settle(t, s); len(d) != 1 || d[0].Queued {
			t.Fatalf("decisions: %+v, want one, not notified (not handed over)", d)
		}
		must[bool](t)(s.Handoff(ctx, "late", "b", true, ""))
		first := claimAll(t, s, "d", time.Minute)
		if len(first) != 1 || first[0].Note.Kind != "client.offline" || first[0].Note.Episode != 1 || first[0].Note.Reason != "disconnected" {
			t.Fatalf("after the late hand-over: %+v, want episode 1's /expire", first)
		}
		must[bool](t)(s.Ack(ctx, first[0], Delivered, first[0].Note, time.Time{}))
		if again := must[bool](t)(s.Handoff(ctx, "late", "b", true, "")); again {
			t.Fatal("a second start changed something")
		}
		must[bool](t)(s.Handoff(ctx, "late", "b", false, ""))
		must[bool](t)(s.Handoff(ctx, "late", "b", true, ""))
		second := claimAll(t, s, "d", time.Minute)
		if len(second) != 1 || second[0].Note.Episode != 2 || second[0].Note.ID == first[0].Note.ID {
			t.Fatalf("a new hand-over in the same absence: %+v, want episode 2's own /expire", second)
		}
	})
}

// A bot whose presence is off (enabled false) has its absences decided but
// never notified, not even when a hand-over starts during one.
func TestMutedBotNotifiesNothing(t *testing.T) {
	deployments(t, func(t *testing.T, s *State) {
		ctx := context.Background()
		rc := replicaCounts{}
		ev := Event{Bot: "off", Mode: connMode, HandedOver: true, Muted: true}
		rc.open(t, s, "m", "A", ev)
		rc.closeConn(t, s, "m", "A", ev)
		if d := settle(t, s); len(d) != 1 || d[0].Queued {
			t.Fatalf("decisions: %+v, want one, not notified", d)
		}
		must[bool](t)(s.Handoff(ctx, "m", "off", false, ""))
		must[bool](t)(s.Handoff(ctx, "m", "off", true, ""))
		if sg := rc.open(t, s, "m", "A", ev); !sg.Returned || sg.Queued {
			t.Fatalf("return: %+v, want returned, nothing queued", sg)
		}
		if l := claimAll(t, s, "d", time.Minute); len(l) != 0 {
			t.Fatalf("a muted bot's session was notified: %+v", l)
		}
	})
}

// The registry says which host each short replica id runs on, and whether
// its lease lapsed; a retired replica leaves no host behind.
func TestReplicasListsTheRegistry(t *testing.T) {
	deployments(t, func(t *testing.T, s *State) {
		ctx := context.Background()
		a := *s
		a.o.Host = "pod-a"
		b := *s
		b.o.Host = "pod-b"
		must[time.Time](t)(func() (time.Time, error) { n, _, err := a.Renew(ctx, "ra", time.Minute); return n, err }())
		must[time.Time](t)(func() (time.Time, error) { n, _, err := b.Renew(ctx, "rb", 200*time.Millisecond); return n, err }())
		time.Sleep(300 * time.Millisecond)
		rs := must[[]Replica](t)(s.Replicas(ctx))
		if len(rs) != 2 || rs[0].ID != "ra" || rs[0].Host != "pod-a" || rs[0].Lapsed || rs[1].Host != "pod-b" || !rs[1].Lapsed {
			t.Fatalf("replicas: %+v", rs)
		}
		for _, r := range must[[]LapsedReplica](t)(s.Lapsed(ctx)) {
			must[int64](t)(s.ReapReplica(ctx, r))
		}
		rs = must[[]Replica](t)(s.Replicas(ctx))
		if len(rs) != 1 || rs[0].ID != "ra" {
			t.Fatalf("after the reap: %+v", rs)
		}
		if hosts := must[map[string]string](t)(s.c.Do(ctx, s.c.B().Hgetall().Key(s.hostsKey()).Build()).AsStrMap()); len(hosts) != 1 {
			t.Fatalf("hosts left: %v", hosts)
		}
	})
}

// In activity mode a connection is not activity, but a new session has its
// interval from its first connection: a client that connects and never
// speaks is found inactive; one that speaks is not, until it falls silent.
func TestActivityModeSilentClientIsInactive(t *testing.T) {
	deployments(t, func(t *testing.T, s *State) {
		ctx := context.Background()
		rc := replicaCounts{}
		// A longer interval than the other tests': the sweep of 64 shards
		// must fit between the two deadlines on a loaded machine.
		const iv = 1500 * time.Millisecond
		act := Mode{Activity: true, Interval: iv}
		rc.open(t, s, "silent", "A", Event{Bot: "b", Mode: act})
		rc.open(t, s, "talks", "A", Event{Bot: "b", Mode: act})
		time.Sleep(iv / 2)
		must[Sign](t)(s.Activity(ctx, "talks", Event{Bot: "b", Mode: act}))
		time.Sleep(iv/2 + 150*time.Millisecond) // silent is due; talks is not for iv/2 more
		d := fireAll(t, s)
		if len(d) != 1 || d[0].SessionID != "silent" || d[0].Reason != "inactive" {
			t.Fatalf("decisions: %+v, want the silent one alone, inactive", d)
		}
		time.Sleep(iv / 2)
		if d := fireAll(t, s); len(d) != 1 || d[0].SessionID != "talks" {
			t.Fatalf("later: %+v, want the one that fell silent", d)
		}
	})
}

// A connection that opened and closed before its replica stated it arrives
// as an unchanged count with Opened: still a return for an absent session
// (its return message queued), and its interval starts again from now.
func TestOpenedAndClosedBeforeStatedIsPresence(t *testing.T) {
	deployments(t, func(t *testing.T, s *State) {
		ctx := context.Background()
		rc := replicaCounts{}
		ev := Event{Bot: "b", Mode: connMode, HandedOver: true, ReturnText: "voltou"}
		rc.open(t, s, "brief", "A", ev)
		rc.closeConn(t, s, "brief", "A", ev)
		if d := settle(t, s); len(d) != 1 || !d[0].Queued {
			t.Fatalf("decisions: %+v", d)
		}
		blip := ev
		blip.Opened = true
		sg, n, err := s.Conns(ctx, "brief", "B", 0, blip)
		if err != nil || !sg.Returned || !sg.Queued || n != 0 {
			t.Fatalf("the blip: %+v %d %v, want a return with its message queued", sg, n, err)
		}
		st := must[SessionState](t)(func() (SessionState, error) { v, _, err := s.Session(ctx, "brief"); return v, err }())
		if st.Absent || st.Deadline.IsZero() {
			t.Fatalf("after the blip: %+v, want present with a deadline", st)
		}
		if d := settle(t, s); len(d) != 1 || d[0].Episode != 2 {
			t.Fatalf("a second absence: %+v, want episode 2", d)
		}
	})
}
