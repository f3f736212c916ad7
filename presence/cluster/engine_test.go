package cluster

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
	"github.com/presence-sidecar/presence-sidecar/internal/testutil/redistest"
	"github.com/presence-sidecar/presence-sidecar/presence"
	"github.com/presence-sidecar/presence-sidecar/presence/rules"
	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
	"github.com/redis/rueidis"
)

const (
	lease    = 600 * time.Millisecond
	interval = 300 * time.Millisecond // deadlines run on Redis's clock: the tests wait for it
)

func newState(t *testing.T, addrs []string) *redisstate.State {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return redisstate.New(c, redisstate.Options{Prefix: "test:", ForgetAfter: time.Hour})
}

// queuedNotes leases every due queue head for a minute (so each is seen
// once) and returns them.
func queuedNotes(t *testing.T, s *redisstate.State) []redisstate.Note {
	t.Helper()
	var out []redisstate.Note
	for n := range redisstate.Shards {
		l, err := s.Claim(context.Background(), n, "observer", time.Minute, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range l {
			out = append(out, x.Note)
		}
	}
	return out
}

var transfer = []byte(`{"action":"end_conversation","data":{"isTransfer":true}}`)

func bots(t *testing.T, s *redisstate.State) *presence.Bots {
	t.Helper()
	b, err := presence.NewBots(presence.Settings{Enabled: true, CheckInterval: interval, Mode: presence.ModeConnection},
		true, nil, BotStore(s), nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// replica runs an Engine as replica id over s until the test ends.
func replica(t *testing.T, s *redisstate.State, id string) *Engine {
	t.Helper()
	e, err := NewEngine(EngineOptions{
		State: s, Replica: id, Lease: lease, Sweep: 50 * time.Millisecond,
		Bots:         bots(t, s),
		Detect:       presence.Detect{Rules: true, API: true},
		HandoffStart: rules.MustParse("server:data.isTransfer=true", event.FromClient),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

// Through two engines: a handed-over client that moves from A to B inside
// the interval produces nothing; once it leaves B, one /expire is queued.
func TestEnginesShareOneTruth(t *testing.T) {
	srv := redistest.Start(t)
	s := newState(t, []string{srv.Addr})
	a, b := replica(t, s, "A"), replica(t, s, "B")
	who := event.Identity{SessionID: "s1", BotID: "bot"}

	a.ConnOpened(1, event.Open{Who: who})
	a.Message(1, event.FromServer, event.Message{Text: true, Prefix: transfer})
	a.ConnClosed(1, event.CloseClientGone)
	b.ConnOpened(7, event.Open{Who: who})
	time.Sleep(lease + 2*interval) // past the first sweeps and the interval
	if n := queuedNotes(t, s); len(n) != 0 {
		t.Fatalf("a move between replicas was notified: %+v", n)
	}
	b.ConnClosed(7, event.CloseClientGone)
	var got []redisstate.Note
	testutil.Eventually(t, 10*time.Second, "the /expire", func() bool {
		got = append(got, queuedNotes(t, s)...)
		return len(got) > 0
	})
	time.Sleep(2 * interval)
	got = append(got, queuedNotes(t, s)...)
	if len(got) != 1 || got[0].Kind != "client.offline" || got[0].SessionID != "s1" {
		t.Fatalf("notes: %+v, want one /expire", got)
	}
}

// Redis stopped while a connection opens and another closes: the relay's
// callbacks return at once, nothing is decided while Redis is away, and
// when it is back (empty: no persistence) the replica re-asserts its live
// connection, so the connected session is never decided absent.
func TestRedisAwayThenBackEmpty(t *testing.T) {
	srv := redistest.Start(t)
	s := newState(t, []string{srv.Addr})
	a := replica(t, s, "A")
	testutil.Eventually(t, 5*time.Second, "first contact", a.Healthy)
	handed := event.Identity{SessionID: "stays", BotID: "bot"}
	a.ConnOpened(1, event.Open{Who: handed})
	a.Message(1, event.FromServer, event.Message{Text: true, Prefix: transfer})
	testutil.Eventually(t, 5*time.Second, "the ledger written", func() bool { return a.ClusterStats().LedgerDirty == 0 })

	srv.Kill()
	start := time.Now()
	a.ConnOpened(2, event.Open{Who: event.Identity{SessionID: "other"}})
	a.ConnClosed(2, event.CloseClientGone)
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Fatalf("the callbacks waited %s for a dead Redis", d)
	}
	testutil.Eventually(t, 5*time.Second, "Redis seen down", func() bool { return !a.Healthy() })

	srv.Restart()
	testutil.Eventually(t, 10*time.Second, "the live connection re-asserted", func() bool {
		return a.Healthy() && a.ClusterStats().Reasserts > 0 && a.ClusterStats().LedgerDirty == 0
	})
	time.Sleep(lease + 2*interval)
	for _, n := range queuedNotes(t, s) {
		if n.SessionID == "stays" {
			t.Fatalf("a connected session was decided absent after Redis came back: %+v", n)
		}
	}
	// The rule-started hand-over was re-asserted with the connection: its
	// leaving is still reported.
	if st, ok, err := s.Session(context.Background(), "stays"); err != nil || !ok || !st.HandedOver {
		t.Fatalf("after the wipe: %+v %v %v, want the session handed over again", st, ok, err)
	}
	a.ConnClosed(1, event.CloseClientGone)
	testutil.Eventually(t, 10*time.Second, "the /expire of the re-asserted hand-over", func() bool {
		for _, n := range queuedNotes(t, s) {
			if n.SessionID == "stays" && n.Kind == "client.offline" {
				return true
			}
		}
		return false
	})
}

// commands is how many commands Redis has processed so far.
func commands(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	info, err := srv.Do("INFO", "stats")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_commands_processed:"); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatalf("no total_commands_processed in %q", info)
	return 0
}

// An idle connection costs no Redis operation in steady state: the replica
// refreshes one lease for all of them, so 2,000 idle connections make the
// same traffic as none (docs/ARCHITECTURE.md, "Cluster mode").
func TestIdleConnectionsCostNoRedisTraffic(t *testing.T) {
	srv := redistest.Start(t)
	s := newState(t, []string{srv.Addr})
	a := replica(t, s, "A")
	testutil.Eventually(t, 5*time.Second, "first contact", a.Healthy)
	time.Sleep(lease) // sweeping starts a lease after first contact
	idle := func() int {
		time.Sleep(300 * time.Millisecond) // let the writer settle
		before := commands(t, srv)
		time.Sleep(2 * time.Second)
		return commands(t, srv) - before
	}
	none := idle()
	for i := range 2000 {
		a.ConnOpened(event.ConnID(100+i), event.Open{Who: event.Identity{SessionID: "idle-" + strconv.Itoa(i)}})
	}
	testutil.Eventually(t, 10*time.Second, "the connections written", func() bool { return a.ClusterStats().LedgerDirty == 0 })
	many := idle()
	t.Logf("Redis commands in 2 s: %d with no connection, %d with 2,000 idle ones", none, many)
	// The background rounds (renewal, sweeps) vary a little with timing;
	// one operation per connection would add 2,000.
	if many > none+none/20+20 {
		t.Fatalf("2,000 idle connections made %d commands in 2 s, against %d with none", many, none)
	}
}

// Replicas share the shards' sweeps (shards.go): three idle replicas cost
// Redis well under three times what one does.
func TestSweepsSharedAmongReplicas(t *testing.T) {
	srv := redistest.Start(t)
	s := newState(t, []string{srv.Addr})
	a := replica(t, s, "A")
	testutil.Eventually(t, 5*time.Second, "first contact", a.Healthy)
	time.Sleep(lease)
	window := func() int {
		before := commands(t, srv)
		time.Sleep(2 * time.Second)
		return commands(t, srv) - before
	}
	one := window()
	b, c := replica(t, s, "B"), replica(t, s, "C")
	testutil.Eventually(t, 5*time.Second, "the others' first contact", func() bool { return b.Healthy() && c.Healthy() })
	time.Sleep(2 * lease) // their first sweeps wait a lease; shares follow the next renewals
	three := window()
	t.Logf("Redis commands in 2 s: %d with one idle replica, %d with three", one, three)
	if three > one*18/10 {
		t.Fatalf("three replicas made %d commands, one made %d: the sweeps are not shared", three, one)
	}
}
