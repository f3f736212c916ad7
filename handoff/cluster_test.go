package handoff

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
	"github.com/presence-sidecar/presence-sidecar/internal/testutil/redistest"
	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
)

// clusterInterval is the sessions' interval: deadlines are decided by
// Redis's clock, which no test can move, so the tests wait for it.
const clusterInterval = 300 * time.Millisecond

// clusterDeployments runs fn against a single redis-server and a 3-master
// Redis Cluster, as store/redisstate's tests do.
func clusterDeployments(t *testing.T, fn func(t *testing.T, st *redisstate.State)) {
	t.Run("single", func(t *testing.T) {
		srv := redistest.Start(t)
		fn(t, newClusterState(t, []string{srv.Addr}))
	})
	t.Run("cluster", func(t *testing.T) {
		c := redistest.StartCluster(t, 3)
		fn(t, newClusterState(t, c.Addrs()))
	})
}

func newClusterState(t testing.TB, addrs []string) *redisstate.State {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return redisstate.New(c, redisstate.Options{Prefix: "test:", ForgetAfter: time.Hour})
}

// queueEpisodes makes each session absent and back, as replicas report it,
// so that its /expire and then its return message are queued.
func queueEpisodes(t *testing.T, st *redisstate.State, sids ...string) {
	t.Helper()
	ctx := context.Background()
	ev := redisstate.Event{Bot: "bot-1", Mode: redisstate.Mode{Interval: clusterInterval}, HandedOver: true, ReturnText: "voltou"}
	conns := func(count int) {
		for _, sid := range sids {
			if _, _, err := st.Conns(ctx, sid, "A", count, ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	conns(1)
	conns(0)
	decided := 0
	testutil.Eventually(t, 10*time.Second, "the absences to be decided", func() bool {
		for n := range redisstate.Shards {
			d, err := st.Fire(ctx, n, 100)
			if err != nil {
				t.Fatalf("Fire shard %d: %v", n, err)
			}
			decided += len(d)
		}
		return decided == len(sids)
	})
	conns(1)
}

// queueAbsence queues only an /expire for each session.
func queueAbsence(t *testing.T, st *redisstate.State, sids ...string) {
	t.Helper()
	ctx := context.Background()
	ev := redisstate.Event{Bot: "bot-1", Mode: redisstate.Mode{Interval: clusterInterval}, HandedOver: true}
	for _, sid := range sids {
		st.Conns(ctx, sid, "A", 1, ev)
		st.Conns(ctx, sid, "A", 0, ev)
	}
	decided := 0
	testutil.Eventually(t, 10*time.Second, "the absences to be decided", func() bool {
		for n := range redisstate.Shards {
			d, _ := st.Fire(ctx, n, 100)
			decided += len(d)
		}
		return decided == len(sids)
	})
}

// runCluster starts a ClusterDeliverer; stop ends it and waits for Run to
// return (also at cleanup).
func runCluster(t *testing.T, o Options, st *redisstate.State, owner string) (c *ClusterDeliverer, stop func()) {
	t.Helper()
	c, err := NewCluster(o, st, owner, 0)
	if err != nil {
		t.Fatal(err)
	}
	return c, startCluster(t, c)
}

func startCluster(t *testing.T, c *ClusterDeliverer) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}
	t.Cleanup(stop)
	return stop
}

func clusterOptions(url string, obs *outcomes) Options {
	o := baseOptions(nil, url, obs)
	o.SigningSecret = testSecret
	return o
}

// sessionOf reads the session id of a received webhook's body.
func sessionOf(t *testing.T, r received) string {
	var b struct {
		Event     string `json:"event"`
		SessionID string `json:"sessionId"`
	}
	if err := json.Unmarshal(r.Body, &b); err != nil {
		t.Fatalf("body %q: %v", r.Body, err)
	}
	return b.SessionID
}

// leftQueued claims whatever is still due, to show that nothing is.
func leftQueued(t *testing.T, st *redisstate.State) int {
	t.Helper()
	n := 0
	for shard := range redisstate.Shards {
		l, err := st.Claim(context.Background(), shard, "checker", time.Minute, 100)
		if err != nil {
			t.Fatal(err)
		}
		n += len(l)
	}
	return n
}

// checkOnceInOrder checks that every session's /expire and return message
// arrived exactly once each, the /expire first, signed as the embedded
// deliverer signs.
func checkOnceInOrder(t *testing.T, p *platform, sids []string) {
	t.Helper()
	reqs := p.requests()
	perID := map[string]int{}
	order := map[string][]string{}
	for _, r := range reqs {
		perID[r.ID()]++
		if err := verifyStandardWebhook(testSecret, r.Header, r.Body, time.Now()); err != nil {
			t.Errorf("%s: %v", r.ID(), err)
		}
		order[sessionOf(t, r)] = append(order[sessionOf(t, r)], r.Path)
	}
	for id, n := range perID {
		if n != 1 {
			t.Errorf("webhook-id %s received %d times", id, n)
		}
	}
	for _, sid := range sids {
		if got := order[sid]; len(got) != 2 || got[0] != DefaultExpirePath || got[1] != DefaultMessagePath {
			t.Errorf("session %s: received %v, want the /expire then the return message", sid, got)
		}
	}
	if len(reqs) != 2*len(sids) {
		t.Errorf("received %d webhooks, want %d", len(reqs), 2*len(sids))
	}
}

func sessionIDs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// Notifications queued by the cluster's scripts are delivered once each, in
// order per session, signed, with the derived webhook-ids.
func TestClusterDeliversOnceInOrder(t *testing.T) {
	clusterDeployments(t, func(t *testing.T, st *redisstate.State) {
		p := newPlatform(t, nil)
		o := clusterOptions(p.URL, nil)
		o.Concurrency = 4
		c, _ := runCluster(t, o, st, "replica-1")
		sids := sessionIDs("s", 20)
		queueEpisodes(t, st, sids...)
		c.Wake()
		testutil.Eventually(t, 20*time.Second, "every notification to arrive", func() bool { return p.count() >= 2*len(sids) })
		checkOnceInOrder(t, p, sids)
		for _, r := range p.requests() {
			if !strings.HasPrefix(r.ID(), "msg_") || r.Header.Get("User-Agent") != DefaultUserAgent {
				t.Fatalf("headers: %v", r.Header)
			}
		}
		if n := leftQueued(t, st); n != 0 {
			t.Fatalf("%d notifications still queued", n)
		}
	})
}

// Two deliverers sharing the outbox deliver each notification once, and
// each session's in order.
func TestClusterTwoDeliverersShareTheOutbox(t *testing.T) {
	clusterDeployments(t, func(t *testing.T, st *redisstate.State) {
		p := newPlatform(t, nil)
		var obsA, obsB outcomes
		oa, ob := clusterOptions(p.URL, &obsA), clusterOptions(p.URL, &obsB)
		oa.Concurrency, ob.Concurrency = 3, 3
		runCluster(t, oa, st, "replica-a")
		runCluster(t, ob, st, "replica-b")
		sids := sessionIDs("two", 30)
		queueEpisodes(t, st, sids...)
		testutil.Eventually(t, 20*time.Second, "every notification to arrive", func() bool { return p.count() >= 2*len(sids) })
		time.Sleep(300 * time.Millisecond) // a duplicate would show up here
		checkOnceInOrder(t, p, sids)
		if got := obsA.count(Delivered) + obsB.count(Delivered); got != 2*len(sids) {
			t.Fatalf("delivered outcomes: %d, want %d", got, 2*len(sids))
		}
		t.Logf("delivered by a: %d, by b: %d", obsA.count(Delivered), obsB.count(Delivered))
	})
}

// A deliverer stopped mid-attempt whose lease lapses (here the lease is
// shortened to stand for a pause longer than it: NewCluster refuses such a
// lease) leaves its head to another deliverer, which delivers it with the
// same webhook-id; the first's late acknowledgement is refused and changes
// nothing.
func TestClusterTakeoverAfterTheLease(t *testing.T) {
	clusterDeployments(t, func(t *testing.T, st *redisstate.State) {
		release := make(chan struct{})
		defer close(release)
		p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, _ received, i int) {
			if i == 0 { // the first replica's attempt hangs
				select {
				case <-r.Context().Done():
				case <-release:
				}
				return
			}
			w.WriteHeader(http.StatusNoContent)
		})
		core, logs := observer.New(zapcore.DebugLevel)
		oa := clusterOptions(p.URL, nil)
		oa.Timeout, oa.Log = time.Second, zap.New(core)
		a, err := NewCluster(oa, st, "replica-a", 0)
		if err != nil {
			t.Fatal(err)
		}
		a.lease = 300 * time.Millisecond
		stopA := startCluster(t, a)
		queueAbsence(t, st, "taken")
		testutil.Eventually(t, 10*time.Second, "the first attempt to start", func() bool { return p.count() == 1 })
		stopped := make(chan struct{})
		go func() { stopA(); close(stopped) }() // cancelled mid-attempt: Run waits for it

		var obsB outcomes
		runCluster(t, clusterOptions(p.URL, &obsB), st, "replica-b")
		testutil.Eventually(t, 10*time.Second, "the survivor's delivery", func() bool { return obsB.count(Delivered) == 1 })
		<-stopped
		reqs := p.requests()
		if len(reqs) != 2 || reqs[0].ID() != reqs[1].ID() {
			t.Fatalf("requests: %d, ids %v, want the same webhook-id twice", len(reqs), ids(reqs))
		}
		if n := logs.FilterMessageSnippet("lease lost").FilterField(zap.String("webhook_id", reqs[0].ID())).Len(); n != 1 {
			t.Fatalf("the first deliverer's late acknowledgement: %d refusals logged, want 1", n)
		}
		if n := leftQueued(t, st); n != 0 {
			t.Fatalf("%d notifications still queued: the late acknowledgement changed something", n)
		}
	})
}

