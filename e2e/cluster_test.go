package e2e

// Cluster mode end to end: two or three replicas of the real binary share
// one Redis, and every scenario runs against a single redis-server and a
// 3-master Redis Cluster (subtests "single" and "cluster").

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/handoff"
)

// clusterEnv is baseEnv for a replica of a cluster sharing redisURL.
func clusterEnv(upstream, platform, redisURL string) map[string]string {
	env := baseEnv(upstream, platform, "")
	delete(env, "DATA_DIR")
	env["REDIS_URL"] = redisURL
	env["REDIS_LEASE_TTL"] = "2s"
	env["HANDOFF_DETECT"] = "always"
	return env
}

// leaseTTL and interval are clusterEnv's REDIS_LEASE_TTL and
// PRESENCE_CHECK_INTERVAL.
const (
	leaseTTL = 2 * time.Second
	interval = time.Second
)

// onlyKey is the one replica holding v's connections.
func onlyKey(t *testing.T, v replicaView) string {
	t.Helper()
	if len(v.Replicas) != 1 {
		t.Fatalf("replicas %v: want one", v.Replicas)
	}
	for k := range v.Replicas {
		return k
	}
	return ""
}

// A client that moves from replica A to replica B inside the interval
// produces nothing; once it leaves B for good, exactly one /expire comes,
// from whichever replica swept first.
func TestClusterMoveBetweenReplicasThenLeave(t *testing.T) {
	eachRedisTopology(t, func(t *testing.T, r *sharedRedis) {
		up, pl := newUpstream(t), newPlatform(t)
		a := start(t, clusterEnv(up.url(), pl.url(), r.url))
		b := start(t, clusterEnv(up.url(), pl.url(), r.url))
		const sid = "s-move"

		c := client(t, a, sid, "bot-1")
		onA := onlyKey(t, waitReplicaView(t, b, sid, "one connection, on A", func(v replicaView) bool {
			return slices.Equal(replicaCounts(v), []int64{1})
		}))
		closeClean(c)
		time.Sleep(300 * time.Millisecond) // well inside the 1 s interval
		c = client(t, b, sid, "bot-1")
		v := waitReplicaView(t, a, sid, "one connection, on B", func(v replicaView) bool {
			return slices.Equal(replicaCounts(v), []int64{1}) && v.Replicas[onA] == 0
		})
		if v.State != "present" || v.Connections != 1 {
			t.Fatalf("after the move: %+v", v)
		}
		pl.quiet(t, 2500*time.Millisecond) // past the lease's first sweep and the interval
		closeClean(c)
		h := pl.accepted(t, 5*time.Second)
		if h.event() != "client.offline" || h.session() != sid || h.Path != "/expire" {
			t.Fatalf("got %s %s for %s", h.event(), h.Path, h.session())
		}
		pl.quiet(t, 2*time.Second)
		all := pl.all()
		assertUniqueIDs(t, all)
		r.assertDerivedIDs(t, sid, all, []uint64{1})

		// /readyz and the cluster's view from either replica.
		for _, sc := range []*sidecar{a, b} {
			resp, err := http.Get("http://" + sc.admin + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if code, body := sc.api("GET", "/v1/sessions/"+sid, nil); code != 200 || !strings.Contains(string(body), `"state": "absent"`) {
				t.Fatalf("session view: %d %s", code, body)
			}
		}
	})
}

// A session open on two replicas at once: closing it on one is no absence;
// closed on both, exactly one /expire. Back on both at once, exactly one
// return message; closed on both at once, exactly one /expire of the next
// episode. No webhook-id twice.
func TestClusterSessionOpenOnTwoReplicas(t *testing.T) {
	eachRedisTopology(t, func(t *testing.T, r *sharedRedis) {
		up, pl := newUpstream(t), newPlatform(t)
		a := start(t, clusterEnv(up.url(), pl.url(), r.url))
		b := start(t, clusterEnv(up.url(), pl.url(), r.url))
		const sid = "s-both"
		both := func(v replicaView) bool { return slices.Equal(replicaCounts(v), []int64{1, 1}) }

		c1, c2 := client(t, a, sid, "bot-1"), client(t, b, sid, "bot-1")
		if v := waitReplicaView(t, a, sid, "a connection on each replica", both); v.Connections != 2 {
			t.Fatalf("view %+v: want 2 connections", v)
		}
		closeClean(c1)
		waitReplicaView(t, a, sid, "the connection on B only", func(v replicaView) bool { return v.Connections == 1 })
		pl.quiet(t, leaseTTL+interval+500*time.Millisecond) // past the first sweep and the interval: still on B
		closeClean(c2)
		off1 := pl.accepted(t, 5*time.Second)

		// Back on both replicas at once.
		cs := clientsAtOnce(t, sid, a, b)
		c1, c2 = cs[0], cs[1]
		on1 := pl.accepted(t, 5*time.Second)
		waitReplicaView(t, b, sid, "back on both replicas", both)
		pl.quiet(t, 1500*time.Millisecond) // no second return message

		// Closed on both at once.
		var wg sync.WaitGroup
		wg.Go(func() { closeClean(c1) })
		wg.Go(func() { closeClean(c2) })
		wg.Wait()
		off2 := pl.accepted(t, 5*time.Second)
		pl.quiet(t, 2*time.Second)

		all := pl.all()
		if len(all) != 3 {
			t.Fatalf("%d webhooks, want 3", len(all))
		}
		for i, want := range []string{"client.offline", "client.online", "client.offline"} {
			if h := []hook{off1, on1, off2}[i]; h.event() != want || h.session() != sid {
				t.Fatalf("webhook %d: %s for %s, want %s", i, h.event(), h.session(), want)
			}
		}
		assertUniqueIDs(t, all)
		r.assertDerivedIDs(t, sid, all, []uint64{1, 1, 2})
		v, _ := replicaViewOf(t, a, sid)
		if v.State != "absent" || v.Episode != 2 || len(replicaCounts(v)) != 0 {
			t.Fatalf("final view %+v", v)
		}
	})
}

// An absence decided while the client was on A; it comes back on B:
// exactly one client.online, after the client.offline, for the same
// session and episode.
func TestClusterReturnOnAnotherReplica(t *testing.T) {
	eachRedisTopology(t, func(t *testing.T, r *sharedRedis) {
		up, pl := newUpstream(t), newPlatform(t)
		a := start(t, clusterEnv(up.url(), pl.url(), r.url))
		b := start(t, clusterEnv(up.url(), pl.url(), r.url))
		const sid = "s-return"

		c := client(t, a, sid, "bot-1")
		onA := onlyKey(t, waitReplicaView(t, a, sid, "connected on A", func(v replicaView) bool { return v.Connections == 1 }))
		closeClean(c)
		off := pl.accepted(t, leaseTTL+interval+3*time.Second)
		if off.event() != "client.offline" || off.session() != sid || off.Path != "/expire" || off.Body["reason"] != "disconnected" {
			t.Fatalf("first webhook: %s %s %s", off.Path, off.event(), off.Raw)
		}
		if v := waitReplicaView(t, b, sid, "absent", func(v replicaView) bool { return v.State == "absent" }); v.Episode != 1 {
			t.Fatalf("absent view %+v: want episode 1", v)
		}

		c = client(t, b, sid, "bot-1")
		on := pl.accepted(t, 3*time.Second)
		pl.quiet(t, 1500*time.Millisecond)
		if on.event() != "client.online" || on.session() != sid || on.Path != "/message" || !on.At.After(off.At) {
			t.Fatalf("second webhook: %s %s at %v (offline at %v): %s", on.Path, on.event(), on.At, off.At, on.Raw)
		}
		// The bodies carry no episode number: the return message names its
		// absence by offlineSince, the /expire's detectedAt, and both ids
		// are derived from the same episode.
		if on.Body["offlineSince"] == nil || on.Body["offlineSince"] != off.Body["detectedAt"] {
			t.Errorf("online offlineSince %v, offline detectedAt %v: want equal", on.Body["offlineSince"], off.Body["detectedAt"])
		}
		if on.Body["botId"] != "bot-1" || off.Body["botId"] != "bot-1" || on.Body["text"] == "" {
			t.Errorf("bodies: %s / %s", off.Raw, on.Raw)
		}
		all := pl.all()
		assertUniqueIDs(t, all)
		r.assertDerivedIDs(t, sid, all, []uint64{1, 1})

		v, _ := replicaViewOf(t, a, sid)
		if v.State != "present" || v.Episode != 1 || !slices.Equal(replicaCounts(v), []int64{1}) || v.Replicas[onA] != 0 {
			t.Fatalf("view after the return %+v (A is %s)", v, onA)
		}
	})
}

// Replica A is killed (-9) while a client is connected to it: a survivor
// reaps A once its lease lapses and sends the /expire within
// REDIS_LEASE_TTL + interval + 1.5 s of the kill (exactly one, from three
// replicas racing).
func TestClusterKill9ReplicaWithConnectedClient(t *testing.T) {
	eachRedisTopology(t, func(t *testing.T, r *sharedRedis) {
		up, pl := newUpstream(t), newPlatform(t)
		a := start(t, clusterEnv(up.url(), pl.url(), r.url))
		b := start(t, clusterEnv(up.url(), pl.url(), r.url))
		c := start(t, clusterEnv(up.url(), pl.url(), r.url))
		started := time.Now()
		const sid = "s-kill"

		client(t, a, sid, "bot-1")
		v := waitReplicaView(t, c, sid, "connected on A", func(v replicaView) bool { return v.Connections == 1 })
		onA := onlyKey(t, v)
		if v.Replicas[onA] != 1 || !v.HandedOver {
			t.Fatalf("view %+v", v)
		}
		for _, sc := range []*sidecar{b, c} {
			if n := takeoverCount(t, sc, "replica"); n != 0 {
				t.Fatalf("takeovers before the kill: %v", n)
			}
		}
		// The survivors sweep from one lease after their start; kill after
		// that, so what is measured is the failover, not the start.
		time.Sleep(time.Until(started.Add(leaseTTL + 200*time.Millisecond)))

		killed := time.Now()
		a.kill9()
		bound := leaseTTL + interval + 1500*time.Millisecond + 500*time.Millisecond // + the sweep's and the registry's ticks
		h := pl.accepted(t, bound+5*time.Second)
		took := h.At.Sub(killed)
		t.Logf("/expire %v after the kill (bound %v)", took.Round(time.Millisecond), bound)
		if took > bound {
			t.Errorf("/expire %v after the kill, want within %v", took, bound)
		}
		if h.event() != "client.offline" || h.session() != sid || h.Body["reason"] != "disconnected" {
			t.Fatalf("got %s for %s: %s", h.event(), h.session(), h.Raw)
		}
		pl.quiet(t, 2*time.Second)
		all := pl.all()
		if len(all) != 1 {
			t.Fatalf("%d webhooks, want 1", len(all))
		}
		r.assertDerivedIDs(t, sid, all, []uint64{1})

		if n := takeoverCount(t, b, "replica") + takeoverCount(t, c, "replica"); n < 1 {
			t.Errorf(`presence_sidecar_takeovers_total{kind="replica"} of the survivors: %v, want at least 1`, n)
		}
		v, _ = replicaViewOf(t, b, sid)
		if v.State != "absent" || len(v.Replicas) != 0 || v.Connections != 0 {
			t.Fatalf("view after the kill %+v", v)
		}
	})
}

// Replica A is killed (-9) while notifications are undelivered: the
// platform answers 503, several sessions each have an /expire being retried
// and a return message queued behind it, and A holds a head's lease
// mid-attempt. Once the platform recovers a survivor delivers everything,
// per session the /expire first, with the webhook-ids of the attempts made
// before (A's included), and the head A held is taken over once its lease
// (HANDOFF_TIMEOUT + handoff.ClusterLeaseSlack) lapses.
func TestClusterKill9ReplicaWithUndeliveredNotifications(t *testing.T) {
	eachRedisTopology(t, func(t *testing.T, r *sharedRedis) {
		up, pl := newUpstream(t), newPlatform(t)
		unavailable := func(hook, int) int { return http.StatusServiceUnavailable }
		pl.setStatus(unavailable)
		const timeout = time.Second
		envA := clusterEnv(up.url(), pl.url(), r.url)
		envA["HANDOFF_TIMEOUT"] = timeout.String()
		// A's requests are told apart by their paths.
		envA["HANDOFF_EXPIRE_PATH"], envA["HANDOFF_MESSAGE_PATH"] = "/a/expire", "/a/message"
		envB := clusterEnv(up.url(), pl.url(), r.url)
		envB["HANDOFF_TIMEOUT"] = timeout.String()
		a := start(t, envA)
		b := start(t, envB)
		// More sessions than a deliverer's attempts at once
		// (handoff.DefaultConcurrency): while every attempt hangs, B can
		// hold only that many heads, so A gets some whichever replica owns
		// their shards.
		var sids []string
		for i := range handoff.DefaultConcurrency + 4 {
			sids = append(sids, fmt.Sprintf("s-q%02d", i))
		}

		for _, sid := range sids {
			closeClean(client(t, a, sid, "bot-1"))
		}
		offlineTried := func(sid string) bool {
			for _, h := range pl.all() {
				if h.session() == sid && h.event() == "client.offline" {
					return true
				}
			}
			return false
		}
		for _, sid := range sids {
			deadline := time.Now().Add(leaseTTL + interval + 5*time.Second)
			for !offlineTried(sid) {
				if time.Now().After(deadline) {
					t.Fatalf("no /expire attempt for %s", sid)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		// Each client returns on B: a return message queued behind each
		// /expire.
		for _, sid := range sids {
			client(t, b, sid, "bot-1")
		}
		for _, sid := range sids {
			waitReplicaView(t, b, sid, "back on B", func(v replicaView) bool { return v.State == "present" && v.Episode == 1 })
		}

		// Every attempt hangs (until it times out, HANDOFF_TIMEOUT); A is
		// killed the moment one of its own arrives: it dies holding that
		// head's lease.
		held := make(chan hook, 64)
		release := make(chan struct{})
		defer func() {
			select {
			case <-release:
			default:
				close(release)
			}
		}()
		pl.setStatus(func(h hook, _ int) int {
			if strings.HasPrefix(h.Path, "/a/") {
				select {
				case held <- h:
				default:
				}
			}
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
			return http.StatusServiceUnavailable
		})
		var inFlight hook
		select {
		case inFlight = <-held:
		case <-time.After(10 * time.Second):
			t.Fatal("A made no attempt")
		}
		if n := takeoverCount(t, b, "notification"); n != 0 {
			t.Fatalf("notification takeovers before the kill: %v", n)
		}
		killed := time.Now()
		a.kill9()
		before := pl.all()
		close(release)
		pl.setStatus(func(hook, int) int { return http.StatusOK })
		t.Logf("A killed while attempting %s of %s (%s); %d attempts so far", inFlight.event(), inFlight.session(), inFlight.id(), len(before))
		if inFlight.event() != "client.offline" {
			t.Fatalf("A held %s: want an /expire (the return messages wait behind them)", inFlight.event())
		}
		for _, h := range before {
			if h.event() != "client.offline" {
				t.Fatalf("a return message was attempted before its /expire was delivered: %s %s", h.session(), h.Raw)
			}
		}
		got := pl.acceptedN(t, 2*len(sids), 30*time.Second)
		last := got[len(got)-1].At.Sub(killed)
		t.Logf("all %d delivered %v after the kill", len(got), last.Round(time.Millisecond))
		pl.quiet(t, 1500*time.Millisecond)

		per := hooksBySession(got)
		lease := timeout + handoff.ClusterLeaseSlack
		for _, sid := range sids {
			hs := per[sid]
			if len(hs) != 2 || hs[0].event() != "client.offline" || hs[1].event() != "client.online" {
				var evs []string
				for _, h := range hs {
					evs = append(evs, h.event())
				}
				t.Fatalf("session %s: accepted %v, want [client.offline client.online]", sid, evs)
			}
			for _, h := range hs {
				if strings.HasPrefix(h.Path, "/a/") {
					t.Errorf("session %s: %s accepted from the dead replica", sid, h.event())
				}
			}
			// Same webhook-id as every attempt before the kill, A's included.
			var triedA bool
			for _, h := range before {
				if h.session() != sid {
					continue
				}
				if h.id() != hs[0].id() {
					t.Errorf("session %s: /expire attempted as %s before the kill, delivered as %s", sid, h.id(), hs[0].id())
				}
				triedA = triedA || strings.HasPrefix(h.Path, "/a/")
			}
			if sid == inFlight.session() {
				if !triedA || inFlight.id() != hs[0].id() {
					t.Errorf("session %s: A's attempt %s, delivered %s", sid, inFlight.id(), hs[0].id())
				}
				took := hs[0].At.Sub(killed)
				t.Logf("the head A held was delivered %v after the kill (its lease: %v)", took.Round(time.Millisecond), lease)
				if took > lease+2*time.Second {
					t.Errorf("the head A held was delivered %v after the kill, want within its lease %v + 2s", took, lease)
				}
			}
			// The return message was not attempted before its /expire was
			// accepted.
			for _, h := range pl.all() {
				if h.session() == sid && h.event() == "client.online" && h.At.Before(hs[0].At) {
					t.Errorf("session %s: return message attempted at %v, before the /expire was accepted at %v", sid, h.At, hs[0].At)
				}
			}
			r.assertDerivedIDs(t, sid, hs, []uint64{1, 1})
		}
		assertUniqueIDs(t, got)

		if n := takeoverCount(t, b, "notification"); n < 1 {
			t.Errorf(`presence_sidecar_takeovers_total{kind="notification"} of B: %v, want at least 1`, n)
		}
		if n := takeoverCount(t, b, "replica"); n < 1 {
			t.Errorf(`presence_sidecar_takeovers_total{kind="replica"} of B: %v, want at least 1`, n)
		}
	})
}

// A client that comes back the moment its /expire is delivered, on the
// replica that delivered it: the return message follows at once. (The
// deliverer hears that the /expire's attempt is done a little after Redis
// has made the return message due; a claim in between must not leave the
// return message to wait for its lease to lapse, HANDOFF_TIMEOUT +
// handoff.ClusterLeaseSlack: 15 s by default.)
func TestClusterReturnRightAfterExpireIsNotHeldBack(t *testing.T) {
	eachRedisTopology(t, func(t *testing.T, r *sharedRedis) {
		up, pl := newUpstream(t), newPlatform(t)
		envA := clusterEnv(up.url(), pl.url(), r.url)
		envA["HANDOFF_EXPIRE_PATH"], envA["HANDOFF_MESSAGE_PATH"] = "/a/expire", "/a/message"
		a := start(t, envA)
		b := start(t, clusterEnv(up.url(), pl.url(), r.url))
		var sids []string
		for i := range 24 {
			sids = append(sids, "s-quick-"+string(rune('a'+i)))
		}
		for i, sid := range sids {
			closeClean(client(t, []*sidecar{a, b}[i%2], sid, "bot-1"))
		}
		offline, online := map[string]hook{}, map[string]hook{}
		dialed := make(chan error, len(sids))
		deadline := time.After(leaseTTL + interval + 20*time.Second)
		for len(online) < len(sids) {
			select {
			case h := <-pl.notify:
				switch h.event() {
				case "client.offline":
					offline[h.session()] = h
					sc := b
					if strings.HasPrefix(h.Path, "/a/") {
						sc = a
					}
					go func() { // back on the replica that delivered it, at once
						c, err := dialLinked(sc, h.session(), "bot-1")
						if err == nil {
							t.Cleanup(func() { c.Close() })
						}
						dialed <- err
					}()
				case "client.online":
					online[h.session()] = h
				}
			case err := <-dialed:
				if err != nil {
					t.Fatal(err)
				}
			case <-deadline:
				t.Fatalf("%d of %d return messages", len(online), len(sids))
			}
		}
		worst := time.Duration(0)
		for _, sid := range sids {
			off, on := offline[sid], online[sid]
			if off.id() == "" {
				t.Fatalf("session %s: return message without /expire", sid)
			}
			worst = max(worst, on.At.Sub(off.At))
		}
		t.Logf("worst gap between an /expire and its return message: %v", worst.Round(time.Millisecond))
		if worst > 2*time.Second {
			t.Errorf("a return message came %v after its /expire, want within 2s", worst)
		}
		pl.quiet(t, time.Second)
		assertUniqueIDs(t, pl.all())
	})
}

// A client of an absent session that comes back only briefly, while the
// replica's writer is busy with another session's change (here: Redis
// pausing writes for 800 ms), is still a return: the return message goes
// out, and a new absence (episode 2) follows one interval after it left.
// The ledger coalesces the open and the close into "0 connections", which
// Redis must not read as "nothing happened".
func TestClusterBriefReturnWhileWriterBusyIsNotLost(t *testing.T) {
	eachRedisTopology(t, func(t *testing.T, r *sharedRedis) {
		up, pl := newUpstream(t), newPlatform(t)
		a := start(t, clusterEnv(up.url(), pl.url(), r.url))
		b := start(t, clusterEnv(up.url(), pl.url(), r.url))
		const sid = "s-brief"
		closeClean(client(t, a, sid, "bot-1"))
		off := pl.accepted(t, leaseTTL+interval+3*time.Second)
		if off.event() != "client.offline" {
			t.Fatalf("first webhook %s", off.Raw)
		}
		waitReplicaView(t, b, sid, "absent", func(v replicaView) bool { return v.State == "absent" })

		// Shorter than the lease, so no replica's lease lapses meanwhile.
		for _, n := range r.nodes {
			if _, err := n.Do("CLIENT", "PAUSE", "800", "WRITE"); err != nil {
				t.Fatal(err)
			}
		}
		client(t, b, "s-other", "bot-1") // B's writer waits on Redis with this
		time.Sleep(50 * time.Millisecond)
		closeClean(client(t, b, sid, "bot-1")) // the brief return
		on := pl.accepted(t, 3*time.Second)
		if on.event() != "client.online" || on.session() != sid {
			t.Fatalf("second webhook %s", on.Raw)
		}
		off2 := pl.accepted(t, interval+3*time.Second)
		if off2.event() != "client.offline" || off2.session() != sid {
			t.Fatalf("third webhook %s", off2.Raw)
		}
		r.assertDerivedIDs(t, sid, []hook{off, on, off2}, []uint64{1, 1, 2})
	})
}
