// Package admin serves the operator's listener: health and readiness probes,
// Prometheus metrics, the status page and the /v1/ API.
package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync/atomic"

	"github.com/presence-sidecar/presence-sidecar/internal/readiness"
	"github.com/presence-sidecar/presence-sidecar/presence"
	"github.com/presence-sidecar/presence-sidecar/store"
)

// Server holds what the admin listener shows and changes. Presence and
// Outbox are nil when presence monitoring is off.
type Server struct {
	Token    string
	Presence Presence
	Outbox   Outbox
	Cluster  Cluster      // nil in the embedded mode
	Metrics  http.Handler // /metrics
	Status   http.Handler // / (the status page)
	Session  http.Handler // /sessions/{id} (a session's timeline page, status.NewTimeline)
	Assets   http.Handler // /assets/ (the pages' script, status.Assets)
	// Ready gives /readyz's checks (package readiness).
	Ready func() []readiness.Status

	draining atomic.Bool
}

// Drain makes /readyz fail from now on (SIGTERM).
func (s *Server) Drain() { s.draining.Store(true) }

// Handler returns the admin routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { writeText(w, http.StatusOK, "ok") })
	mux.HandleFunc("GET /readyz", s.readyz)
	if s.Metrics != nil {
		mux.Handle("GET /metrics", s.Metrics)
	}
	if s.Status != nil {
		mux.Handle("GET /{$}", s.Status)
	}
	if s.Session != nil {
		mux.Handle("GET /sessions/{id}", s.Session)
	}
	if s.Assets != nil {
		mux.Handle("GET /assets/", s.Assets)
	}
	api := http.NewServeMux()
	api.HandleFunc("GET /v1/sessions", s.sessions)
	api.HandleFunc("GET /v1/sessions/{id}", s.session)
	api.HandleFunc("PUT /v1/sessions/{id}/handoff", s.handoff(true))
	api.HandleFunc("DELETE /v1/sessions/{id}/handoff", s.handoff(false))
	api.HandleFunc("GET /v1/bots/{botId}/presence", s.getBot)
	api.HandleFunc("PUT /v1/bots/{botId}/presence", s.putBot)
	api.HandleFunc("GET /v1/notifications/dead", s.deadLetters)
	api.HandleFunc("POST /v1/notifications/dead/{id}/replay", s.replay)
	api.HandleFunc("GET /v1/notifications/recent", s.recent)
	api.HandleFunc("GET /v1/replicas", s.replicas)
	api.HandleFunc("GET /v1/sessions/{id}/events", s.sessionEvents) // timeline.go
	mux.Handle("/v1/", s.authorize(api))
	mux.Handle("/debug/pprof/", s.authorize(profiles()))
	return mux
}

// profiles serves Go's runtime profiles (heap, CPU, goroutines, ...), the
// same token's: they show the process's insides, never message contents.
// The handlers are named rather than the package's DefaultServeMux
// registration used, so nothing else serves them.
func profiles() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index) // the named profiles: heap, allocs, goroutine, ...
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile) // CPU, ?seconds=N
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

// readyz answers 503 while draining and while a critical check fails (the
// upstream refuses connections: no traffic can be served); otherwise 200.
// Its first line is the verdict, then one line per check. Trouble with the
// platform or the state store degrades presence but never the data plane,
// so it is reported without taking the sidecar out of its load balancer.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeText(w, http.StatusServiceUnavailable, "draining")
		return
	}
	var checks []readiness.Status
	if s.Ready != nil {
		checks = s.Ready()
	}
	code, verdict := http.StatusOK, "ready"
	var degraded, down []string
	for _, c := range checks {
		switch {
		case c.OK:
		case c.Critical:
			down = append(down, c.Name+": "+c.Detail)
		case c.Name == "state":
			degraded = append(degraded, c.Detail)
		}
	}
	if len(down) > 0 {
		code, verdict = http.StatusServiceUnavailable, "not ready: "+strings.Join(down, "; ")
	} else if len(degraded) > 0 {
		verdict = "ready, presence degraded: " + strings.Join(degraded, "; ")
	}
	lines := []string{verdict}
	for _, c := range checks {
		lines = append(lines, c.Line())
	}
	writeText(w, code, strings.Join(lines, "\n"))
}