// A 503 is retried after its Retry-After and delivered with the same
// webhook-id, the attempts counted in Redis; a 422 dead-letters the /expire,
// and its episode's return message follows it unsent.
func TestClusterRetryAndDeadLetter(t *testing.T) {
	clusterDeployments(t, func(t *testing.T, st *redisstate.State) {
		var flakyCalls atomic.Int32
		p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
			switch sessionOf(t, got) {
			case "flaky":
				if flakyCalls.Add(1) == 1 {
					w.Header().Set("Retry-After", "1")
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
			case "refused":
				w.WriteHeader(http.StatusUnprocessableEntity)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		})
		var obs outcomes
		queueAbsence(t, st, "flaky")
		queueEpisodes(t, st, "refused")
		runCluster(t, clusterOptions(p.URL, &obs), st, "replica-1")
		testutil.Eventually(t, 20*time.Second, "the retry's delivery and both dead letters", func() bool {
			return obs.count(Delivered) == 1 && obs.count(Dead) == 2
		})
		byID := map[string][]Outcome{}
		for _, o := range obs.list() {
			byID[o.ID] = append(byID[o.ID], o)
		}
		var flaky, expire, back []Outcome
		for _, os := range byID {
			switch {
			case os[0].SessionID == "flaky":
				flaky = os
			case os[0].Kind == "client.offline":
				expire = os
			default:
				back = os
			}
		}
		if len(flaky) != 2 || flaky[0].Result != Retry || flaky[0].Status != 503 || flaky[0].Delay != time.Second ||
			flaky[1].Result != Delivered || flaky[1].Attempts != 2 {
			t.Fatalf("the 503 then 200: %+v", flaky)
		}
		fr := filterSession(t, p.requests(), "flaky")
		if len(fr) != 2 || fr[0].ID() != fr[1].ID() || fr[1].At.Sub(fr[0].At) < 900*time.Millisecond {
			t.Fatalf("the retried requests: ids %v, %v apart, want the same id after Retry-After", ids(fr), fr[1].At.Sub(fr[0].At))
		}
		if len(expire) != 1 || expire[0].Result != Dead || expire[0].Status != 422 {
			t.Fatalf("the 422: %+v", expire)
		}
		want := "its client.offline " + expire[0].ID + " was dead-lettered"
		if len(back) != 1 || back[0].Result != Dead || back[0].Status != 0 || !strings.Contains(back[0].Error, want) {
			t.Fatalf("the return message of the dead episode: %+v, want dead with %q", back, want)
		}
		if rr := filterSession(t, p.requests(), "refused"); len(rr) != 1 {
			t.Fatalf("the refused session's requests: %d, want the /expire alone", len(rr))
		}
		if n := leftQueued(t, st); n != 0 {
			t.Fatalf("%d notifications still queued", n)
		}
	})
}

