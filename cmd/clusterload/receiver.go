package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A notification as the receiver got it (the first time its webhook-id came).
type note struct {
	offline bool // client.offline on the expire path; else client.online on the message path
	id      string
	at      time.Time
}

// receiver is the human-service platform. It records each notification of a
// session of this run once per webhook-id, in arrival order (the sidecar
// delivers a session's notifications one at a time, in order), counts a
// webhook-id seen again as a redelivery, and wakes the session's client
// when its /expire came (a client that is away waits for it before it
// returns: see session).
type receiver struct {
	prefix   string // session ids of this run: prefix + index
	sessions []*session

	mu       sync.Mutex
	seen     map[string]string // webhook-id → "session event"
	redeliv  int
	foreign  []string // notifications for sessions not of this run, or malformed
	mismatch int      // a webhook-id seen again with another session or event

	posts, offlines, onlines atomic.Int64
}

func newReceiver(prefix string, sessions []*session) *receiver {
	return &receiver{prefix: prefix, sessions: sessions, seen: map[string]string{}}
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	at := time.Now()
	r.posts.Add(1)
	var body struct {
		Event     string `json:"event"`
		SessionID string `json:"sessionId"`
	}
	raw, _ := io.ReadAll(req.Body)
	json.Unmarshal(raw, &body)
	id := req.Header.Get("webhook-id")
	var offline bool
	switch {
	case body.Event == "client.offline" && req.URL.Path == expirePath:
		offline = true
	case body.Event == "client.online" && req.URL.Path == messagePath:
	default:
		r.addForeign(req.URL.Path + " " + string(raw))
		w.WriteHeader(http.StatusOK) // not retried: it is recorded
		return
	}
	s := r.session(body.SessionID)
	if s == nil || id == "" {
		r.addForeign(req.URL.Path + " webhook-id=" + id + " " + string(raw))
		w.WriteHeader(http.StatusOK)
		return
	}
	key := body.SessionID + " " + body.Event
	r.mu.Lock()
	prev, dup := r.seen[id]
	if dup {
		r.redeliv++
		if prev != key {
			r.mismatch++
		}
	} else {
		r.seen[id] = key
	}
	r.mu.Unlock()
	if !dup {
		if offline {
			r.offlines.Add(1)
		} else {
			r.onlines.Add(1)
		}
		s.received(note{offline: offline, id: id, at: at})
	}
	w.WriteHeader(http.StatusOK)
}

func (r *receiver) addForeign(s string) {
	r.mu.Lock()
	if len(r.foreign) < 1000 {
		r.foreign = append(r.foreign, s)
	}
	r.mu.Unlock()
}

func (r *receiver) session(sid string) *session {
	rest, ok := strings.CutPrefix(sid, r.prefix)
	if !ok {
		return nil
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 0 || i >= len(r.sessions) || r.sessions[i].id != sid {
		return nil
	}
	return r.sessions[i]
}

func (r *receiver) counts() (redeliveries, mismatched int, foreign []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.redeliv, r.mismatch, append([]string(nil), r.foreign...)
}
