package demo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/presence-sidecar/presence-sidecar/handoff/webhook"
	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
)

type frame struct {
	Action string         `json:"action"`
	Data   map[string]any `json:"data"`
}

func dial(t *testing.T, base string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, c *websocket.Conn, action string, data any) {
	t.Helper()
	if err := c.WriteJSON(map[string]any{"action": action, "data": data}); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, c *websocket.Conn) frame {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var f frame
	if err := c.ReadJSON(&f); err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	return f
}

func post(t *testing.T, base, session, text string) int {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"sessionId": session, "botId": DefaultBotID, "text": text})
	resp, err := http.Post(base+"/webchat/message", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func link(t *testing.T, base, session string) *websocket.Conn {
	t.Helper()
	c := dial(t, base)
	send(t, c, "link", map[string]string{"sessionId": session, "botId": DefaultBotID})
	if f := read(t, c); f.Action != "link" || !strings.HasPrefix(fmt.Sprint(f.Data["socketId"]), "sock-") {
		t.Fatalf("link answer %+v", f)
	}
	return c
}

func TestServiceProtocol(t *testing.T) {
	svc := NewService(ServiceOptions{KeepAlive: time.Second})
	srv := httptest.NewServer(svc.Handler())
	defer srv.Close()

	if code := post(t, srv.URL, "nobody", "oi"); code != http.StatusConflict {
		t.Errorf("message for a session with no socket: %d, want 409", code)
	}
	c := link(t, srv.URL, "s1")
	send(t, c, "keep_alive", nil) // no answer

	if code := post(t, srv.URL, "s1", "olá"); code != http.StatusAccepted {
		t.Fatalf("POST /webchat/message: %d", code)
	}
	if f := read(t, c); f.Action != "message" || !strings.Contains(fmt.Sprint(f.Data["text"]), "olá") {
		t.Errorf("bot answer %+v", f)
	}

	post(t, srv.URL, "s1", "quero um ATENDENTE")
	read(t, c) // "transferring you"
	if f := read(t, c); f.Action != "end_conversation" || f.Data["isTransfer"] != true {
		t.Errorf("hand-over frame %+v", f)
	}
	if !svc.HandedOver("s1") {
		t.Error("service does not know the hand-over")
	}
	// A second tab of the same session gets the bot's messages too.
	c2 := link(t, srv.URL, "s1")
	if f := read(t, c2); f.Action != "message" {
		t.Errorf("greeting of a handed-over session: %+v", f)
	}
	if n := svc.Sockets("s1"); n != 2 {
		t.Errorf("%d sockets, want 2", n)
	}

	post(t, srv.URL, "s1", "tchau")
	for _, cc := range []*websocket.Conn{c, c2} {
		read(t, cc) // "até logo"
		if f := read(t, cc); f.Action != "end_conversation" || len(f.Data) != 0 {
			t.Errorf("end frame %+v", f)
		}
	}
	if svc.HandedOver("s1") {
		t.Error("tchau did not end the hand-over")
	}
}

func TestWebChatPage(t *testing.T) {
	srv := httptest.NewServer(NewService(ServiceOptions{KeepAlive: 1500 * time.Millisecond, BotID: "b<1>"}).Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/?session=abc")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`data-keep-alive-ms="1500"`, `data-bot-id="b&lt;1&gt;"`, `src="static/webchat.js"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("page lacks %s", want)
		}
	}
	for _, p := range []string{"/static/webchat.js", "/static/demo.css"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %v %v", p, err, resp.Status)
		}
		resp.Body.Close()
	}
}

var testKey = []byte("presence-sidecar-demo-signing-key")

