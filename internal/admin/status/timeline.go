package status

import (
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"time"

	"github.com/presence-sidecar/presence-sidecar/internal/admin"
	"github.com/presence-sidecar/presence-sidecar/timeline"
)

//go:embed timeline.html
var timelineHTML string

// Timeline is what the session page reads (admin.Presence has it).
type Timeline interface {
	Timeline(ctx context.Context, id string) timeline.History
}

// NewTimeline serves GET /sessions/{id}: one session's recent history,
// oldest first, server-rendered like the status page and guarded by the
// same token (token "" leaves it open).
func NewTimeline(token string, src Timeline) http.Handler {
	tpl := template.Must(template.New("timeline").Funcs(template.FuncMap{
		"full":     func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
		"clock":    func(t time.Time) string { return t.UTC().Format("15:04:05.000") },
		"describe": describe,
	}).Parse(timelineHTML))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'")
		if token != "" && !admin.HasToken(r, token) {
			h.Set("WWW-Authenticate", `Basic realm="presence-sidecar status (password: ADMIN_TOKEN)", charset="UTF-8"`)
			http.Error(w, "the session page needs ADMIN_TOKEN (as a bearer token, or as the password of HTTP Basic authentication)", http.StatusUnauthorized)
			return
		}
		hist := src.Timeline(r.Context(), r.PathValue("id"))
		h.Set("Content-Type", "text/html; charset=utf-8")
		if err := tpl.Execute(w, hist); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
}

// describe is one event in words.
func describe(e timeline.Event) string {
	switch e.Kind {
	case timeline.ConnOpened:
		return fmt.Sprintf("connection %d opened", e.Conn)
	case timeline.ConnClosed:
		return fmt.Sprintf("connection %d closed (%s)", e.Conn, e.Reason)
	case timeline.ProbeTimeout:
		return fmt.Sprintf("connection %d did not answer the liveness probe; the sidecar closes it", e.Conn)
	case timeline.Activity:
		s := plural(e.Messages, "message")
		if e.Requests > 0 {
			s += " and " + plural(e.Requests, "HTTP request")
		}
		if e.Until != nil {
			s += fmt.Sprintf(" from the client between %s and %s", e.At.UTC().Format("15:04:05"), e.Until.UTC().Format("15:04:05"))
		}
		return s
	case timeline.HandoffOn:
		return "hand-over to a human started"
	case timeline.HandoffOff:
		return "hand-over to a human ended"
	case timeline.Absent:
		return fmt.Sprintf("absent (%s), episode %d", e.Reason, e.Episode)
	case timeline.Returned:
		return fmt.Sprintf("back after absence episode %d", e.Episode)
	case timeline.Queued:
		return fmt.Sprintf("%s of episode %d queued", e.Notification, e.Episode)
	case timeline.Attempted:
		return fmt.Sprintf("attempt %d failed: %s; next %s", e.Attempt, attemptResult(e), nextAt(e))
	case timeline.Delivered:
		return fmt.Sprintf("delivered at attempt %d: %s", e.Attempt, attemptResult(e))
	case timeline.DeadLettered:
		return fmt.Sprintf("dead-lettered at attempt %d: %s", e.Attempt, attemptResult(e))
	}
	return string(e.Kind)
}

func attemptResult(e timeline.Event) string {
	s := fmt.Sprintf("%.0f ms", e.DurationMs)
	if e.Status != 0 {
		s = fmt.Sprintf("HTTP %d in %s", e.Status, s)
	}
	if e.Error != "" {
		s += ", " + e.Error
	}
	return s
}

func nextAt(e timeline.Event) string {
	if e.NextAttempt == nil {
		return "unknown"
	}
	return e.NextAttempt.UTC().Format("15:04:05")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
