package redisstate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil/redistest"
	"github.com/presence-sidecar/presence-sidecar/store"
)

// absences decides an absence of each of sids, handed over, so that each
// has its /expire queued; it returns when they are decided.
func absences(t *testing.T, s *State, sids ...string) {
	t.Helper()
	ctx := context.Background()
	ev := Event{Bot: "b", Mode: connMode, HandedOver: true, ReturnText: "voltou"}
	for _, sid := range sids {
		for _, count := range []int{1, 0} {
			if _, _, err := s.Conns(ctx, sid, "A", count, ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	if d := settle(t, s); len(d) != len(sids) {
		t.Fatalf("decisions: %d, want %d", len(d), len(sids))
	}
}

// leaseOf claims every due head and returns the one of sid, failing if
// there is none; the others stay leased for a minute.
func leaseOf(t *testing.T, s *State, owner, sid string) Lease {
	t.Helper()
	for _, l := range claimAll(t, s, owner, time.Minute) {
		if l.Note.SessionID == sid {
			return l
		}
	}
	t.Fatalf("no head of %s was due", sid)
	return Lease{}
}

func ack(t *testing.T, s *State, l Lease, o Outcome, n Note, next time.Time) {
	t.Helper()
	if !must[bool](t)(s.Ack(context.Background(), l, o, n, next)) {
		t.Fatalf("ack %s of %s refused", o, n.ID)
	}
}

// Sessions lists every session of every shard, on every primary, by id,
// with the same fields Session reads, and no other prefix's.
func TestSessionsListsEveryShard(t *testing.T) {
	check := func(t *testing.T, s *State) {
		ctx := context.Background()
		other := New(s.c, Options{Prefix: "other:"})
		must[Sign](t)(other.Activity(ctx, "not-mine", Event{Mode: connMode}))
		var want []string
		for i := range 40 {
			sid := fmt.Sprintf("sess-%02d", i)
			want = append(want, sid)
			if _, _, err := s.Conns(ctx, sid, "A", 1+i%2, Event{Bot: "b", Mode: connMode}); err != nil {
				t.Fatal(err)
			}
		}
		must[bool](t)(s.Handoff(ctx, "sess-07", "b", true, ""))
		shards := map[int]bool{}
		for _, sid := range want {
			shards[ShardOf(sid)] = true
		}
		if len(shards) < 10 {
			t.Fatalf("the sessions fall in %d shards only; the test wants them spread", len(shards))
		}
		got := must[[]SessionState](t)(s.Sessions(ctx, 1000))
		ids := make([]string, len(got))
		for i, v := range got {
			ids[i] = v.ID
		}
		if !slices.Equal(ids, want) {
			t.Fatalf("listed %v, want %v", ids, want)
		}
		for _, v := range got {
			one, ok, err := s.Session(ctx, v.ID)
			if err != nil || !ok || fmt.Sprint(one) != fmt.Sprint(v) {
				t.Fatalf("listed %+v, Session reads %+v %v %v", v, one, ok, err)
			}
		}
		if v := got[7]; !v.HandedOver || v.Conns != 2 || v.Replicas["A"] != 2 || v.BotID != "b" {
			t.Fatalf("sess-07: %+v", v)
		}
		first := must[[]SessionState](t)(s.Sessions(ctx, 5))
		if len(first) != 5 || first[0].ID != "sess-00" || first[4].ID != "sess-04" {
			t.Fatalf("the first 5: %+v", first)
		}
		if none := must[[]SessionState](t)(s.Sessions(ctx, 0)); len(none) != 0 {
			t.Fatalf("limit 0 listed %d", len(none))
		}
	}
	deployments(t, check)
	t.Run("sentinel", func(t *testing.T) {
		sen := redistest.StartSentinel(t)
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{sen.Sentinel.Addr}, DisableCache: true,
			Sentinel: rueidis.SentinelOption{MasterSet: redistest.MasterName}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		check(t, New(c, Options{Prefix: "test:", ForgetAfter: time.Hour}))
	})
}

// A client that knows a replica (rueidis lists it among its nodes) scans
// the primary only.
func TestSessionsSkipsReplicas(t *testing.T) {
	primary := redistest.Start(t)
	replica := redistest.Start(t, "--replicaof", "127.0.0.1", fmt.Sprint(primary.Port))
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{primary.Addr}, DisableCache: true,
		Standalone:     rueidis.StandaloneOption{ReplicaAddress: []string{replica.Addr}},
		SendToReplicas: func(rueidis.Completed) bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if n := len(c.Nodes()); n != 2 {
		t.Fatalf("the client knows %d nodes, want the primary and its replica", n)
	}
	var mu sync.Mutex
	calls := map[string]int{}
	s := New(c, Options{Prefix: "test:", Observe: func(call string, _ time.Duration, _ error) {
		mu.Lock()
		calls[call]++
		mu.Unlock()
	}})
	ctx := context.Background()
	must[Sign](t)(s.Activity(ctx, "x", Event{Mode: connMode}))
	if got := must[[]SessionState](t)(s.Sessions(ctx, 10)); len(got) != 1 || got[0].ID != "x" {
		t.Fatalf("listed %+v", got)
	}
	if calls["role"] != 2 || calls["scan"] != 1 {
		t.Fatalf("calls %v: want the role of both nodes asked and one scan, of the primary", calls)
	}
}

// A prefix with glob characters matches only itself in SCAN's MATCH.
func TestGlobEscape(t *testing.T) {
	srv := redistest.Start(t)
	prefix := `a[1]*?\:`
	for _, k := range []string{prefix + "k", "a1x?\\:k", "a1:k", `a[1]*?\x:k`} {
		if _, err := srv.Do("SET", k, "v"); err != nil {
			t.Fatal(err)
		}
	}
	got, err := srv.Do("KEYS", globEscape(prefix)+"*")
	if err != nil || got != prefix+"k" {
		t.Fatalf("KEYS %s = %q %v, want only %s", globEscape(prefix)+"*", got, err, prefix+"k")
	}
}

// Only a session hash of the State's prefix, in its own shard, is a session.
func TestSessionOfKey(t *testing.T) {
	s := New(nil, Options{Prefix: "p:"})
	sid := "x}:s:y"
	n := ShardOf(sid)
	_, own := s.sessionKey(sid)
	cases := map[string]bool{
		own:                                      true,
		s.shardPrefix(n) + "q:" + sid:            false, // its queue: the id holds "}:s:"
		s.shardPrefix((n+1)%Shards) + "s:" + sid: false, // not its shard
		"p:{0" + fmt.Sprint(n) + "}:s:" + sid:    false,
		"other:{" + fmt.Sprint(n) + "}:s:" + sid: false,
		s.shardPrefix(n) + "s:":                  false,
	}
	for k, want := range cases {
		if got, ok := s.sessionOfKey(k); ok != want || (ok && got != sid) {
			t.Errorf("sessionOfKey(%q) = %q, %v; want %v", k, got, ok, want)
		}
	}
}

// Dead letters and recent notifications are read across shards, in the
// embedded store's orders; Replay puts a dead letter back with its
// bookkeeping reset, and replaying a dead /expire and then its return
// message restores their order (docs/ARCHITECTURE.md, "Delivery").
func TestDeadLettersRecentReplay(t *testing.T) {
	deployments(t, func(t *testing.T, s *State) {
		ctx := context.Background()
		sids := []string{"r-0", "r-1", "r-2", "r-3", "r-4", "r-5"}
		absences(t, s, sids...)
		if _, err := s.Replay(ctx, "msg_nothing"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Replay of an unknown id: %v, want ErrNotFound", err)
		}
		var dead []string
		for i, l := range claimAll(t, s, "d", time.Minute) {
			n := l.Note
			n.Attempts, n.LastStatus, n.LastError = 1, 422, "refused"
			if i%2 == 0 {
				ack(t, s, l, Dead, n, time.Time{})
				dead = append(dead, n.ID)
			} else {
				ack(t, s, l, Delivered, l.Note, time.Time{})
			}
		}
		dl := must[[]Note](t)(s.DeadLetters(ctx))
		if len(dl) != len(dead) || !slices.IsSortedFunc(dl, byAt) {
			t.Fatalf("dead letters %+v, want %d oldest first", dl, len(dead))
		}
		for _, n := range dl {
			if !slices.Contains(dead, n.ID) || n.Attempts != 1 || n.LastStatus != 422 {
				t.Fatalf("dead letter %+v", n)
			}
		}
		rec := must[[]Note](t)(s.Recent(ctx, 100))
		if len(rec) != len(sids) || !slices.IsSortedFunc(rec, func(a, b Note) int { return byAt(b, a) }) {
			t.Fatalf("recent %+v, want %d newest first", rec, len(sids))
		}
		if r := must[[]Note](t)(s.Recent(ctx, 2)); len(r) != 2 || r[0].ID != rec[0].ID || r[1].ID != rec[1].ID {
			t.Fatalf("recent 2: %+v, want the newest two of %+v", r, rec)
		}
		if r := must[[]Note](t)(s.Recent(ctx, 0)); len(r) != 0 {
			t.Fatalf("recent 0: %+v", r)
		}

		// The session of the first dead /expire returns: its return message is
		// leased flagged and dead-lettered as the deliverer does.
		off := dl[0]
		sid := off.SessionID
		if _, _, err := s.Conns(ctx, sid, "A", 1, Event{Mode: connMode, ReturnText: "voltou"}); err != nil {
			t.Fatal(err)
		}
		on := leaseOf(t, s, "d2", sid)
		if on.Note.Kind != "client.online" || !on.DeadEpisode {
			t.Fatalf("return message lease: %+v", on)
		}
		ack(t, s, on, Dead, on.Note, time.Time{})

		before := time.Now().Add(-time.Second).UnixMilli()
		rp := must[Note](t)(s.Replay(ctx, off.ID))
		if rp.ID != off.ID || rp.Kind != "client.offline" || rp.Attempts != 0 || rp.LastError != "" || rp.LastStatus != 0 ||
			rp.Replayed < before || rp.At != off.At || rp.Episode != off.Episode || rp.SessionID != sid {
			t.Fatalf("replayed %+v from %+v", rp, off)
		}
		if _, err := s.Replay(ctx, off.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a second Replay: %v, want ErrNotFound", err)
		}
		if n := len(must[[]Note](t)(s.DeadLetters(ctx))); n != len(dead) { // the /expire out, the return message in
			t.Fatalf("dead letters after the replay: %d, want %d", n, len(dead))
		}
		l := leaseOf(t, s, "d3", sid)
		if l.Note.ID != off.ID || l.Note.Attempts != 0 || l.Note.Replayed != rp.Replayed {
			t.Fatalf("the replayed head: %+v", l.Note)
		}
		ack(t, s, l, Delivered, l.Note, time.Time{})
		must[Note](t)(s.Replay(ctx, on.Note.ID))
		l = leaseOf(t, s, "d4", sid)
		if l.Note.ID != on.Note.ID || l.DeadEpisode || l.Note.Text != "voltou" {
			t.Fatalf("the replayed return message: %+v, want it sendable (its /expire is no longer dead)", l)
		}
	})
}

// The depth counter follows every queue and unqueue, and the oldest ready
// head gives the outbox's age.
func TestDepthAndOldestReady(t *testing.T) {
	deployments(t, func(t *testing.T, s *State) {
		ctx := context.Background()
		depth := func(want int64) {
			t.Helper()
			if got := must[int64](t)(s.Depth(ctx)); got != want {
				t.Fatalf("depth %d, want %d", got, want)
			}
		}
		depth(0)
		if _, ok, err := s.OldestReady(ctx); ok || err != nil {
			t.Fatalf("an empty outbox has an oldest head: %v %v", ok, err)
		}
		start := time.Now().Add(-time.Second)
		absences(t, s, "o-0", "o-1", "o-2")
		if _, _, err := s.Conns(ctx, "o-0", "A", 1, Event{Mode: connMode, ReturnText: "voltou"}); err != nil {
			t.Fatal(err)
		}
		depth(4)
		oldest, ok, err := s.OldestReady(ctx)
		if err != nil || !ok || oldest.Before(start) || oldest.After(time.Now().Add(time.Second)) {
			t.Fatalf("oldest ready %v %v %v, want between %v and now", oldest, ok, err, start)
		}
		leases := claimAll(t, s, "d", time.Minute)
		if len(leases) != 3 {
			t.Fatalf("leases: %+v", leases)
		}
		if o2, _, _ := s.OldestReady(ctx); !o2.Equal(oldest) {
			t.Fatalf("leased heads changed the oldest ready: %v, was %v", o2, oldest)
		}
		byID := map[string]Lease{}
		for _, l := range leases {
			byID[l.Note.SessionID] = l
		}
		ack(t, s, byID["o-1"], Retry, byID["o-1"].Note, time.Now().Add(time.Hour))
		depth(4)
		ack(t, s, byID["o-2"], Dead, byID["o-2"].Note, time.Time{})
		depth(3)
		ack(t, s, byID["o-0"], Delivered, byID["o-0"].Note, time.Time{})
		depth(2) // o-0's return message and o-1's /expire
		must[Note](t)(s.Replay(ctx, byID["o-2"].Note.ID))
		depth(3)
		for _, l := range claimAll(t, s, "d", time.Minute) { // o-0's return message and o-2's replay
			ack(t, s, l, Delivered, l.Note, time.Time{})
		}
		depth(1)
		if o, ok, _ := s.OldestReady(ctx); !ok || o.Before(time.Now().Add(50*time.Minute)) {
			t.Fatalf("oldest ready %v %v: want o-1's retry, an hour ahead", o, ok)
		}
		// A shard whose counter is behind (queues from before it existed)
		// never goes negative.
		p := s.shardPrefix(ShardOf("o-1"))
		if err := s.c.Do(ctx, s.c.B().Set().Key(p+"depth").Value("0").Build()).Error(); err != nil {
			t.Fatal(err)
		}
		l := claimAllAt(t, s, "d", time.Hour)
		if len(l) != 1 || l[0].Note.SessionID != "o-1" {
			t.Fatalf("leases: %+v, want o-1's retry", l)
		}
		ack(t, s, l[0], Delivered, l[0].Note, time.Time{})
		depth(0)
		if _, ok, _ := s.OldestReady(ctx); ok {
			t.Fatal("a drained outbox has an oldest head")
		}
	})
}

// claimAllAt makes every ready head due (as if ahead by ahead) and claims
// them: a retry's next attempt cannot be waited for.
func claimAllAt(t *testing.T, s *State, owner string, ahead time.Duration) []Lease {
	t.Helper()
	ctx := context.Background()
	for n := range Shards {
		p := s.shardPrefix(n)
		m := must[[]rueidis.ZScore](t)(s.c.Do(ctx, s.c.B().Zrange().Key(p+"ready").Min("0").Max("-1").Withscores().Build()).AsZScores())
		for _, z := range m {
			due := int64(z.Score) - ahead.Milliseconds()
			if err := s.c.Do(ctx, s.c.B().Zadd().Key(p+"ready").ScoreMember().ScoreMember(float64(due), z.Member).Build()).Error(); err != nil {
				t.Fatal(err)
			}
		}
	}
	return claimAll(t, s, owner, time.Minute)
}

// A head leased by A, never acked, whose lease lapsed, is a takeover when B
// leases it; A's late ack is refused. A head acked (a retry) and leased by
// another owner next is not; nor is an owner's own lapsed lease.
func TestTakeover(t *testing.T) {
	deployments(t, func(t *testing.T, s *State) {
		ctx := context.Background()
		absences(t, s, "t")
		a := leaseOf(t, s, "A", "t")
		if a.TakenOver {
			t.Fatalf("a first lease is a takeover: %+v", a)
		}
		// A's lease lapses without an ack; A itself leases again: no takeover.
		if err := s.c.Do(ctx, s.c.B().Del().Key(s.shardPrefix(a.Shard)+"lease:t").Build()).Error(); err != nil {
			t.Fatal(err)
		}
		a2 := leaseOf(t, s, "A", "t")
		if a2.TakenOver {
			t.Fatal("an owner's own lapsed lease counted as a takeover")
		}
		if err := s.c.Do(ctx, s.c.B().Pexpire().Key(s.shardPrefix(a.Shard)+"lease:t").Milliseconds(50).Build()).Error(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		b := leaseOf(t, s, "B", "t")
		if !b.TakenOver || b.Note.ID != a.Note.ID {
			t.Fatalf("B's lease of A's lapsed head: %+v", b)
		}
		if must[bool](t)(s.Ack(ctx, a2, Delivered, a2.Note, time.Time{})) {
			t.Fatal("A's late ack was applied")
		}
		ack(t, s, b, Retry, b.Note, time.Now().Add(-time.Millisecond))
		c := leaseOf(t, s, "C", "t")
		if c.TakenOver {
			t.Fatal("a head acked for a retry counted as a takeover")
		}
		ack(t, s, c, Delivered, c.Note, time.Time{})
		if n, _ := s.c.Do(ctx, s.c.B().Hlen().Key(s.shardPrefix(a.Shard)+"held").Build()).AsInt64(); n != 0 {
			t.Fatalf("held keeps %d entries with nothing leased", n)
		}
	})
}

// Fire says which deadline fired and when it was decided, by Redis's
// clock: the decision's lag.
func TestDecisionLag(t *testing.T) {
	srv := redistest.Start(t)
	s := newState(t, []string{srv.Addr})
	ctx := context.Background()
	s.Conns(ctx, "lag", "A", 1, Event{Mode: connMode})
	s.Conns(ctx, "lag", "A", 0, Event{Mode: connMode})
	v, _, _ := s.Session(ctx, "lag")
	d := settle(t, s)
	if len(d) != 1 {
		t.Fatalf("decisions: %+v", d)
	}
	lag := d[0].At.Sub(d[0].Due)
	if !d[0].Due.Equal(v.Deadline) || lag < 0 || lag > 5*time.Second {
		t.Fatalf("due %v (deadline %v), at %v: lag %v", d[0].Due, v.Deadline, d[0].At, lag)
	}
}

// Observe sees every call once, by name, with its error; a nil reply is
// not an error.
func TestObserve(t *testing.T) {
	srv := redistest.Start(t)
	type call struct {
		name string
		err  error
	}
	var mu sync.Mutex
	var calls []call
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	s := New(c, Options{Prefix: "test:", Observe: func(name string, took time.Duration, err error) {
		if took < 0 {
			t.Errorf("%s took %v", name, took)
		}
		mu.Lock()
		calls = append(calls, call{name, err})
		mu.Unlock()
	}})
	ctx := context.Background()
	s.Conns(ctx, "o", "A", 1, Event{Mode: connMode})
	s.Fire(ctx, 0, 10)
	s.Claim(ctx, 0, "d", time.Minute, 10)
	s.Ack(ctx, Lease{Shard: ShardOf("o")}, Delivered, Note{SessionID: "o"}, time.Time{})
	s.Session(ctx, "o")
	s.DeadExpire(ctx, Lease{Shard: 0, Note: Note{SessionID: "none"}}) // a nil reply
	s.Depth(ctx)
	s.Renew(ctx, "A", time.Second)
	s.Replay(ctx, "msg_none") // 64 scripts pipelined: one call
	s.Sessions(ctx, 10)       // a role, a scan, a pipelined read
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	s.Activity(cancelled, "o", Event{Mode: connMode})
	var names []string
	for _, c := range calls {
		names = append(names, c.name)
	}
	want := []string{"conns", "fire", "claim", "ack", "session", "deadep", "depth", "renew", "replay", "role", "scan", "sessions", "activity"}
	if !slices.Equal(names, want) {
		t.Fatalf("observed %v, want %v", names, want)
	}
	for _, c := range calls[:len(calls)-1] {
		if c.err != nil {
			t.Fatalf("%s observed with %v", c.name, c.err)
		}
	}
	if last := calls[len(calls)-1]; !errors.Is(last.err, context.Canceled) {
		t.Fatalf("a cancelled call observed with %v", last.err)
	}
}