// authorize guards /v1/ and /debug/pprof/ with ADMIN_TOKEN, compared in
// constant time.
func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.Token == "" {
			writeError(w, http.StatusForbidden, "the /v1/ API and /debug/pprof/ are off: set ADMIN_TOKEN to turn them on")
			return
		}
		if !HasToken(r, s.Token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="presence-sidecar"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) presenceOn(w http.ResponseWriter) bool {
	if s.Presence == nil {
		writeError(w, http.StatusConflict, "presence monitoring is off (PRESENCE_ENABLED=false)")
		return false
	}
	return true
}

func (s *Server) sessions(w http.ResponseWriter, r *http.Request) {
	if s.presenceOn(w) {
		writeJSON(w, http.StatusOK, map[string]any{"sessions": s.Presence.Sessions()})
	}
}

func (s *Server) session(w http.ResponseWriter, r *http.Request) {
	if !s.presenceOn(w) {
		return
	}
	v, ok := s.Presence.Session(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "no such session")
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) handoff(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.presenceOn(w) {
			return
		}
		id := r.PathValue("id")
		if err := s.Presence.SetHandoff(id, r.URL.Query().Get("botId"), on); err != nil {
			writeError(w, statusOf(err, http.StatusConflict), err.Error())
			return
		}
		v, _ := s.Presence.Session(id)
		writeJSON(w, http.StatusOK, v)
	}
}

func (s *Server) getBot(w http.ResponseWriter, r *http.Request) {
	if s.presenceOn(w) {
		writeJSON(w, http.StatusOK, s.Presence.BotSettings(r.PathValue("botId")))
	}
}

// putBot changes the fields the body names (presence.ParseBotSettingsChange).
// A field given as null or "" is cleared: the bot falls back to
// PRESENCE_BOTS_FILE, then the environment (a blank return message means
// the default text).
func (s *Server) putBot(w http.ResponseWriter, r *http.Request) {
	if !s.presenceOn(w) {
		return
	}
	set, clear, err := presence.ParseBotSettingsChange(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	got, err := s.Presence.PutBotSettings(r.PathValue("botId"), set, clear...)
	if err != nil {
		writeError(w, statusOf(err, http.StatusBadRequest), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, got)
}

func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request) {
	if !s.presenceOn(w) {
		return
	}
	dead, err := s.Outbox.DeadLetters()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"notifications": dead})
}

func (s *Server) recent(w http.ResponseWriter, r *http.Request) {
	if !s.presenceOn(w) {
		return
	}
	recent, err := s.Outbox.Recent(100)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"notifications": recent})
}

// replicas lists cluster mode's registry: each replica's short id, its host
// and its lease.
func (s *Server) replicas(w http.ResponseWriter, r *http.Request) {
	if s.Cluster == nil {
		writeError(w, http.StatusConflict, "cluster mode is off (REDIS_URL unset): this sidecar is the only replica")
		return
	}
	rs, err := s.Cluster.Replicas()
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "Redis: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"replicas": rs})
}

func (s *Server) replay(w http.ResponseWriter, r *http.Request) {
	if !s.presenceOn(w) {
		return
	}
	n, err := s.Outbox.Replay(r.PathValue("id"))
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "no dead letter with that id")
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
	default:
		writeJSON(w, http.StatusOK, n)
	}
}

// statusOf is the HTTP status of an engine's error: 414 for an id over the
// bound (as nginx answers an over-long request line), else def.
func statusOf(err error, def int) int {
	if errors.Is(err, presence.ErrIDTooLong) {
		return http.StatusRequestURITooLong
	}
	return def
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg + "\n"))
}
