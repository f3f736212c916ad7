package readiness

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// The platform fails only when every one of the recent attempts failed: one
// success among them means it is reachable and the rest are being retried.
func TestPlatformFailsOnlyWhenRecentAttemptsAllFailed(t *testing.T) {
	now := time.Unix(1e9, 0)
	p := NewPlatform("platform.example")
	p.now = func() time.Time { return now }
	if s := p.Status(); !s.OK || s.Critical || s.Detail != "no delivery attempted yet" {
		t.Fatalf("fresh: %+v", s)
	}
	p.Observe(true, "")
	now = now.Add(time.Minute)
	p.Observe(false, "503 Service Unavailable")
	p.Observe(false, "503 Service Unavailable")
	if s := p.Status(); !s.OK || !strings.Contains(s.Detail, "last attempt failed 0s ago: 503") {
		t.Fatalf("two failures after a success: %+v", s)
	}
	now = now.Add(time.Second)
	p.Observe(false, "connection refused")
	s := p.Status()
	if s.OK || !strings.Contains(s.Detail, "the last 3 attempts failed, the last 0s ago: connection refused (last delivered 1m1s ago)") {
		t.Fatalf("three failures: %+v", s)
	}
	if got := s.Line(); !strings.HasPrefix(got, "[-]platform failing (not a readiness failure): ") {
		t.Fatalf("line %q", got)
	}
	p.Observe(true, "")
	if s := p.Status(); !s.OK {
		t.Fatalf("delivered again: %+v", s)
	}
	p.resolve = func(context.Context, string) ([]string, error) { return nil, errors.New("no such host") }
	if err := p.Resolve(context.Background(), time.Second); err == nil {
		t.Fatal("Resolve: no error")
	}
	if s := p.Status(); s.OK || !strings.HasPrefix(s.Detail, "its host does not resolve: no such host; last attempt delivered") {
		t.Fatalf("unresolvable: %+v", s)
	}
}

// An address literal is not looked up.
func TestPlatformIPNeedsNoLookup(t *testing.T) {
	p := NewPlatform("127.0.0.1")
	p.resolve = func(context.Context, string) ([]string, error) { t.Fatal("looked up"); return nil, nil }
	if err := p.Resolve(context.Background(), time.Second); err != nil {
		t.Fatal(err)
	}
}