func signed(t *testing.T, url, path, id string, ts int64, body string, key []byte) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	if key != nil {
		req.Header.Set("webhook-signature", webhook.Sign(key, id, ts, []byte(body)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestSigningSecretConstant(t *testing.T) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(SigningSecret, "whsec_"))
	if err != nil || !bytes.Equal(key, testKey) {
		t.Fatalf("SigningSecret decodes to %q, %v", key, err)
	}
}

func TestConsoleVerifiesAndStreams(t *testing.T) {
	c, err := NewConsole(ConsoleOptions{SigningSecret: SigningSecret})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	defer c.Close()

	// The live stream, opened before anything arrives.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/events", nil)
	stream, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	if ct := stream.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("/events Content-Type %q", ct)
	}

	now := time.Now().Unix()
	body := `{"event":"client.offline","sessionId":"s1","botId":"b","offline":true,"reason":"disconnected"}`
	if r := signed(t, srv.URL, "/expire?offline=true", "msg_1", now, body, testKey); r.StatusCode != http.StatusNoContent {
		t.Errorf("a good notification: %d", r.StatusCode)
	}
	if r := signed(t, srv.URL, "/expire?offline=true", "msg_1", now, body, testKey); r.StatusCode != http.StatusNoContent {
		t.Errorf("a retry: %d", r.StatusCode)
	}
	if r := signed(t, srv.URL, "/expire", "msg_2", now, body, []byte("another key")); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("a wrong signature: %d", r.StatusCode)
	}
	if r := signed(t, srv.URL, "/expire", "msg_3", now, body, nil); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("no signature: %d", r.StatusCode)
	}
	if r := signed(t, srv.URL, "/expire", "msg_4", now-3600, body, testKey); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("an old timestamp: %d", r.StatusCode)
	}

	got := c.Notifications()
	if len(got) != 5 {
		t.Fatalf("%d notifications recorded, want 5", len(got))
	}
	if n := got[0]; !n.Verified || !n.Offline || n.SessionID != "s1" || n.Reason != "disconnected" || n.Duplicate || n.Path != "/expire" {
		t.Errorf("first: %+v", n)
	}
	if !got[1].Duplicate {
		t.Error("the retry is not marked duplicate")
	}
	for _, n := range got[2:] {
		if n.Verified || n.Refused == "" {
			t.Errorf("accepted a bad one: %+v", n)
		}
	}

	// The stream replays them in order.
	sc := bufio.NewScanner(stream.Body)
	var seqs []int
	for sc.Scan() && len(seqs) < 5 {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var n Received
			if err := json.Unmarshal([]byte(d), &n); err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, n.Seq)
		}
	}
	if fmt.Sprint(seqs) != "[1 2 3 4 5]" {
		t.Errorf("stream gave %v", seqs)
	}

	wctx, wcancel := context.WithTimeout(context.Background(), time.Second)
	defer wcancel()
	if _, err := c.Wait(wctx, func(n Received) bool { return n.SessionID == "nobody" }); err == nil {
		t.Error("Wait found a notification that never came")
	}
}

func TestConsoleRejectsBadSecret(t *testing.T) {
	if _, err := NewConsole(ConsoleOptions{SigningSecret: "nope"}); err == nil {
		t.Error("accepted a secret without whsec_")
	}
}

// The whole demo without a browser: a client speaking the socket protocol
// through the sidecar asks for a human, goes away and comes back.
func TestStackHandOverExpireReturn(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	logs := &testutil.Buffer{}
	s, err := Start(ctx, StackOptions{
		Env:       []string{"PRESENCE_CHECK_INTERVAL=500ms", "PROBE_INTERVAL=0", "SHUTDOWN_GRACE=1s", "LOG_LEVEL=warn"},
		DataDir:   t.TempDir(),
		LogOutput: logs,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		if err := s.Wait(); err != nil {
			t.Errorf("stack: %v", err)
		}
	}()

	c := link(t, s.WebChatURL, "stack-1")
	post(t, s.WebChatURL, "stack-1", "human please")
	read(t, c)
	if f := read(t, c); f.Action != "end_conversation" {
		t.Fatalf("%+v", f)
	}
	// Let the sidecar see the hand-over frame before the close.
	time.Sleep(100 * time.Millisecond)
	c.Close()

	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	off, err := s.Console.Wait(wctx, func(n Received) bool { return n.SessionID == "stack-1" && n.Event == "client.offline" })
	if err != nil {
		t.Fatalf("no /expire: %v; logs:\n%s", err, logs.String())
	}
	if !off.Offline || !off.Verified || off.Reason != "disconnected" {
		t.Errorf("offline: %+v", off)
	}
	link(t, s.WebChatURL, "stack-1")
	on, err := s.Console.Wait(wctx, func(n Received) bool { return n.SessionID == "stack-1" && n.Event == "client.online" })
	if err != nil {
		t.Fatalf("no return message: %v", err)
	}
	if on.Text != "O cliente voltou a ficar online." || on.Path != "/message" {
		t.Errorf("online: %+v", on)
	}
}
