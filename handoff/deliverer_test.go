package handoff

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
	"github.com/presence-sidecar/presence-sidecar/store"
)

// New refuses bad options with an error that names the Options field (not an
// environment variable: the config layer names those) and never shows the
// signing secret or a URL's password.
func TestNewRefusesBadOptionsNamingTheField(t *testing.T) {
	st := store.NewMemory()
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Store: st}, `handoff: URL: want an absolute http:// or https:// URL`},
		{Options{Store: st, URL: "platform:8000"}, "handoff: URL: "},
		{Options{Store: st, URL: "ftp://platform"}, `handoff: URL: want an absolute http:// or https:// URL`},
		{Options{Store: st, URL: "ftp://op:hunter2@platform"}, `handoff: URL: want an absolute http:// or https:// URL`},
		{Options{Store: st, URL: "http://op:hunter2@platform:port"}, `handoff: URL: want an absolute http:// or https:// URL`},
		{Options{Store: st, URL: "http://p", SigningSecret: "s3cr3t-plain"}, "handoff: SigningSecret (value not shown): "},
		{Options{Store: st, URL: "http://p", SigningSecret: "whsec_!!not-base64!!"}, "handoff: SigningSecret (value not shown): "},
		{Options{Store: st, URL: "http://p", SigningSecret: "whsec_"}, "handoff: SigningSecret (value not shown): "},
		{Options{Store: st, URL: "http://p", Timeout: -time.Second}, "handoff: Timeout: -1s: want a positive duration"},
		{Options{Store: st, URL: "http://p", RetryMaxDelay: -time.Second}, "handoff: RetryMaxDelay: "},
		{Options{Store: st, URL: "http://p", RetryFor: -time.Second}, "handoff: RetryFor: "},
		{Options{Store: st, URL: "http://p", FirstRetry: -time.Second}, "handoff: FirstRetry: "},
		{Options{Store: st, URL: "http://p", Concurrency: -1}, "handoff: Concurrency: -1: "},
		{Options{Store: st, URL: "http://p", ExpirePath: "http://other/expire"}, `handoff: ExpirePath: want a path starting with /`},
		{Options{Store: st, URL: "http://p", MessagePath: "//other/message"}, `handoff: MessagePath: want a path starting with /, not a URL`},
		{Options{URL: "http://p"}, "store"},
	} {
		_, err := New(c.o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error naming %s", c.o, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "HANDOFF_") {
			t.Errorf("error names an environment variable: %v", err)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error reveals the URL's password: %v", err)
		}
		if v := strings.TrimPrefix(c.o.SigningSecret, "whsec_"); err != nil && v != "" && strings.Contains(err.Error(), v) {
			t.Errorf("error reveals the secret: %v", err)
		}
	}
	if _, err := New(Options{Store: st, URL: "https://p/api", SigningSecret: testSecret}); err != nil {
		t.Errorf("valid options: %v", err)
	}
}

func TestDepthAndOneRunAtATime(t *testing.T) {
	st := store.NewMemory()
	commit(t, st, nil, offline("a", "1"), offline("b", "2"), online("a", "3"))
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	o := baseOptions(st, p.URL, nil)
	o.FirstRetry = time.Hour
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if d.Depth() != 3 {
		t.Errorf("Depth before Run = %d", d.Depth())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx) }()
	testutil.Eventually(t, 10*time.Second, "two heads attempted", func() bool { return p.count() == 2 })
	if d.Depth() != 3 {
		t.Errorf("Depth = %d, want 3", d.Depth())
	}
	if err := d.Run(ctx); err == nil {
		t.Error("a second concurrent Run was allowed")
	}
	time.Sleep(50 * time.Millisecond)
	if p.count() != 2 {
		t.Errorf("%d attempts: a later note was sent before its session's head, or a retry came early", p.count())
	}
	cancel()
	if err := <-errc; err != nil {
		t.Error(err)
	}
}
