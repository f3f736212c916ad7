package app

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
)

// TestLogsOneLinePerDecisionWithoutContent: over a hand-over, an absence
// (its /expire refused once with 503, then delivered) and a return, the log
// has exactly one line per presence transition and one per delivery
// outcome, each with the session and bot ids, and the text the client
// typed (in a frame and in an HTTP body) appears in no line at all.
func TestLogsOneLinePerDecisionWithoutContent(t *testing.T) {
	p := newPlatform(t, func(i int) int {
		if i == 0 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	s := startStack(t, p, map[string]string{"LOG_LEVEL": "debug"})
	const secret = "cartao 4111-1111-1111-1111 segredo"
	c := s.dial("?sessionId=s1&botId=b1", nil)
	s.echo(c, handover)
	s.echo(c, fmt.Sprintf(`{"action":"message","data":{"text":%q}}`, secret))
	resp, err := http.Post("http://"+s.proxy+"/webchat/message", "application/json",
		strings.NewReader(fmt.Sprintf(`{"sessionId":"s1","botId":"b1","text":%q}`, secret)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s.close(c)
	s.waitRequests(2) // /expire: 503, 200
	c = s.dial("?sessionId=s1&botId=b1", nil)
	s.waitRequests(3) // /message
	testutil.Eventually(t, waitTime, "the last delivery's log line", func() bool {
		return s.logs.FilterMessage("handoff: notification delivered").Len() == 2
	})
	s.close(c)

	for msg, n := range map[string]int{
		"presence: hand-over started":          1,
		"presence: client absent":              1,
		"presence: client back":                1,
		"handoff: delivery failed, will retry": 1,
		"handoff: notification delivered":      2,
	} {
		lines := s.logs.FilterMessage(msg).All()
		if len(lines) != n {
			t.Errorf("%d lines %q, want %d", len(lines), msg, n)
		}
		for _, l := range lines {
			m := l.ContextMap()
			if m["session"] != "s1" || m["bot"] != "b1" {
				t.Errorf("%q without the ids: %v", msg, m)
			}
			if id, _ := m["trace_id"].(string); len(id) != 32 {
				t.Errorf("%q without a trace id: %v", msg, m)
			}
		}
	}
	for _, l := range s.logs.All() {
		if line := fmt.Sprint(l.Message, l.ContextMap()); strings.Contains(line, "4111") || strings.Contains(line, "segredo") {
			t.Errorf("a log line shows what the client typed: %s", line)
		}
	}
}

// TestStartupLineRedactsURLPasswords: the start-up line names the upstream
// in the one redacted form, never with its password.
func TestStartupLineRedactsURLPasswords(t *testing.T) {
	up := strings.Replace(echoUpstream(t), "://", "://bot:hunter2@", 1)
	s := startStack(t, newPlatform(t, nil), map[string]string{"UPSTREAM_URL": up})
	testutil.Eventually(t, waitTime, "the start-up line", func() bool {
		return s.logs.FilterMessage("presence-sidecar started").Len() == 1
	})
	line := s.logs.FilterMessage("presence-sidecar started").All()[0]
	if got := line.ContextMap()["upstream"]; got != strings.Replace(up, "hunter2", "xxxxx", 1) {
		t.Errorf("start-up line shows upstream %q", got)
	}
}
