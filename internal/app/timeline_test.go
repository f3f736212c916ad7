package app

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
	"github.com/presence-sidecar/presence-sidecar/internal/testutil/redistest"
	"github.com/presence-sidecar/presence-sidecar/timeline"
)

// TestSessionTimelineEmbedded drives one session through a hand-over, an
// absence and its delivered /expire, and reads its history from the API
// and the page, in order, with the webhook-id of the notification.
func TestSessionTimelineEmbedded(t *testing.T) {
	s := startStack(t, newPlatform(t, nil), map[string]string{"ADMIN_TOKEN": "tok"})
	c := s.dial("?sessionId=s1&botId=b1", nil)
	s.echo(c, handover)
	s.echo(c, `{"text":"one"}`)
	s.echo(c, `{"text":"two"}`)
	s.close(c)
	s.waitRequests(1)

	get := func(path string) (int, []byte) {
		req, _ := http.NewRequest("GET", "http://"+s.admin+path, nil)
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	var h timeline.History
	want := []timeline.Kind{timeline.ConnOpened, timeline.Activity, timeline.HandoffOn, timeline.Activity, timeline.ConnClosed,
		timeline.Absent, timeline.Queued, timeline.Delivered}
	testutil.Eventually(t, waitTime, "the delivery in the timeline", func() bool {
		code, body := get("/v1/sessions/s1/events")
		if code != http.StatusOK || json.Unmarshal(body, &h) != nil {
			return false
		}
		return len(h.Events) > 0 && h.Events[len(h.Events)-1].Kind == timeline.Delivered
	})
	var got []timeline.Kind
	for _, e := range h.Events {
		got = append(got, e.Kind)
	}
	if len(got) != len(want) {
		t.Fatalf("kinds %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("kinds %v, want %v", got, want)
		}
	}
	// The hand-over frame, then the two after it: the hand-over splits the summary.
	if a, b := h.Events[1], h.Events[3]; a.Messages != 1 || b.Messages != 2 {
		t.Errorf("activity summaries %+v %+v, want 1 then 2 client messages", a, b)
	}
	if q, d := h.Events[6], h.Events[7]; q.WebhookID == "" || q.WebhookID != d.WebhookID || d.Status != 200 || d.Attempt != 1 {
		t.Errorf("queued %+v and delivered %+v: want one webhook-id, HTTP 200 at attempt 1", q, d)
	}
	if h.Events[4].Reason != "close" || h.Bounds.PerSession != timeline.DefaultPerSession {
		t.Errorf("close reason %q, bounds %+v", h.Events[4].Reason, h.Bounds)
	}
	code, page := get("/sessions/s1")
	if code != http.StatusOK || !strings.Contains(string(page), "notification.delivered") || !strings.Contains(string(page), h.Events[6].WebhookID) {
		t.Fatalf("page %d:\n%s", code, page)
	}
	if code, _ := get("/v1/sessions/" + strings.Repeat("x", 600) + "/events"); code != http.StatusRequestURITooLong {
		t.Errorf("an over-long id: %d, want 414", code)
	}
	resp, err := http.Get("http://" + s.admin + "/sessions/s1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the page without the token: %d, want 401", resp.StatusCode)
	}
}

func eventsOf(t *testing.T, s *stack, sid string) timeline.History {
	t.Helper()
	code, body := adminGet(t, s, "/v1/sessions/"+sid+"/events", "tok")
	var h timeline.History
	if code != http.StatusOK || json.Unmarshal([]byte(body), &h) != nil {
		t.Fatalf("events: %d %s", code, body)
	}
	return h
}

func ids(h timeline.History) string {
	var b strings.Builder
	for _, e := range h.Events {
		b.WriteString(e.ID + ":" + string(e.Kind) + " ")
	}
	return b.String()
}

// TestSessionTimelineSurvivesRestart: the embedded mode's history is in
// DATA_DIR, so a new process shows what the old one saw.
func TestSessionTimelineSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"ADMIN_TOKEN": "tok", "DATA_DIR": dir, "PRESENCE_CHECK_INTERVAL": "1h"}
	var before timeline.History
	t.Run("first process", func(t *testing.T) {
		s := startStack(t, newPlatform(t, nil), env)
		c := s.dial("?sessionId=s1&botId=b1", nil)
		s.echo(c, `{"text":"hi"}`)
		s.close(c)
		testutil.Eventually(t, waitTime, "the close in the timeline", func() bool {
			before = eventsOf(t, s, "s1")
			return len(before.Events) == 3
		})
	})
	s := startStack(t, newPlatform(t, nil), env)
	after := eventsOf(t, s, "s1")
	if ids(after) != ids(before) || after.Kept != "memory+bbolt" {
		t.Fatalf("after a restart (kept %s):\n%s\nbefore:\n%s", after.Kept, ids(after), ids(before))
	}
}

// TestSessionTimelineSameFromTwoReplicas: in cluster mode a session's
// history is in Redis; a session that connects on one replica and then on
// the other reads the same from both.
func TestSessionTimelineSameFromTwoReplicas(t *testing.T) {
	rs := redistest.Start(t)
	p := newPlatform(t, nil)
	env := map[string]string{"REDIS_URL": "redis://" + rs.Addr, "REDIS_LEASE_TTL": "1s", "ADMIN_TOKEN": "tok", "PRESENCE_CHECK_INTERVAL": "1h"}
	a, b := startStack(t, p, env), startStack(t, p, env)
	ca := a.dial("?sessionId=s1&botId=b1", nil)
	a.echo(ca, `{"text":"on a"}`)
	a.close(ca)
	cb := b.dial("?sessionId=s1&botId=b1", nil)
	b.echo(cb, `{"text":"on b"}`)
	b.close(cb)
	var ha, hb timeline.History
	testutil.Eventually(t, waitTime, "both replicas' events on both", func() bool {
		ha, hb = eventsOf(t, a, "s1"), eventsOf(t, b, "s1")
		return len(ha.Events) == 6 && ids(ha) == ids(hb)
	})
	if ha.Kept != "memory+redis" || ha.Events[0].Replica == ha.Events[5].Replica {
		t.Fatalf("kept %s; replicas %q and %q: want two", ha.Kept, ha.Events[0].Replica, ha.Events[5].Replica)
	}
	if keys, _ := rs.Do("KEYS", "*tl:s1"); !strings.Contains(keys, "{") {
		t.Errorf("the history's key %q is not hash-tagged", keys)
	}
}
