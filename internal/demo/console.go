package demo

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/handoff/webhook"
)

// ConsoleOptions configure the demo agent console.
type ConsoleOptions struct {
	// SigningSecret, when set ("whsec_…"), makes the console verify the
	// Standard Webhooks signature of every notification and refuse (401)
	// those that do not verify.
	SigningSecret string
	// Token, when set, is the bearer token notifications must carry
	// (HANDOFF_TOKEN).
	Token string
	// Tolerance is how far webhook-timestamp may be from now. Default 5m.
	Tolerance time.Duration
	Log       *zap.Logger
}

// Received is one notification as the console got it.
type Received struct {
	Seq       int             `json:"seq"`
	At        time.Time       `json:"at"`
	Path      string          `json:"path"`
	Query     string          `json:"query"`
	Offline   bool            `json:"offline"` // ?offline=true
	WebhookID string          `json:"webhookId"`
	Timestamp string          `json:"webhookTimestamp"`
	Signed    bool            `json:"signed"`            // a webhook-signature header came
	Verified  bool            `json:"verified"`          // ... and it verified with the secret
	Refused   string          `json:"refused,omitempty"` // why the console answered non-2xx
	Duplicate bool            `json:"duplicate"`         // this webhook-id was accepted before (a retry)
	Event     string          `json:"event"`             // client.offline | client.online
	SessionID string          `json:"sessionId"`         // from the body
	BotID     string          `json:"botId"`             // from the body
	Reason    string          `json:"reason,omitempty"`  // offline: disconnected | inactive
	Text      string          `json:"text,omitempty"`    // online: the return message
	Body      json.RawMessage `json:"body"`              // as received
	Trace     string          `json:"traceparent,omitempty"`
}

// Console is the demo agent console: it takes the sidecar's POST /expire and
// POST /message (any POST path, in fact) and shows them live at / (Server-Sent
// Events at /events, JSON at /notifications).
type Console struct {
	o   ConsoleOptions
	key []byte

	mu      sync.Mutex
	list    []Received
	ids     map[string]bool
	changed chan struct{} // closed and replaced on every append
	done    chan struct{}
	once    sync.Once
}

// NewConsole builds the console. A SigningSecret that is not "whsec_<base64>"
// is an error.
func NewConsole(o ConsoleOptions) (*Console, error) {
	if o.Tolerance <= 0 {
		o.Tolerance = 5 * time.Minute
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	c := &Console{o: o, ids: map[string]bool{}, changed: make(chan struct{}), done: make(chan struct{})}
	if o.SigningSecret != "" {
		key, err := webhook.DecodeSecret(o.SigningSecret)
		if err != nil {
			return nil, errors.New(`demo console: the signing secret must be "whsec_" followed by a base64 key`)
		}
		c.key = key
	}
	return c, nil
}

// Close ends the live streams (/events) so that a server can shut down.
func (c *Console) Close() { c.once.Do(func() { close(c.done) }) }

// Handler returns the console's routes.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		http.ServeFileFS(w, r, static, "console.html")
	})
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /events", c.serveEvents)
	mux.HandleFunc("GET /notifications", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"notifications": c.Notifications()})
	})
	mux.HandleFunc("POST /{path...}", c.serveNotification)
	return mux
}

// Notifications returns everything received so far, oldest first.
func (c *Console) Notifications() []Received {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Received(nil), c.list...)
}

// Wait returns the first notification (oldest first, accepted or not) for
// which match is true, waiting for it until ctx ends.
func (c *Console) Wait(ctx context.Context, match func(Received) bool) (Received, error) {
	seen := 0
	for {
		c.mu.Lock()
		list, changed := c.list, c.changed
		c.mu.Unlock()
		for ; seen < len(list); seen++ {
			if match(list[seen]) {
				return list[seen], nil
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Received{}, ctx.Err()
		}
	}
}

func (c *Console) serveNotification(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	n := Received{
		At:        time.Now(),
		Path:      r.URL.Path,
		Query:     r.URL.RawQuery,
		Offline:   r.URL.Query().Get("offline") == "true",
		WebhookID: r.Header.Get(webhook.HeaderID),
		Timestamp: r.Header.Get(webhook.HeaderTimestamp),
		Signed:    r.Header.Get(webhook.HeaderSignature) != "",
		Trace:     r.Header.Get("traceparent"),
		Body:      json.RawMessage(body),
	}
	var doc struct {
		Event     string `json:"event"`
		SessionID string `json:"sessionId"`
		BotID     string `json:"botId"`
		Reason    string `json:"reason"`
		Text      string `json:"text"`
	}
	code := http.StatusNoContent
	if err := json.Unmarshal(body, &doc); err != nil {
		n.Body, _ = json.Marshal(string(body))
		n.Refused, code = "body is not JSON: "+err.Error(), http.StatusBadRequest
	}
	n.Event, n.SessionID, n.BotID, n.Reason, n.Text = doc.Event, doc.SessionID, doc.BotID, doc.Reason, doc.Text
	if c.o.Token != "" {
		got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if subtle.ConstantTimeCompare([]byte(got), []byte(c.o.Token)) != 1 {
			n.Refused, code = "missing or wrong bearer token", http.StatusUnauthorized
		}
	}
	if c.key != nil && n.Refused == "" {
		if err := webhook.Verify(c.key, r.Header, body, time.Now(), c.o.Tolerance); err != nil {
			n.Refused, code = err.Error(), http.StatusUnauthorized
		} else {
			n.Verified = true
		}
	}

	c.mu.Lock()
	if n.Refused == "" && n.WebhookID != "" {
		n.Duplicate = c.ids[n.WebhookID]
		c.ids[n.WebhookID] = true
	}
	n.Seq = len(c.list) + 1
	c.list = append(c.list, n)
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()

	c.o.Log.Info("demo console: notification",
		zap.String("path", n.Path), zap.String("event", n.Event), zap.String("session", n.SessionID),
		zap.Bool("verified", n.Verified), zap.Bool("duplicate", n.Duplicate), zap.String("refused", n.Refused))
	if n.Refused != "" {
		http.Error(w, n.Refused, code)
		return
	}
	w.WriteHeader(code)
}

// serveEvents streams every notification as a Server-Sent Event: the ones
// after Last-Event-ID (all of them on a first connect), then new ones live.
func (c *Console) serveEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	sent, _ := strconv.Atoi(r.Header.Get("Last-Event-ID"))
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		c.mu.Lock()
		list, changed := c.list, c.changed
		c.mu.Unlock()
		for ; sent < len(list); sent++ {
			b, _ := json.Marshal(list[sent])
			if _, err := fmt.Fprintf(w, "id: %d\nevent: notification\ndata: %s\n\n", list[sent].Seq, b); err != nil {
				return
			}
		}
		fl.Flush()
		select {
		case <-changed:
		case <-ping.C:
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil {
				return
			}
		case <-r.Context().Done():
			return
		case <-c.done:
			return
		}
	}
}
