package app

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
)

// getReadyz answers /readyz's status code and body.
func getReadyz(t *testing.T, admin string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Upstream and platform up: ready, one [+] line per check, the platform's
// naming the last delivery.
func TestReadyzBothUp(t *testing.T) {
	s := startStack(t, newPlatform(t, nil), nil)
	c := s.dial("?sessionId=r1&botId=b", nil)
	s.echo(c, handover)
	s.close(c)
	s.waitRequests(1)
	testutil.Eventually(t, waitTime, "/readyz to name the delivery", func() bool {
		code, body := getReadyz(t, s.admin)
		return code == 200 && strings.HasPrefix(body, "ready\n[+]upstream ok: ") &&
			strings.Contains(body, "\n[+]platform ok: last attempt delivered") && strings.Contains(body, "\n[+]state ok: embedded ")
	})
}

// A platform whose host does not resolve: warned of at start-up, reported
// by /readyz as failing, and still 200: a platform outage must not take the
// pod out of its Service. Attempts that all fail say so too.
func TestReadyzPlatformDown(t *testing.T) {
	s := startStack(t, newPlatform(t, nil), map[string]string{"HANDOFF_URL": "http://platform.invalid:8000/api"})
	testutil.Eventually(t, waitTime, "the start-up warning", func() bool {
		return s.logs.FilterMessageSnippet("HANDOFF_URL's host does not resolve").Len() == 1
	})
	code, body := getReadyz(t, s.admin)
	if code != 200 || !strings.HasPrefix(body, "ready\n") ||
		!strings.Contains(body, "\n[-]platform failing (not a readiness failure): its host does not resolve") {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	for i := range 3 {
		c := s.dial("?sessionId=p"+string(rune('0'+i))+"&botId=b", nil)
		s.echo(c, handover)
		s.close(c)
	}
	testutil.Eventually(t, waitTime, "/readyz to report the failed attempts", func() bool {
		code, body = getReadyz(t, s.admin)
		return code == 200 && strings.Contains(body, "the last 3 attempts failed")
	})
}

// An upstream that refuses connections: warned of at start-up, then not
// ready (503, naming the upstream) after two failed dials in a row, and
// ready again once it listens.
func TestReadyzUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // refused from now on
	s := startStack(t, newPlatform(t, nil), map[string]string{"UPSTREAM_URL": "http://" + addr})
	testutil.Eventually(t, waitTime, "the start-up warning", func() bool {
		return s.logs.FilterMessageSnippet("upstream unreachable at start-up").Len() == 1
	})
	testutil.Eventually(t, 3*upstreamCheckEvery, "/readyz to fail", func() bool {
		code, body := getReadyz(t, s.admin)
		return code == http.StatusServiceUnavailable && strings.HasPrefix(body, "not ready: upstream: "+addr+": 2 dials in a row failed") &&
			strings.Contains(body, "\n[-]upstream failing: ") && strings.Contains(body, "\n[+]platform ok: ")
	})
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	testutil.Eventually(t, 2*upstreamCheckEvery+time.Second, "/readyz to be ready again", func() bool {
		code, body := getReadyz(t, s.admin)
		return code == 200 && strings.HasPrefix(body, "ready\n[+]upstream ok: "+addr+" accepted a connection")
	})
}
