package e2e

// Helpers of the cluster-mode e2e tests (cluster_test.go): the two Redis
// redisTopologies every scenario runs against, reads of Redis and of the
// replicas' admin listeners, and the webhook ids the scripts derive.

import (
	"bufio"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil/redistest"
	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
)

// sharedRedis is one Redis the replicas of a test share.
type sharedRedis struct {
	url   string              // REDIS_URL
	nodes []*redistest.Server // a single server, or the Cluster's masters
}

// redisTopologies are the Redis set-ups every cluster scenario runs against.
var redisTopologies = []struct {
	name  string
	start func(t *testing.T) *sharedRedis
}{
	{"single", func(t *testing.T) *sharedRedis {
		rs := redistest.Start(t)
		return &sharedRedis{url: "redis://" + rs.Addr, nodes: []*redistest.Server{rs}}
	}},
	{"cluster", func(t *testing.T) *sharedRedis {
		c := redistest.StartCluster(t, 3)
		a := c.Addrs()
		// rueidis finds the rest of the cluster from any seed; giving all
		// three is what an operator would write.
		return &sharedRedis{url: "redis://" + a[0] + "?addr=" + a[1] + "&addr=" + a[2], nodes: c.Nodes}
	}},
}

// eachRedisTopology runs body once per topology, as subtests "single" and
// "cluster", each with a Redis of its own. The two run in parallel (two
// scenarios at a time: their timing bounds leave room for that on two
// cores).
func eachRedisTopology(t *testing.T, body func(t *testing.T, r *sharedRedis)) {
	for _, tp := range redisTopologies {
		t.Run(tp.name, func(t *testing.T) {
			t.Parallel()
			body(t, tp.start(t))
		})
	}
}

// redisKeyPrefix is REDIS_KEY_PREFIX's default.
const redisKeyPrefix = "presence-sidecar:"

// sessionHashKey is the hash of session sid (store/redisstate's key layout).
func sessionHashKey(sid string) string {
	return redisKeyPrefix + "{" + strconv.Itoa(redisstate.ShardOf(sid)) + "}:s:" + sid
}

// hget reads a field of a hash from whichever node holds its slot: the
// others answer MOVED.
func (r *sharedRedis) hget(t *testing.T, key, field string) string {
	t.Helper()
	var last error
	for _, n := range r.nodes {
		v, err := n.Do("HGET", key, field)
		if err == nil {
			return v
		}
		last = err
	}
	t.Fatalf("HGET %s %s: %v", key, field, last)
	return ""
}

// derivedWebhookID is the webhook-id the scripts derive (lua/prelude.lua, note_id)
// from the session, its creation time in Redis, the episode and the kind;
// written here independently so a test can say which episode a webhook
// belongs to: the bodies carry no episode number.
func derivedWebhookID(sid, inc string, ep uint64, kind string) string {
	sum := sha1.Sum([]byte(sid + "\n" + inc + "\n" + strconv.FormatUint(ep, 10) + "\n" + kind))
	return "msg_" + hex.EncodeToString(sum[:])[:32]
}

// assertDerivedIDs checks that hooks (one session's, accepted) carry the ids of the
// given episodes and kinds, in order.
func (r *sharedRedis) assertDerivedIDs(t *testing.T, sid string, hooks []hook, eps []uint64) {
	t.Helper()
	inc := r.hget(t, sessionHashKey(sid), "inc")
	if len(hooks) != len(eps) {
		t.Fatalf("session %s: %d webhooks, want %d", sid, len(hooks), len(eps))
	}
	for i, h := range hooks {
		if want := derivedWebhookID(sid, inc, eps[i], h.event()); h.id() != want {
			t.Errorf("session %s: %s #%d has webhook-id %s, want %s (episode %d)", sid, h.event(), i, h.id(), want, eps[i])
		}
	}
}

// replicaView is the part of GET /v1/sessions/{id} the cluster tests read.
type replicaView struct {
	State       string           `json:"state"`
	Episode     uint64           `json:"episode"`
	HandedOver  bool             `json:"handedOver"`
	Connections int              `json:"connections"`
	Replicas    map[string]int64 `json:"replicas"`
}

func replicaViewOf(t *testing.T, sc *sidecar, sid string) (replicaView, bool) {
	t.Helper()
	code, body := sc.api("GET", "/v1/sessions/"+sid, nil)
	var v replicaView
	if code != 200 || json.Unmarshal(body, &v) != nil {
		return v, false
	}
	return v, true
}

