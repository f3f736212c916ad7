package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil/redistest"
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

// A client that moves from replica A to replica B inside the interval
// produces nothing; once it leaves B for good, exactly one /expire comes,
// from whichever replica swept first.
func TestClusterMoveBetweenReplicasThenLeave(t *testing.T) {
	rs := redistest.Start(t)
	up, pl := newUpstream(t), newPlatform(t)
	url := "redis://" + rs.Addr
	a := start(t, clusterEnv(up.url(), pl.url(), url))
	b := start(t, clusterEnv(up.url(), pl.url(), url))

	c := client(t, a, "s-move", "bot-1")
	time.Sleep(300 * time.Millisecond)
	closeClean(c)
	time.Sleep(300 * time.Millisecond) // well inside the 1 s interval
	c = client(t, b, "s-move", "bot-1")
	pl.quiet(t, 2500*time.Millisecond) // past the lease's first sweep and the interval
	closeClean(c)
	h := pl.accepted(t, 5*time.Second)
	if h.event() != "client.offline" || h.session() != "s-move" {
		t.Fatalf("got %s for %s", h.event(), h.session())
	}
	pl.quiet(t, 2*time.Second)

	// /readyz and the cluster's view from either replica.
	for _, sc := range []*sidecar{a, b} {
		resp, err := http.Get("http://" + sc.admin + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if code, body := sc.api("GET", "/v1/sessions/s-move", nil); code != 200 || !strings.Contains(string(body), `"state": "absent"`) {
			t.Fatalf("session view: %d %s", code, body)
		}
	}
}
