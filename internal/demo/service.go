// Package demo is a small stand-in for the seed platform: a conversation
// service that speaks its WebChat socket protocol and serves a WebChat page,
// and an agent console that receives the sidecar's notifications the way a
// human-service platform would. `go run ./cmd/demo` and the browser tests
// (internal/demo/browsertest) run both with the sidecar in front of the service.
//
// The socket protocol (the seed's English notes):
//
//	client → server  {"action":"link","data":{"sessionId":"…","botId":"…"}}
//	server → client  {"action":"link","data":{"socketId":"…"}}
//	client → server  {"action":"keep_alive"}                      every KeepAlive
//	client → server  POST /webchat/message {"sessionId","botId","text"}   (HTTP)
//	server → client  {"action":"message","data":{"text":"…"}}
//	server → client  {"action":"end_conversation","data":{"isTransfer":true}}   hand-over to a human
//	server → client  {"action":"end_conversation","data":{}}                    the chat ends
package demo

import (
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
)

//go:embed static
var staticFS embed.FS

// DefaultBotID is the bot id the WebChat page sends when none is given.
const DefaultBotID = "demo-bot"

// ServiceOptions configure the demo conversation service.
type ServiceOptions struct {
	// KeepAlive is how often the WebChat page sends keep_alive (the real
	// client: 9 minutes). Default 20s.
	KeepAlive time.Duration
	// BotID is the page's default bot id (?bot= overrides it). Default DefaultBotID.
	BotID string
	Log   *zap.Logger
}

// Service is the demo conversation service: a WebChat page at /, the socket
// at /ws and user messages at POST /webchat/message.
type Service struct {
	o        ServiceOptions
	upgrader websocket.Upgrader
	page     *template.Template

	mu       sync.Mutex
	sessions map[string]*chat
}

// chat is one conversation (a session id), with every socket linked to it.
type chat struct {
	handedOver bool
	socks      map[*sock]struct{}
}

type sock struct {
	c  *websocket.Conn
	mu sync.Mutex // gorilla allows one writer at a time
	id string
}

func (s *sock) send(action string, data any) error {
	b, err := json.Marshal(map[string]any{"action": action, "data": data})
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return s.c.WriteMessage(websocket.TextMessage, b)
}

// NewService builds the conversation service.
func NewService(o ServiceOptions) *Service {
	if o.KeepAlive <= 0 {
		o.KeepAlive = 20 * time.Second
	}
	if o.BotID == "" {
		o.BotID = DefaultBotID
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	return &Service{
		o:        o,
		page:     template.Must(template.ParseFS(staticFS, "static/webchat.html")),
		sessions: map[string]*chat{},
		upgrader: websocket.Upgrader{
			ReadBufferSize:  1024,
			WriteBufferSize: 1024,
			// The page is served by whatever host proxies us (the sidecar);
			// a demo accepts any origin.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
}

// Handler returns the service's routes.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.HandleFunc("GET /{$}", s.serveChat)
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /ws", s.serveSocket)
	mux.HandleFunc("POST /webchat/message", s.serveMessage)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	return mux
}

func (s *Service) serveChat(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_ = s.page.Execute(w, map[string]any{
		"BotID":       s.o.BotID,
		"KeepAliveMS": s.o.KeepAlive.Milliseconds(),
	})
}

// HandedOver reports whether the service handed sessionID over to a human.
func (s *Service) HandedOver(sessionID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.sessions[sessionID]
	return c != nil && c.handedOver
}

// Sockets counts the open sockets linked to sessionID.
func (s *Service) Sockets(sessionID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.sessions[sessionID]; c != nil {
		return len(c.socks)
	}
	return 0
}

func (s *Service) serveSocket(w http.ResponseWriter, r *http.Request) {
	c, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	c.SetReadLimit(64 << 10)
	k := &sock{c: c, id: randomID("sock-")}
	var session string
	defer func() {
		if session != "" {
			s.unlink(session, k)
		}
		_ = c.Close()
	}()
	for {
		// The real gateway drops sockets idle for 10 minutes.
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Minute))
		typ, b, err := c.ReadMessage()
		if err != nil {
			return
		}
		if typ != websocket.TextMessage {
			continue
		}
		var in struct {
			Action string `json:"action"`
			Data   struct {
				SessionID string `json:"sessionId"`
				BotID     string `json:"botId"`
			} `json:"data"`
		}
		if json.Unmarshal(b, &in) != nil {
			continue
		}
		switch in.Action {
		case "link":
			if in.Data.SessionID == "" || session != "" {
				continue
			}
			session = in.Data.SessionID
			handed := s.link(session, k)
			s.o.Log.Debug("demo service: socket linked", zap.String("session", session), zap.String("socket", k.id))
			_ = k.send("link", map[string]any{"socketId": k.id})
			if handed {
				_ = k.send("message", map[string]any{"text": "Você está falando com um atendente humano. Pode continuar de onde parou."})
			}
		case "keep_alive":
			// Nothing to answer: it only keeps the gateway from dropping the socket.
		}
	}
}

