package e2e

// "Redis trouble never breaks the data plane", with the real binary: two
// replicas sharing one Redis (clusterEnv: REDIS_LEASE_TTL=2s,
// PRESENCE_CHECK_INTERVAL=1s, HANDOFF_DETECT=always, so that every session
// is handed over and every absence is an /expire) while Redis is killed,
// restarted with its data, restarted empty, and failed over by Sentinel
// (docs/ARCHITECTURE.md, "Cluster mode").
//
// The upstream is faultUpstream (faults_test.go): it answers link and
// echoes anything else, so peer.echo shows a message relayed both ways
// through a replica.

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
	"github.com/presence-sidecar/presence-sidecar/internal/testutil/redistest"
)

// The clusterEnv timings these tests reason with.
const (
	roInterval = time.Second     // PRESENCE_CHECK_INTERVAL
	roLease    = 2 * time.Second // REDIS_LEASE_TTL: sweeping resumes one lease after Redis is back
	// roSettle is an interval, a lease and slack: once Redis is back, any
	// decision owed has been made (and delivered) within it, and a false
	// one would have shown.
	roSettle = roInterval + roLease + 2*time.Second
)

// roPersistent is a redis-server that keeps every acknowledged write across
// a SIGKILL (appendfsync always) in its own directory.
var roPersistent = []string{"--appendonly", "yes", "--appendfsync", "always"}

// roReplicas starts two replicas over redisURL, behind one echoing upstream
// and one platform, and waits until both have reached Redis.
func roReplicas(t *testing.T, redisURL string) (pl *platform, a, b *sidecar) {
	t.Helper()
	_, upURL := newFaultUpstream(t)
	pl = newPlatform(t)
	a = start(t, clusterEnv(upURL, pl.url(), redisURL))
	b = start(t, clusterEnv(upURL, pl.url(), redisURL))
	roWaitRedis(t, true, a, b)
	return pl, a, b
}

// roWaitRedis waits until every replica's /readyz and /metrics agree that
// Redis is up (want) or away: /readyz answers 200 either way (the data
// plane is unaffected), degraded with the reason while Redis is away, and
// redis_up is 1 or 0. (/readyz is polled: while Redis is away a /metrics
// scrape takes seconds, see TestClusterRedisKilledDataPlaneKeepsFlowing.)
func roWaitRedis(t *testing.T, want bool, scs ...*sidecar) {
	t.Helper()
	for _, sc := range scs {
		var code int
		var body string
		testutil.Eventually(t, 15*time.Second, fmt.Sprintf("/readyz and redis_up on %s with Redis up=%v", sc.admin, want), func() bool {
			code, body = readyz(t, sc)
			if code != http.StatusOK || (body == "ready") != want {
				return code != http.StatusOK
			}
			// Right after Redis is back a call begun during the outage may
			// still fail and mark Redis away again for a moment.
			return !want || metric(t, sc, "presence_sidecar_redis_up") == 1
		})
		switch {
		case code != http.StatusOK:
			t.Fatalf("/readyz on %s: %d %q, want 200 whatever Redis does", sc.admin, code, body)
		case !want && (!strings.HasPrefix(body, "ready, presence degraded: ") || !strings.Contains(body, "Redis")):
			t.Fatalf("/readyz on %s with Redis away: %q, want ready, presence degraded: Redis: …", sc.admin, body)
		}
		if !want {
			if up := metric(t, sc, "presence_sidecar_redis_up"); up != 0 {
				t.Fatalf("presence_sidecar_redis_up on %s is %v while /readyz says %q", sc.admin, up, body)
			}
		}
	}
}

// roWaitConns waits until the cluster's view (through sc's admin API, from
// Redis) counts n connections of session sid.
func roWaitConns(t *testing.T, sc *sidecar, sid string, n int) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, fmt.Sprintf("%d connections of %s in Redis", n, sid), func() bool {
		v, ok := getSession(t, sc, sid)
		return ok && v.Connections == n
	})
}

// roHooks are the accepted requests of event ev for session sid so far.
func roHooks(pl *platform, sid, ev string) []hook {
	var out []hook
	for _, h := range pl.all() {
		if h.session() == sid && h.event() == ev {
			out = append(out, h)
		}
	}
	return out
}