// waitReplicaView waits until sc's view of sid satisfies ok, and returns it.
func waitReplicaView(t *testing.T, sc *sidecar, sid, what string, ok func(replicaView) bool) replicaView {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, found := replicaViewOf(t, sc, sid)
		if found && ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s: %s: never seen (last view %+v, found %v)", sid, what, v, found)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// replicaCounts are the connection counts of v's replicas, sorted, e.g.
// [1 1] for one connection on each of two replicas.
func replicaCounts(v replicaView) []int64 {
	out := []int64{}
	for _, n := range v.Replicas {
		if n != 0 {
			out = append(out, n)
		}
	}
	for i := range out { // tiny: insertion sort
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// takeoverCount reads presence_sidecar_takeovers_total{kind=...}.
func takeoverCount(t *testing.T, sc *sidecar, kind string) float64 {
	t.Helper()
	return metricSum(t, sc, "presence_sidecar_takeovers_total", `kind="`+kind+`"`)
}

// metricLines is one scrape of sc's /metrics (Prometheus text), by line.
func metricLines(t *testing.T, sc *sidecar) []string {
	t.Helper()
	resp, err := http.Get("http://" + sc.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lines []string
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		lines = append(lines, s.Text())
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// metricSum reads a metric with label (name="value") from sc's /metrics
// (Prometheus text), summed over any other labels.
func metricSum(t *testing.T, sc *sidecar, metric, label string) float64 {
	t.Helper()
	sum, found := 0.0, false
	for _, line := range metricLines(t, sc) {
		if !strings.HasPrefix(line, metric+"{") || !strings.Contains(line, label) {
			continue
		}
		f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum, found = sum+f, true
	}
	if !found {
		t.Fatalf("%s{%s} not in /metrics of %s", metric, label, sc.admin)
	}
	return sum
}

// acceptedN collects the next n webhooks the platform accepted.
func (p *platform) acceptedN(t *testing.T, n int, within time.Duration) []hook {
	t.Helper()
	deadline := time.After(within)
	var out []hook
	for len(out) < n {
		select {
		case h := <-p.notify:
			out = append(out, h)
		case <-deadline:
			t.Fatalf("%d of %d notifications accepted within %v (all requests: %d)", len(out), n, within, len(p.all()))
		}
	}
	return out
}

// hooksBySession groups hooks by session, keeping their order.
func hooksBySession(hs []hook) map[string][]hook {
	out := map[string][]hook{}
	for _, h := range hs {
		out[h.session()] = append(out[h.session()], h)
	}
	return out
}

// assertUniqueIDs fails if two requests in hs that the platform accepted
// carry one webhook-id (accepted: the hooks given are all 2xx).
func assertUniqueIDs(t *testing.T, hs []hook) {
	t.Helper()
	seen := map[string]hook{}
	for _, h := range hs {
		if prev, dup := seen[h.id()]; dup {
			t.Errorf("webhook-id %s accepted twice: %s %s at %v and %s %s at %v", h.id(),
				prev.event(), prev.session(), prev.At, h.event(), h.session(), h.At)
		}
		seen[h.id()] = h
	}
}

// dialLinked is client for use off the test's goroutine: it returns the
// error instead of failing the test.
func dialLinked(sc *sidecar, sid, bot string) (*websocket.Conn, error) {
	c, _, err := websocket.DefaultDialer.Dial("ws://"+sc.addr+"/ws", nil)
	if err != nil {
		return nil, err
	}
	if err := c.WriteJSON(map[string]any{"action": "link", "data": map[string]any{"sessionId": sid, "botId": bot}}); err != nil {
		c.Close()
		return nil, err
	}
	var reply map[string]any
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := c.ReadJSON(&reply); err != nil {
		c.Close()
		return nil, fmt.Errorf("link reply: %w", err)
	}
	c.SetReadDeadline(time.Time{})
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	return c, nil
}

// clientsAtOnce links one client per sidecar for sid, concurrently.
func clientsAtOnce(t *testing.T, sid string, scs ...*sidecar) []*websocket.Conn {
	t.Helper()
	out := make([]*websocket.Conn, len(scs))
	errs := make([]error, len(scs))
	var wg sync.WaitGroup
	for i, sc := range scs {
		wg.Go(func() { out[i], errs[i] = dialLinked(sc, sid, "bot-1") })
	}
	wg.Wait()
	for _, c := range out {
		if c != nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return out
}
