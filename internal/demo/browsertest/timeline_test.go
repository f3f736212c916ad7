package browsertest

import (
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/presence-sidecar/presence-sidecar/store"
)

// A client is handed over, talks, closes the tab; once the /expire is
// delivered, the session's timeline page (/sessions/{id} on the admin
// listener) shows it all in order, with the notification's webhook-id. Its
// screenshot is test-artifacts/timeline.png (docs/timeline.png with
// UPDATE_SCREENSHOTS).
func TestBrowserSessionTimeline(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	session := "web-5c2e81"
	chat := openChat(t, s, session)
	handOver(t, s, chat, session)
	chat.say("ainda estou aqui")
	chat.close()
	off := waitNote(t, s, store.KindOffline, session, interval+8*time.Second)

	tl := adminTab(t, s, "/sessions/"+url.PathEscape(session))
	want := []string{"conn.opened", "handoff.started", "conn.closed", "absent", "notification.queued", "notification.delivered"}
	var kinds []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		tl.do("opening the session's timeline", chromedp.Navigate(s.StatusURL+"/sessions/"+url.PathEscape(session)))
		kinds = eval[[]string](tl, `[...document.querySelectorAll('#events tbody tr')].map(r => r.dataset.kind)`)
		if slices.Contains(kinds, "notification.delivered") || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// want, in this order, among what the page lists (activity summaries between).
	i := 0
	for _, k := range kinds {
		if i < len(want) && k == want[i] {
			i++
		}
	}
	if i != len(want) {
		t.Fatalf("the page lists %v; want %v in this order", kinds, want)
	}
	if got := eval[string](tl, `document.getElementById('session').textContent`); got != session {
		t.Errorf("the page names session %q", got)
	}
	found := eval[bool](tl, fmt.Sprintf(`[...document.querySelectorAll('#events td code')].some(c => c.textContent === %q)`, off.WebhookID))
	if !found {
		t.Errorf("the delivered /expire's webhook-id %s is not on the page", off.WebhookID)
	}
	root := repoRoot(t)
	screenshot(t, tl, filepath.Join(root, "test-artifacts", "timeline.png"), filepath.Join(root, "docs", "timeline.png"))
}