// roDistinctIDs is the number of distinct webhook-ids among hs.
func roDistinctIDs(hs []hook) int {
	ids := map[string]bool{}
	for _, h := range hs {
		ids[h.id()] = true
	}
	return len(ids)
}

// roWaitOffline waits for the first client.offline of sid and returns it.
func roWaitOffline(t *testing.T, pl *platform, sid string, within time.Duration) hook {
	t.Helper()
	var got []hook
	testutil.Eventually(t, within, "client.offline for "+sid, func() bool {
		got = roHooks(pl, sid, "client.offline")
		return len(got) > 0
	})
	return got[0]
}

// roExpect checks how many notifications of each kind every session got:
// want maps a session to its count of client.offline and client.online.
// A delivery retried (same webhook-id) counts once.
func roExpect(t *testing.T, pl *platform, want map[string][2]int) {
	t.Helper()
	for sid, n := range want {
		off, on := roHooks(pl, sid, "client.offline"), roHooks(pl, sid, "client.online")
		if roDistinctIDs(off) != n[0] || roDistinctIDs(on) != n[1] {
			t.Errorf("session %s: %d client.offline (%d ids), %d client.online (%d ids); want %d and %d",
				sid, len(off), roDistinctIDs(off), len(on), roDistinctIDs(on), n[0], n[1])
		}
	}
	if t.Failed() {
		for _, h := range pl.all() {
			t.Logf("webhook %s %s %s id=%s at %s", h.Path, h.event(), h.session(), h.id(), h.At.Format("15:04:05.000"))
		}
		t.FailNow()
	}
}