func filterSession(t *testing.T, rs []received, sid string) []received {
	var out []received
	for _, r := range rs {
		if sessionOf(t, r) == sid {
			out = append(out, r)
		}
	}
	return out
}

func ids(rs []received) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID()
	}
	return out
}

// A lease that an attempt could outlast is refused; zero takes Timeout plus
// the slack.
func TestNewClusterLease(t *testing.T) {
	st := redisstate.New(nil, redisstate.Options{})
	o := Options{URL: "http://platform", Timeout: 2 * time.Second}
	if _, err := NewCluster(o, st, "r", 6*time.Second); err == nil || !strings.Contains(err.Error(), "lease") {
		t.Fatalf("a lease shorter than Timeout + slack: %v", err)
	}
	c, err := NewCluster(o, st, "r", 0)
	if err != nil || c.lease != 2*time.Second+ClusterLeaseSlack {
		t.Fatalf("default lease: %v %v", c, err)
	}
	if _, err := NewCluster(o, st, "", 0); err == nil {
		t.Fatal("no owner accepted")
	}
}

// A dead letter replayed through the cluster deliverer goes out again with
// its webhook-id, and its retry horizon restarts at the replay: an /expire
// older than RetryFor that fails again is retried, not dead-lettered at once.
func TestClusterReplayRestartsTheHorizon(t *testing.T) {
	clusterDeployments(t, func(t *testing.T, st *redisstate.State) {
		var answer atomic.Int32
		answer.Store(http.StatusUnprocessableEntity)
		p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
			w.WriteHeader(int(answer.Load()))
		})
		var obs outcomes
		o := clusterOptions(p.URL, &obs)
		o.RetryFor = 500 * time.Millisecond
		queueAbsence(t, st, "replayed")
		c, _ := runCluster(t, o, st, "replica-1")
		testutil.Eventually(t, 10*time.Second, "the dead letter", func() bool { return obs.count(Dead) == 1 })
		dead, err := c.DeadLetters()
		if err != nil || len(dead) != 1 {
			t.Fatalf("dead letters: %+v %v", dead, err)
		}
		time.Sleep(o.RetryFor) // the notification is now older than the horizon
		answer.Store(http.StatusServiceUnavailable)
		n, err := c.Replay(dead[0].ID)
		if err != nil || n.ID != dead[0].ID || n.ReplayedAt.IsZero() {
			t.Fatalf("replay: %+v %v", n, err)
		}
		testutil.Eventually(t, 10*time.Second, "a retry of the replayed /expire", func() bool { return obs.count(Retry) >= 1 })
		answer.Store(http.StatusNoContent)
		testutil.Eventually(t, 20*time.Second, "its delivery", func() bool { return obs.count(Delivered) == 1 })
		if obs.count(Dead) != 1 {
			t.Fatalf("dead-lettered again: %+v", obs.list())
		}
		for _, r := range p.requests() {
			if r.ID() != dead[0].ID {
				t.Fatalf("a request with webhook-id %s, want %s throughout", r.ID(), dead[0].ID)
			}
		}
		if _, err := c.Replay("msg_nope"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("replay of an unknown id: %v", err)
		}
	})
}

