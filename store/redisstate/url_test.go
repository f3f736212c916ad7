package redisstate

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
	"github.com/presence-sidecar/presence-sidecar/internal/testutil/redistest"
)

// A Redis that is away when the sidecar starts does not stop it: Dial
// returns within its first-connection wait, calls fail at once with
// ErrNotConnected, and once Redis is up they work, with onConnect told.
func TestDialRidesOutARedisAwayAtStart(t *testing.T) {
	srv := redistest.Start(t)
	srv.Kill()
	connected := make(chan struct{})
	start := time.Now()
	s, err := Dial("redis://"+srv.Addr, Options{Prefix: "t:"}, func() { close(connected) })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if d := time.Since(start); d > firstConnectWait+500*time.Millisecond {
		t.Fatalf("Dial took %s with Redis away", d)
	}
	ctx := context.Background()
	callStart := time.Now()
	if _, _, err := s.Renew(ctx, "r", time.Second); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("a call before the first connection: %v", err)
	}
	if d := time.Since(callStart); d > 50*time.Millisecond {
		t.Fatalf("a call before the first connection took %s", d)
	}
	srv.Restart()
	select {
	case <-connected:
	case <-time.After(10 * time.Second):
		t.Fatal("never connected")
	}
	testutil.Eventually(t, 5*time.Second, "a call through the late client", func() bool {
		_, _, err := s.Renew(ctx, "r", time.Second)
		return err == nil
	})
}

// The URL forms: malformed ones and prefixes that would break the hash tags
// are refused before any connection.
func TestDialRefusesBadInput(t *testing.T) {
	if _, err := Dial("ftp://h", Options{}, nil); err == nil {
		t.Error("ftp:// accepted")
	}
	if _, err := Dial("redis://h:1", Options{Prefix: "a{b}:"}, nil); err == nil {
		t.Error("a prefix with braces accepted")
	}
	o, err := ParseURL("redis://:pw@s1:26379?addr=s2:26379&master_set=main")
	if err != nil || o.Sentinel.MasterSet != "main" || o.Sentinel.Password != "pw" || len(o.InitAddress) != 2 || !o.DisableCache {
		t.Errorf("Sentinel form: %+v %v", o, err)
	}
}