// roConnects opens n WebSockets to sc, each a session of its own (named in
// the query, so the presence engine sees it at the handshake, on the data
// path), and returns how long each handshake took. The sockets stay open
// (their pings answered) until the test ends, so they give no /expire.
func roConnects(t *testing.T, sc *sidecar, prefix string, n int) []time.Duration {
	t.Helper()
	out := make([]time.Duration, 0, n)
	for i := range n {
		url := fmt.Sprintf("ws://%s/ws?sessionId=%s-%d&botId=bot-lat", sc.addr, prefix, i)
		t0 := time.Now()
		c, _, err := websocket.DefaultDialer.Dial(url, nil)
		took := time.Since(t0)
		if err != nil {
			t.Fatalf("connect %d (%s): %v", i, prefix, err)
		}
		out = append(out, took)
		t.Cleanup(func() { c.Close() })
		go func() {
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
	}
	return out
}

// roFailedCalls sums sc's Redis calls that failed, over every script
// (presence_sidecar_redis_call_duration_seconds_count{outcome="error"}).
func roFailedCalls(t *testing.T, sc *sidecar) float64 {
	t.Helper()
	sum := 0.0
	for _, line := range metricLines(t, sc) {
		if strings.HasPrefix(line, "presence_sidecar_redis_call_duration_seconds_count{") && strings.Contains(line, `outcome="error"`) {
			if i := strings.LastIndexByte(line, ' '); i > 0 {
				v, _ := strconv.ParseFloat(line[i+1:], 64)
				sum += v
			}
		}
	}
	return sum
}

// roQuantile is the nearest-rank q-quantile of ds.
func roQuantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// TestClusterRedisKilledDataPlaneKeepsFlowing: Redis is killed (SIGKILL)
// for longer than a lease plus an interval. Meanwhile both replicas keep
// relaying — existing sockets both ways, new ones open and echo, with no
// added connect latency — /readyz answers 200 "presence degraded" naming
// Redis, redis_up is 0, and no webhook is sent, not even for a client that
// closed during the outage (decisions pause). Once Redis is back (with its
// data: appendfsync always), the ledgers' replay decides what happened: the
// client that closed and stayed away gets exactly one /expire, after Redis
// came back; those that closed and came back during the outage, on the
// same replica or the other, get nothing; nobody connected gets anything.
func TestClusterRedisKilledDataPlaneKeepsFlowing(t *testing.T) {
	rs := redistest.Start(t, roPersistent...)
	pl, a, b := roReplicas(t, "redis://"+rs.Addr)

	stayA, _ := dialPeer(t, a.addr, "o1-stay-a")
	stayB, _ := dialPeer(t, b.addr, "o1-stay-b")
	_, goneC := dialPeer(t, b.addr, "o1-gone")          // closes during the outage, stays away
	_, goneAC := dialPeer(t, a.addr, "o1-gone-a")       // the same on a
	_, backC := dialPeer(t, a.addr, "o1-back-other")    // closes, comes back on b, during the outage
	_, backSameC := dialPeer(t, a.addr, "o1-back-same") // closes, comes back on a, during the outage
	for _, sid := range []string{"o1-stay-a", "o1-stay-b", "o1-gone", "o1-gone-a", "o1-back-other", "o1-back-same"} {
		roWaitConns(t, a, sid, 1)
	}
	stayA.echo(t, "before-a")
	stayB.echo(t, "before-b")

	before := roConnects(t, a, "o1-lat-before", 100)

	rs.Kill()
	killedAt := time.Now()
	roWaitRedis(t, false, a, b)
	t.Logf("both replicas saw Redis away %v after the kill", time.Since(killedAt).Round(time.Millisecond))

	// The data plane, Redis away: existing sockets flow both ways, new
	// ones open and echo on either replica.
	stayA.echo(t, "during-a")
	stayB.echo(t, "during-b")
	newA, _ := dialPeer(t, a.addr, "o1-new-a")
	newA.echo(t, "new-a")
	newB, _ := dialPeer(t, b.addr, "o1-new-b")
	newB.echo(t, "new-b")
	failedBefore, duringStart := roFailedCalls(t, a), time.Now()
	during := roConnects(t, a, "o1-lat-during", 100)
	duringTook := time.Since(duringStart)
	scrapeStart := time.Now()
	failedDuring := roFailedCalls(t, a) - failedBefore
	t.Logf("replica a: %v Redis calls failed during the %v of the 100 connects with Redis away; one /metrics scrape took %v",
		failedDuring, duringTook.Round(time.Millisecond), time.Since(scrapeStart).Round(time.Millisecond))
	// Connect latency, Redis up vs away: the proxy's callbacks only write
	// the ledger, so a connect never waits for Redis. A connect that did
	// would wait for a dead Redis's dial or redisstate.CallTimeout (2 s);
	// the bound catches that, not the noise of a race-built binary on a
	// shared 2-core box. How much an outage adds (the goal: under
	// 1 ms at p99) is measured by bench/clusterproxy, not by a test.
	bMed, bP99 := roQuantile(before, 0.5), roQuantile(before, 0.99)
	dMed, dP99 := roQuantile(during, 0.5), roQuantile(during, 0.99)
	t.Logf("connect through a replica (%d each): Redis up median %v p99 %v; Redis away median %v p99 %v",
		len(before), bMed, bP99, dMed, dP99)
	if dMax := roQuantile(during, 1); dMax > 250*time.Millisecond {
		t.Errorf("a connect with Redis away took %v (p99 %v; with Redis up %v): the relay waited for Redis", dMax, dP99, bP99)
	}

	closeClean(goneC)
	closeClean(goneAC)
	closeClean(backC)
	closeClean(backSameC)
	time.Sleep(200 * time.Millisecond) // well inside the interval
	backOther, _ := dialPeer(t, b.addr, "o1-back-other")
	backSame, _ := dialPeer(t, a.addr, "o1-back-same")
	backOther.echo(t, "back-other")
	backSame.echo(t, "back-same")

	// Hold the outage past a lease and an interval after the closes: had
	// anything been decided from missing data, it would show now.
	pl.quiet(t, roSettle)
	if got := pl.all(); len(got) != 0 {
		t.Fatalf("%d webhooks before Redis came back, want none; first %s for %s", len(got), got[0].event(), got[0].session())
	}
	stayA.echo(t, "late-a")

	rs.Restart()
	backAt := time.Now()
	t.Logf("Redis away for %v", backAt.Sub(killedAt).Round(time.Millisecond))
	roWaitRedis(t, true, a, b)

	for _, sid := range []string{"o1-gone", "o1-gone-a"} {
		h := roWaitOffline(t, pl, sid, roSettle+5*time.Second)
		if h.At.Before(backAt) {
			t.Fatalf("/expire of %s at %s, before Redis came back at %s", sid, h.At, backAt)
		}
		if h.Path != "/expire" || h.Body["reason"] != "disconnected" {
			t.Fatalf("%s: %s %s", sid, h.Path, h.Raw)
		}
		// lastSeenAt is when the interval started: the close's replay, or
		// the lapse of the replica's lease if a survivor reaped it first;
		// either lies after the kill less a lease, never at a zero time.
		seen, err := time.Parse(time.RFC3339Nano, fmt.Sprint(h.Body["lastSeenAt"]))
		if err != nil || seen.Before(killedAt.Add(-roLease)) || seen.After(h.At) {
			t.Errorf("%s's /expire says lastSeenAt %v (%v); Redis was killed at %s, the /expire came at %s",
				sid, h.Body["lastSeenAt"], err, killedAt.Format(time.RFC3339Nano), h.At.Format(time.RFC3339Nano))
		}
		t.Logf("%s: /expire %v after Redis came back (lastSeenAt %v)", sid, h.At.Sub(backAt).Round(time.Millisecond), h.Body["lastSeenAt"])
	}
	time.Sleep(roSettle)
	want := map[string][2]int{"o1-gone": {1, 0}, "o1-gone-a": {1, 0}}
	for _, sid := range []string{"o1-stay-a", "o1-stay-b", "o1-back-other", "o1-back-same", "o1-new-a", "o1-new-b"} {
		want[sid] = [2]int{0, 0}
	}
	roExpect(t, pl, want)
	if n := len(pl.all()); n != 2 {
		t.Fatalf("%d webhooks in all, want only o1-gone's and o1-gone-a's", n)
	}
	stayA.echo(t, "after-a")
	backOther.echo(t, "after-back-other")
}

// TestClusterRedisRestartedWithDataNoLostNoDuplicate: Redis is stopped and
// restarted with its data (AOF, appendfsync always) for longer than a
// lease. Sessions decided absent before stay decided once (no second
// /expire; their return still brings one return message, so their state
// survived); connected sessions stay present (no false /expire, though
// every lease lapsed meanwhile); a session whose deadline fell while Redis
// was down is decided once it is back; redis_up is 1 and /readyz "ready".
func TestClusterRedisRestartedWithDataNoLostNoDuplicate(t *testing.T) {
	rs := redistest.Start(t, roPersistent...)
	pl, a, b := roReplicas(t, "redis://"+rs.Addr)

	_, absA := dialPeer(t, a.addr, "o2-absent-a")
	_, absB := dialPeer(t, b.addr, "o2-absent-b")
	presA, presAC := dialPeer(t, a.addr, "o2-present-a")
	presB, _ := dialPeer(t, b.addr, "o2-present-b")
	_, pendC := dialPeer(t, b.addr, "o2-pending")
	for _, sid := range []string{"o2-absent-a", "o2-absent-b", "o2-present-a", "o2-present-b", "o2-pending"} {
		roWaitConns(t, a, sid, 1)
	}
	closeClean(absA)
	closeClean(absB)
	roWaitOffline(t, pl, "o2-absent-a", roSettle+5*time.Second)
	roWaitOffline(t, pl, "o2-absent-b", roSettle+5*time.Second)

	// o2-pending closes; once Redis holds its deadline (an interval away),
	// Redis stops: the deadline falls while it is down.
	closeClean(pendC)
	roWaitConns(t, a, "o2-pending", 0)
	if v, _ := getSession(t, a, "o2-pending"); v.State != "present" {
		t.Fatalf("o2-pending is %q before the stop, want present (its deadline pending)", v.State)
	}
	rs.Stop()
	stoppedAt := time.Now()
	roWaitRedis(t, false, a, b)
	presA.echo(t, "down-a")
	presB.echo(t, "down-b")
	time.Sleep(roLease + roInterval - time.Since(stoppedAt)) // every lease lapses
	rs.Restart()
	backAt := time.Now()
	t.Logf("Redis down for %v", backAt.Sub(stoppedAt).Round(time.Millisecond))
	roWaitRedis(t, true, a, b)

	h := roWaitOffline(t, pl, "o2-pending", roSettle+5*time.Second)
	t.Logf("o2-pending: /expire %v after Redis came back", h.At.Sub(backAt).Round(time.Millisecond))
	time.Sleep(roSettle)
	roExpect(t, pl, map[string][2]int{
		"o2-absent-a": {1, 0}, "o2-absent-b": {1, 0}, "o2-pending": {1, 0},
		"o2-present-a": {0, 0}, "o2-present-b": {0, 0},
	})
	for _, sid := range []string{"o2-present-a", "o2-present-b"} {
		if v, ok := getSession(t, b, sid); !ok || v.State != "present" || v.Connections != 1 || !v.HandedOver {
			t.Fatalf("%s after the restart: %+v (found %v), want present, 1 connection, handed over", sid, v, ok)
		}
	}

	// Decisions go on from the state Redis kept: a connected session that
	// leaves gets one /expire; an absent one that returns (on the other
	// replica) gets one return message.
	closeClean(presAC)
	back, _ := dialPeer(t, b.addr, "o2-absent-a")
	back.echo(t, "back")
	roWaitOffline(t, pl, "o2-present-a", roSettle+5*time.Second)
	testutil.Eventually(t, 10*time.Second, "the return message of o2-absent-a", func() bool {
		return len(roHooks(pl, "o2-absent-a", "client.online")) > 0
	})
	time.Sleep(roSettle)
	roExpect(t, pl, map[string][2]int{
		"o2-absent-a": {1, 1}, "o2-absent-b": {1, 0}, "o2-pending": {1, 0},
		"o2-present-a": {1, 0}, "o2-present-b": {0, 0},
	})
}

// TestClusterRedisRestartedEmptyReasserts: Redis is killed and comes back
// empty (no persistence). Each replica's renewal finds its lease missing
// and re-asserts its live connections: connected clients get no false
// /expire, and one that leaves afterwards gets exactly one.
//
// Not recovered from an empty Redis (what the test shows, and logs):
//   - a session absent before the wipe is forgotten: its episode, its
//     /expire already sent; when its client returns it is a new present
//     session, and no return message goes out;
//   - a session whose client left before the wipe but was not yet decided
//     (its deadline was in Redis) gets no /expire, nor one whose client
//     closed while Redis was away (the ledger's replay of "no connection"
//     finds no session to arm a deadline on);
//   - hand-overs: a re-asserted session is handed over only by
//     HANDOFF_DETECT=always (every new session is); one handed over by a
//     rule or by the admin API is re-created not handed over, and its
//     absence would give no /expire until the rule or the API says so again.
//   - bot settings changed at run time (they live in Redis).
func TestClusterRedisRestartedEmptyReasserts(t *testing.T) {
	rs := redistest.Start(t)
	pl, a, b := roReplicas(t, "redis://"+rs.Addr)

	liveA, _ := dialPeer(t, a.addr, "o3-live-a")
	liveB, _ := dialPeer(t, b.addr, "o3-live-b")
	_, laterC := dialPeer(t, b.addr, "o3-later") // leaves after the wipe
	_, absC := dialPeer(t, a.addr, "o3-absent")  // absent before the wipe
	_, undecidedC := dialPeer(t, a.addr, "o3-undecided")
	_, outageC := dialPeer(t, b.addr, "o3-closed-in-outage")
	for _, sid := range []string{"o3-live-a", "o3-live-b", "o3-later", "o3-absent", "o3-undecided", "o3-closed-in-outage"} {
		roWaitConns(t, a, sid, 1)
	}
	closeClean(absC)
	roWaitOffline(t, pl, "o3-absent", roSettle+5*time.Second)
	closeClean(undecidedC)
	roWaitConns(t, a, "o3-undecided", 0)
	reassertsBefore := map[*sidecar]float64{} // each has one already: its first renewal found no lease
	for _, sc := range []*sidecar{a, b} {
		reassertsBefore[sc] = metric(t, sc, "presence_sidecar_reasserts_total")
	}

	rs.Kill()
	killedAt := time.Now()
	roWaitRedis(t, false, a, b)
	closeClean(outageC)
	liveA.echo(t, "down-a")
	time.Sleep(roLease - time.Since(killedAt))
	rs.Restart() // empty
	backAt := time.Now()
	roWaitRedis(t, true, a, b)
	for _, sc := range []*sidecar{a, b} {
		testutil.Eventually(t, 10*time.Second, "a re-assertion on "+sc.admin, func() bool {
			return metric(t, sc, "presence_sidecar_reasserts_total") > reassertsBefore[sc]
		})
	}
	for _, sid := range []string{"o3-live-a", "o3-live-b", "o3-later"} {
		roWaitConns(t, b, sid, 1)
		if v, _ := getSession(t, a, sid); v.State != "present" || !v.HandedOver {
			t.Fatalf("%s re-asserted as %+v, want present and handed over (HANDOFF_DETECT=always)", sid, v)
		}
	}

	// An interval, a lease and slack after the wipe: nothing for anyone
	// connected.
	time.Sleep(roSettle - time.Since(backAt))
	roExpect(t, pl, map[string][2]int{"o3-live-a": {0, 0}, "o3-live-b": {0, 0}, "o3-later": {0, 0}, "o3-absent": {1, 0}})
	liveA.echo(t, "after-a")
	liveB.echo(t, "after-b")

	// What the wipe lost (see the comment above): logged, not asserted.
	_, known := getSession(t, a, "o3-absent")
	back, _ := dialPeer(t, a.addr, "o3-absent")
	back.echo(t, "back")

	// The one who leaves after the wipe: exactly one /expire.
	closeClean(laterC)
	h := roWaitOffline(t, pl, "o3-later", roSettle+5*time.Second)
	if h.Path != "/expire" {
		t.Fatalf("o3-later: %s %s", h.Path, h.Raw)
	}
	time.Sleep(roSettle)
	roExpect(t, pl, map[string][2]int{"o3-live-a": {0, 0}, "o3-live-b": {0, 0}, "o3-later": {1, 0}})
	t.Logf("not recovered from the empty Redis: o3-absent known after the wipe %v, return messages on its return %d; "+
		"o3-undecided /expire %d; o3-closed-in-outage /expire %d",
		known, len(roHooks(pl, "o3-absent", "client.online")),
		len(roHooks(pl, "o3-undecided", "client.offline")), len(roHooks(pl, "o3-closed-in-outage", "client.offline")))
}

// TestClusterSentinelFailoverNoLostDecision: the replicas reach Redis
// through Sentinel; handed-over sessions close on both replicas before,
// during and after a failover (their deadlines fall on either side of it).
// Every one gets its /expire — no decision lost — and a duplicate, which
// a failover losing acknowledged writes may cause, carries the same
// webhook-id: one distinct id per session (each has one episode).
func TestClusterSentinelFailoverNoLostDecision(t *testing.T) {
	sen := redistest.StartSentinel(t)
	url := "redis://" + sen.Sentinel.Addr + "?master_set=" + redistest.MasterName
	pl, a, b := roReplicas(t, url)

	const n = 12
	conns := make([]*websocket.Conn, n)
	sids := make([]string, n)
	for i := range n {
		sids[i] = fmt.Sprintf("o4-%02d", i)
		sc := a
		if i%2 == 1 {
			sc = b
		}
		_, conns[i] = dialPeer(t, sc.addr, sids[i])
	}
	for _, sid := range sids {
		roWaitConns(t, a, sid, 1)
	}
	time.Sleep(roLease) // sweeping has resumed since first contact

	// Two close an interval before the failover (decided around it), the
	// others every 150 ms from just before it.
	closeClean(conns[0])
	closeClean(conns[1])
	time.Sleep(roInterval - 200*time.Millisecond)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 2; i < n; i++ {
			closeClean(conns[i])
			time.Sleep(150 * time.Millisecond)
		}
	})
	failoverAt := time.Now()
	sen.Failover(t)
	t.Logf("failover took %v", time.Since(failoverAt).Round(time.Millisecond))
	wg.Wait()

	// Every deadline falls within an interval of its close; a lease and
	// slack cover a sweep paused by the failover.
	deadline := time.Now().Add(3 * roSettle)
	var missing []string
	for {
		missing = missing[:0]
		for _, sid := range sids {
			if len(roHooks(pl, sid, "client.offline")) == 0 {
				missing = append(missing, sid)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, sid := range missing {
		v, ok := getSession(t, a, sid)
		t.Errorf("%s closed around the failover and never got its /expire: Redis now says %+v (found %v)", sid, v, ok)
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d decisions lost across the failover", len(missing), n)
	}
	time.Sleep(roSettle)
	dups := 0
	want := map[string][2]int{}
	for _, sid := range sids {
		want[sid] = [2]int{1, 0}
		dups += len(roHooks(pl, sid, "client.offline")) - 1
	}
	t.Logf("%d sessions decided, %d duplicate deliveries (same webhook-id)", n, dups)
	roExpect(t, pl, want)
	roWaitRedis(t, true, a, b)
}
