package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// receiver stands in for the human-service platform: it answers 200 to
// every notification and counts them per session, apart for the held
// sessions (any /expire of theirs is false) and the short-lived ones (they
// are handed over and leave: their /expire is due).
type receiver struct {
	heldPrefix, shortPrefix string

	mu         sync.Mutex
	seen       map[string]bool // webhook-ids
	redeliv    int
	heldExpire map[string]int // session → /expire count
	heldMsg    map[string]int // return messages for held sessions (also false: there was no absence)
	shortExp   map[string]int
	shortMsg   int
	foreign    []string
	firstFalse time.Time
	srv        *http.Server
	addr       string
}

func startReceiver(heldPrefix, shortPrefix string) (*receiver, error) {
	r := &receiver{heldPrefix: heldPrefix, shortPrefix: shortPrefix, seen: map[string]bool{},
		heldExpire: map[string]int{}, heldMsg: map[string]int{}, shortExp: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r.addr = ln.Addr().String()
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go r.srv.Serve(ln)
	return r, nil
}

func (r *receiver) close() { r.srv.Close() }

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	raw, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	var body struct {
		Event     string `json:"event"`
		SessionID string `json:"sessionId"`
	}
	json.Unmarshal(raw, &body)
	id := req.Header.Get("webhook-id")
	expire := req.URL.Path == "/expire"
	message := req.URL.Path == "/message"
	r.mu.Lock()
	defer r.mu.Unlock()
	w.WriteHeader(http.StatusOK)
	if id != "" && r.seen[id] {
		r.redeliv++
		return
	}
	r.seen[id] = true
	switch {
	case strings.HasPrefix(body.SessionID, r.heldPrefix) && (expire || message):
		if expire {
			r.heldExpire[body.SessionID]++
		} else {
			r.heldMsg[body.SessionID]++
		}
		if r.firstFalse.IsZero() {
			r.firstFalse = time.Now()
		}
	case strings.HasPrefix(body.SessionID, r.shortPrefix) && expire:
		r.shortExp[body.SessionID]++
	case strings.HasPrefix(body.SessionID, r.shortPrefix) && message:
		r.shortMsg++
	default:
		if len(r.foreign) < 20 {
			r.foreign = append(r.foreign, req.URL.Path+" "+tail(raw, 200))
		}
	}
}

type receiverCounts struct {
	heldExpire, heldExpireSessions int
	heldMsg                        int
	shortExpire, shortSessions     int
	shortDup                       int // short-lived sessions with more than one /expire (distinct webhook-ids)
	shortMsg                       int
	redeliveries                   int
	foreign                        []string
	firstFalse                     time.Time
}

func (r *receiver) counts() receiverCounts {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := receiverCounts{heldExpireSessions: len(r.heldExpire), shortSessions: len(r.shortExp), shortMsg: r.shortMsg,
		redeliveries: r.redeliv, foreign: append([]string(nil), r.foreign...), firstFalse: r.firstFalse}
	for _, n := range r.heldExpire {
		c.heldExpire += n
	}
	for _, n := range r.heldMsg {
		c.heldMsg += n
	}
	for _, n := range r.shortExp {
		c.shortExpire += n
		if n > 1 {
			c.shortDup++
		}
	}
	return c
}