// A burst across every shard is drained at the rate attempts finish: a slot
// that frees up claims from any shard still holding due heads, not only
// from the one that just finished, and not at the next round. Before, each
// 200 ms round drained about one shard (here 64 rounds: over 12 s); the
// bound leaves room for a loaded machine and the race detector.
func TestClusterBurstDoesNotWaitForRounds(t *testing.T) {
	clusterDeployments(t, func(t *testing.T, st *redisstate.State) {
		p := newPlatform(t, nil)
		o := clusterOptions(p.URL, nil)
		o.Concurrency = 4
		sids := sessionIDs("burst", 320)
		queueAbsence(t, st, sids...)
		start := time.Now()
		runCluster(t, o, st, "replica-1")
		testutil.Eventually(t, 30*time.Second, "every /expire to arrive", func() bool { return p.count() >= len(sids) })
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("%d notifications across the shards took %s with Concurrency %d, want well under 5 s", len(sids), took, o.Concurrency)
		} else {
			t.Logf("%d notifications in %s", len(sids), took)
		}
		time.Sleep(100 * time.Millisecond) // a duplicate would show up here
		perID := map[string]int{}
		for _, r := range p.requests() {
			perID[r.ID()]++
		}
		if len(perID) != len(sids) || p.count() != len(sids) {
			t.Fatalf("received %d webhooks with %d ids, want %d once each", p.count(), len(perID), len(sids))
		}
		if n := leftQueued(t, st); n != 0 {
			t.Fatalf("%d notifications still queued", n)
		}
	})
}