func (s *Service) link(session string, k *sock) (handedOver bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.sessions[session]
	if c == nil {
		c = &chat{socks: map[*sock]struct{}{}}
		s.sessions[session] = c
	}
	c.socks[k] = struct{}{}
	return c.handedOver
}

func (s *Service) unlink(session string, k *sock) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.sessions[session]; c != nil {
		delete(c.socks, k)
		if len(c.socks) == 0 && !c.handedOver {
			delete(s.sessions, session)
		}
	}
}

// reply is what the bot says to one user message.
type reply struct {
	text    string
	end     bool // end_conversation follows
	handoff bool // ... with isTransfer
}

func (s *Service) serveMessage(w http.ResponseWriter, r *http.Request) {
	var in struct {
		SessionID string `json:"sessionId"`
		BotID     string `json:"botId"`
		Text      string `json:"text"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10)).Decode(&in); err != nil || in.SessionID == "" {
		http.Error(w, `want JSON {"sessionId","botId","text"}`, http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	c := s.sessions[in.SessionID]
	if c == nil {
		s.mu.Unlock()
		http.Error(w, "no socket is linked to this session: open the socket and send link first", http.StatusConflict)
		return
	}
	rep := s.answer(c, in.Text)
	socks := make([]*sock, 0, len(c.socks))
	for k := range c.socks {
		socks = append(socks, k)
	}
	s.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write([]byte(`{"ok":true}` + "\n"))

	// The bot answers over the socket(s) of the session, like the real service.
	for _, k := range socks {
		if rep.text != "" {
			_ = k.send("message", map[string]any{"text": rep.text})
		}
		switch {
		case rep.handoff:
			_ = k.send("end_conversation", map[string]any{"isTransfer": true})
		case rep.end:
			_ = k.send("end_conversation", map[string]any{})
		}
	}
}

// answer decides the bot's reply; s.mu is held.
func (s *Service) answer(c *chat, text string) reply {
	low := strings.ToLower(text)
	switch {
	case strings.Contains(low, "tchau"):
		c.handedOver = false
		return reply{text: "Até logo! A conversa foi encerrada.", end: true}
	case c.handedOver:
		// A real platform would pass this to the agent; the demo only acknowledges it.
		return reply{text: "(mensagem entregue ao atendente)"}
	case strings.Contains(low, "human") || strings.Contains(low, "humano") || strings.Contains(low, "atendente"):
		c.handedOver = true
		return reply{text: "Certo, vou transferir você para um atendente humano.", end: true, handoff: true}
	default:
		return reply{text: "Você disse: «" + text + "». Digite \"human\" (ou \"atendente\") para falar com uma pessoa, \"tchau\" para encerrar."}
	}
}

func randomID(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}
