package admin

import (
	"net/http"
	"strconv"

	"github.com/presence-sidecar/presence-sidecar/store"
)

// sessionEvents answers GET /v1/sessions/{id}/events: the session's recent
// history, oldest first (package timeline; README, "Admin listener"). An
// unknown session has an empty history, not a 404: its history may outlive
// the session, and a session forgotten still explains what it did.
func (s *Server) sessionEvents(w http.ResponseWriter, r *http.Request) {
	if !s.presenceOn(w) {
		return
	}
	id := r.PathValue("id")
	if len(id) > store.MaxIDBytes {
		writeError(w, http.StatusRequestURITooLong, "the session id is longer than the bound of "+strconv.Itoa(store.MaxIDBytes)+" bytes")
		return
	}
	writeJSON(w, http.StatusOK, s.Presence.Timeline(r.Context(), id))
}
