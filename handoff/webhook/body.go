package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/presence-sidecar/presence-sidecar/store"
)

// The bodies. Field order is fixed by the struct; times are RFC 3339 in UTC.
type offlineBody struct {
	Event      store.Kind `json:"event"`
	SessionID  string     `json:"sessionId"`
	BotID      string     `json:"botId"`
	Offline    bool       `json:"offline"`
	Reason     string     `json:"reason"`
	LastSeenAt string     `json:"lastSeenAt,omitempty"`
	DetectedAt string     `json:"detectedAt"`
}

type onlineBody struct {
	Event        store.Kind `json:"event"`
	SessionID    string     `json:"sessionId"`
	BotID        string     `json:"botId"`
	Text         string     `json:"text"`
	OfflineSince string     `json:"offlineSince,omitempty"`
	DetectedAt   string     `json:"detectedAt"`
}

// Render returns the JSON body of n: a client.offline body for the /expire
// notification, a client.online body (the return message) for /message. It
// depends on what was decided only, never on delivery bookkeeping (Seq,
// attempts, creation), so every retry sends the same bytes.
func Render(n store.Notification) ([]byte, error) {
	if n.SessionID == "" {
		return nil, errors.New("notification has no session id")
	}
	switch n.Kind {
	case store.KindOffline:
		return json.Marshal(offlineBody{
			Event: n.Kind, SessionID: n.SessionID, BotID: n.BotID, Offline: true, Reason: n.Reason,
			LastSeenAt: rfc3339(n.LastSeenAt), DetectedAt: rfc3339(n.DetectedAt),
		})
	case store.KindOnline:
		return json.Marshal(onlineBody{
			Event: n.Kind, SessionID: n.SessionID, BotID: n.BotID, Text: n.Text,
			OfflineSince: rfc3339(n.OfflineSince), DetectedAt: rfc3339(n.DetectedAt),
		})
	}
	return nil, fmt.Errorf("unknown notification kind %q", n.Kind)
}

// rfc3339 formats t in UTC with second precision: the most widely parsed form.
// A zero time gives "", which the bodies omit rather than send year 1.
func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
