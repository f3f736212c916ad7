package webhook

import (
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/store"
)

var t0 = time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)

// The bodies byte for byte: field order, RFC 3339 in UTC at second
// precision, and absent times omitted rather than sent as year 1.
func TestRenderBodiesByteForByte(t *testing.T) {
	brt := time.FixedZone("BRT", -3*3600)
	for _, c := range []struct {
		name string
		n    store.Notification
		want string
	}{
		{"offline", store.Notification{ID: "msg_off", Kind: store.KindOffline, SessionID: "sess-1", BotID: "bot-1", Episode: 1,
			Reason: "disconnected", LastSeenAt: t0.In(brt), DetectedAt: t0.Add(2*time.Minute + 300*time.Millisecond),
			Seq: 7, Attempts: 3, CreatedAt: time.Now(), Text: "ignored for offline"},
			`{"event":"client.offline","sessionId":"sess-1","botId":"bot-1","offline":true,"reason":"disconnected","lastSeenAt":"2025-03-14T15:09:26Z","detectedAt":"2025-03-14T15:11:26Z"}`},
		{"offline never seen", store.Notification{Kind: store.KindOffline, SessionID: "s", Reason: "inactive", DetectedAt: t0},
			`{"event":"client.offline","sessionId":"s","botId":"","offline":true,"reason":"inactive","detectedAt":"2025-03-14T15:09:26Z"}`},
		{"online", store.Notification{ID: "msg_on", Kind: store.KindOnline, SessionID: "sess-1", BotID: "bot-1", Episode: 1,
			Text: "O cliente voltou a ficar online.", OfflineSince: t0.Add(2 * time.Minute), DetectedAt: t0.Add(5 * time.Minute), Reason: "ignored for online"},
			`{"event":"client.online","sessionId":"sess-1","botId":"bot-1","text":"O cliente voltou a ficar online.","offlineSince":"2025-03-14T15:11:26Z","detectedAt":"2025-03-14T15:14:26Z"}`},
	} {
		got, err := Render(c.n)
		if err != nil || string(got) != c.want {
			t.Errorf("%s: Render = %s, %v\nwant %s", c.name, got, err, c.want)
		}
	}
}

func TestRenderRejectsBadNotes(t *testing.T) {
	if _, err := Render(store.Notification{Kind: "client.bogus", SessionID: "s"}); err == nil {
		t.Error("unknown kind rendered")
	}
	if _, err := Render(store.Notification{Kind: store.KindOnline}); err == nil {
		t.Error("note without session rendered")
	}
}
