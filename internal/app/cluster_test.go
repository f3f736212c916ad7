package app

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
	"github.com/presence-sidecar/presence-sidecar/internal/testutil/redistest"
)

// Cluster mode wired through Build and Serve: the same scenario as
// TestMetricsAfterScenario against a real redis-server, with the cluster's
// metrics, /readyz while Redis is up and after it is killed, and the
// registry on /v1/replicas.
func TestClusterModeMetricsAndReadiness(t *testing.T) {
	rs := redistest.Start(t)
	p := newPlatform(t, func(i int) int {
		if i == 0 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	s := startStack(t, p, map[string]string{"REDIS_URL": "redis://" + rs.Addr, "REDIS_LEASE_TTL": "1s", "ADMIN_TOKEN": "tok"})
	testutil.Eventually(t, waitTime, "Redis reachable", func() bool { return readyz(t, s) == "ready" })
	time.Sleep(time.Second) // sweeping starts a lease after first contact

	s1 := s.dial("?sessionId=s1&botId=b1", nil)
	s.echo(s1, handover)
	s.close(s1)
	reqs := s.waitRequests(2) // the /expire: 503, then 200
	if reqs[0].Header.Get("webhook-id") != reqs[1].Header.Get("webhook-id") {
		t.Fatalf("the retry changed the webhook-id: %v", reqs)
	}
	want := map[string]string{
		`presence_sidecar_redis_up`:                                                       "1",
		`presence_sidecar_transitions_total{kind="handoff_started"}`:                      "1",
		`presence_sidecar_transitions_total{kind="absent"}`:                               "1",
		`presence_sidecar_notifications_queued_total{kind="client.offline"}`:              "1",
		`presence_sidecar_notifications_total{kind="client.offline",outcome="retry"}`:     "1",
		`presence_sidecar_notifications_total{kind="client.offline",outcome="delivered"}`: "1",
		`presence_sidecar_decision_lag_seconds_count`:                                     "1",
		`presence_sidecar_outbox_depth`:                                                   "0",
		`presence_sidecar_ledger_pending`:                                                 "0",
		`presence_sidecar_replica_sessions`:                                               "0",
		`presence_sidecar_takeovers_total{kind="notification"}`:                           "0",
		`presence_sidecar_lease_renewals_total{outcome="failed"}`:                         "0",
	}
	got := s.waitMetrics(want)
	if n, _ := strconv.Atoi(got[`presence_sidecar_lease_renewals_total{outcome="ok"}`]); n < 1 {
		t.Errorf("lease renewals: %q", got[`presence_sidecar_lease_renewals_total{outcome="ok"}`])
	}
	if n, _ := strconv.Atoi(got[`presence_sidecar_redis_call_duration_seconds_count{call="fire",outcome="ok"}`]); n < 64 {
		t.Errorf("fire calls observed: %d", n)
	}
	if code, body := adminGet(t, s, "/v1/replicas", "tok"); code != 200 || strings.Count(body, `"id"`) != 1 || !strings.Contains(body, `"lapsed": false`) {
		t.Errorf("/v1/replicas: %d %s", code, body)
	}

	rs.Kill()
	testutil.Eventually(t, waitTime, "/readyz degraded", func() bool {
		r := readyz(t, s)
		return strings.HasPrefix(r, "ready, presence degraded: Redis: unreachable")
	})
	testutil.Eventually(t, waitTime, "redis_up 0", func() bool { return s.scrape()[`presence_sidecar_redis_up`] == "0" })
	// The data plane does not care.
	c := s.dial("?sessionId=s2&botId=b1", nil)
	s.echo(c, "still relayed")
	s.close(c)
}

func readyz(t *testing.T, s *stack) string {
	t.Helper()
	_, body := adminGet(t, s, "/readyz", "")
	verdict, _, _ := strings.Cut(body, "\n") // then one line per check
	return verdict
}

func adminGet(t *testing.T, s *stack, path, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+s.admin+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
