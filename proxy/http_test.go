package proxy

// Tests of proxy.go: plain HTTP requests.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// rawRequest sends req as written on a new connection to addr and reads the
// response (body read in full).
func rawRequest(t *testing.T, addr, req string, body []byte) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitTime))
	go func() {
		// The server may answer before it read everything; a failed write
		// then shows in the response.
		io.WriteString(c, req)
		c.Write(body)
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, b
}

// seenRequest is what the upstream saw of a request.
type seenRequest struct {
	method, uri, host string
	header            http.Header
	bodyLen           int
	bodySum           [32]byte
}

// TestHTTPForwardsEndToEndAndDropsHopByHop: a POST with a 300 KB body,
// Authorization and cookies reaches the upstream intact; X-Forwarded-* and
// traceparent are added; hop-by-hop headers are removed both ways; two
// Set-Cookie headers come back.
func TestHTTPForwardsEndToEndAndDropsHopByHop(t *testing.T) {
	seen := make(chan seenRequest, 4)
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen <- seenRequest{r.Method, r.RequestURI, r.Host, r.Header.Clone(), len(b), sha256.Sum256(b)}
		h := w.Header()
		h.Add("Set-Cookie", "a=1; Path=/; HttpOnly")
		h.Add("Set-Cookie", "b=2; Path=/; Secure")
		h.Set("X-Upstream", "yes")
		h.Set("Connection", "X-Hop-Response")
		h.Set("X-Hop-Response", "must go")
		h.Set("Keep-Alive", "timeout=5")
		h.Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "got %d bytes", len(b))
	}))
	tp := startProxy(t, up, nil)

	body := randomBytes(300 << 10)
	req := "POST /api/upload?x=1&y=2 HTTP/1.1\r\n" +
		"Host: chat.example.com\r\n" +
		"Authorization: Bearer secret-token\r\n" +
		"Cookie: sid=abc; theme=dark\r\n" +
		"X-Custom: kept\r\n" +
		"Connection: keep-alive, X-Hop-Request\r\n" +
		"X-Hop-Request: must go\r\n" +
		"Keep-Alive: timeout=5\r\n" +
		"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n" +
		"Content-Type: application/octet-stream\r\n" +
		fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body))
	resp, got := rawRequest(t, tp.addr, req, body)
	if resp.StatusCode != http.StatusCreated || string(got) != fmt.Sprintf("got %d bytes", len(body)) {
		t.Fatalf("response %s %q", resp.Status, got)
	}
	if sc := resp.Header.Values("Set-Cookie"); len(sc) != 2 || sc[0] != "a=1; Path=/; HttpOnly" || sc[1] != "b=2; Path=/; Secure" {
		t.Errorf("Set-Cookie %q", sc)
	}
	if resp.Header.Get("X-Upstream") != "yes" {
		t.Error("end-to-end response header lost")
	}
	for _, k := range []string{"X-Hop-Response", "Keep-Alive"} {
		if v := resp.Header.Get(k); v != "" {
			t.Errorf("hop-by-hop response header %s: %q reached the client", k, v)
		}
	}

	r := <-seen
	if r.method != "POST" || r.uri != "/api/upload?x=1&y=2" || r.host != "chat.example.com" {
		t.Errorf("upstream got %s %s, Host %s", r.method, r.uri, r.host)
	}
	if r.bodyLen != len(body) || r.bodySum != sha256.Sum256(body) {
		t.Errorf("upstream got a body of %d bytes, different from the %d sent", r.bodyLen, len(body))
	}
	for k, want := range map[string]string{
		"Authorization":     "Bearer secret-token",
		"Cookie":            "sid=abc; theme=dark",
		"X-Custom":          "kept",
		"X-Forwarded-For":   "127.0.0.1",
		"X-Forwarded-Proto": "http",
		"X-Forwarded-Host":  "chat.example.com",
	} {
		if got := strings.Join(r.header[k], ", "); got != want {
			t.Errorf("upstream got %s %q, want %q", k, got, want)
		}
	}
	for _, k := range []string{"X-Hop-Request", "Keep-Alive", "Proxy-Authorization"} {
		if v, ok := r.header[k]; ok {
			t.Errorf("hop-by-hop request header %s: %q reached the upstream", k, v)
		}
	}
	if v, ok := r.header["Accept-Encoding"]; ok {
		t.Errorf("the client sent no Accept-Encoding, the upstream got %q", v)
	}
	if tp := r.header.Get("Traceparent"); !traceparentRE.MatchString(tp) {
		t.Errorf("traceparent %q", tp)
	}

	// A client's own traceparent and X-Forwarded-For chain are kept.
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	req2, _ := http.NewRequest("GET", tp.http("/x"), nil)
	req2.Header.Set("Traceparent", parent)
	req2.Header.Set("X-Forwarded-For", "203.0.113.7")
	resp2, err := http.DefaultClient.Do(req2)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	r = <-seen
	if got := r.header.Get("Traceparent"); got != parent {
		t.Errorf("traceparent %q, want the client's %q", got, parent)
	}
	if got := r.header.Get("X-Forwarded-For"); got != "203.0.113.7, 127.0.0.1" {
		t.Errorf("X-Forwarded-For %q, want the client's chain plus its address", got)
	}
}

// TestHTTPStreamsResponseUnbuffered: a chunked response flushed over time
// reaches the client piece by piece: the second piece is written only after
// the client got the first.
func TestHTTPStreamsResponseUnbuffered(t *testing.T) {
	release := make(chan struct{})
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-time.After(waitTime):
			return
		}
		fmt.Fprint(w, "data: two\n\n")
	}))
	tp := startProxy(t, up, nil)
	resp, err := http.Get(tp.http("/events"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ContentLength != -1 {
		t.Errorf("Content-Length %d on a streamed response", resp.ContentLength)
	}
	br := bufio.NewReader(resp.Body)
	first := make(chan string, 1)
	go func() { l, _ := br.ReadString('\n'); first <- l }()
	select {
	case l := <-first:
		if l != "data: one\n" {
			t.Fatalf("first line %q", l)
		}
	case <-time.After(waitTime):
		t.Fatal("the first piece did not arrive before the response ended: the proxy buffers")
	}
	close(release)
	rest, _ := io.ReadAll(br)
	if string(rest) != "\ndata: two\n\n" {
		t.Errorf("rest %q", rest)
	}
}

// TestHTTPReportedOnceWhenUpstreamAnswersEarly: an upstream that answers
// before reading a large request body; each request is still reported, once,
// with the session id from the part of the body that went by, if any did.
func TestHTTPReportedOnceWhenUpstreamAnswersEarly(t *testing.T) {
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	}))
	tp := startProxy(t, up, nil)
	const n = 5
	for i := 0; i < n; i++ {
		body := bytes.NewReader(append([]byte(`{"sessionId":"big","x":"`), bytes.Repeat([]byte("x"), 1<<20)...))
		resp, err := http.Post(tp.http("/upload"), "application/json", body)
		if err != nil {
			continue // the proxy may close while we still write; fine
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("status %s", resp.Status)
		}
	}
	deadline := time.Now().Add(waitTime)
	for {
		got := 0
		for _, e := range tp.rec.snapshot() {
			if e.Kind == evHTTP {
				got++
				// The upstream may answer before any of the body went by.
				if len(e.Body) >= len(`{"sessionId":"big"`) && e.Who.SessionID != "big" {
					t.Fatalf("request reported as %+v (body prefix %d bytes: %.40q)", e.Who, len(e.Body), e.Body)
				}
			}
		}
		if got == n {
			break
		}
		if got > n || time.Now().After(deadline) {
			t.Fatalf("%d HTTPRequest events for %d requests", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDeadUpstreamGives502WithShortReason: a dead upstream gives 502 with a
// short plain-text reason, for plain HTTP and for upgrades.
func TestDeadUpstreamGives502WithShortReason(t *testing.T) {
	tp := startProxy(t, deadAddr(t), nil)
	check := func(t *testing.T, resp *http.Response, body []byte) {
		t.Helper()
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("status %s", resp.Status)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("Content-Type %q", ct)
		}
		if len(body) == 0 || len(body) > 200 || !strings.Contains(string(body), "upstream") || bytes.Count(body, []byte("\n")) > 1 {
			t.Errorf("body %q: want one short line naming the upstream", body)
		}
		t.Logf("502 body: %q", body)
	}
	t.Run("http", func(t *testing.T) {
		resp, err := http.Get(tp.http("/x"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		check(t, resp, b)
	})
	t.Run("upgrade", func(t *testing.T) {
		_, resp, err := websocket.DefaultDialer.Dial(tp.ws("/ws"), nil)
		if err == nil || resp == nil {
			t.Fatalf("dial: %v, response %v", err, resp)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		check(t, resp, b)
	})
	if n := tp.p.Stats().UpstreamErrors.Load(); n != 2 {
		t.Errorf("UpstreamErrors %d, want 2", n)
	}
}

// TestMaxConnectionsRejectsAndGivesSlotsBack: over the cap a request gets
// 503; the slot of a WebSocket is given back when it closes.
func TestMaxConnectionsRejectsAndGivesSlotsBack(t *testing.T) {
	up, ends := gorillaUpstream(t, websocket.Upgrader{})
	tp := startProxy(t, up, func(o *Options) { o.MaxConnections = 1 })
	c, _ := gorillaDial(t, nil, tp.ws("/ws"), nil)
	echo(t, c, websocket.TextMessage, []byte("holding the only slot"))

	resp, err := http.Get(tp.http("/x"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("HTTP over the cap: %s %q", resp.Status, b)
	}
	_, resp, err = websocket.DefaultDialer.Dial(tp.ws("/ws"), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("upgrade over the cap: %v %v", err, resp)
	}
	if resp != nil {
		resp.Body.Close()
	}
	if n := tp.p.Stats().Rejected.Load(); n != 2 {
		t.Errorf("Rejected %d, want 2", n)
	}

	closeGorilla(t, c, websocket.CloseNormalClosure, "")
	waitEnd(t, ends)
	tp.rec.wait(t, "ConnClosed", isKind(evClosed))
	resp, err = http.Get(tp.http("/x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusServiceUnavailable {
		t.Error("the WebSocket's slot was not given back")
	}
}

// TestOversizedHeadersGet431: a header block over MaxHeaderBytes gets 431.
func TestOversizedHeadersGet431(t *testing.T) {
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the request reached the upstream")
	}))
	tp := startProxy(t, up, nil)
	req := "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 100<<10) + "\r\n\r\n"
	resp, _ := rawRequest(t, tp.addr, req, nil)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %s, want 431", resp.Status)
	}
}

// TestUntrackedCountsOnlyWhatCouldBeChat: requests without a session id
// count as untracked when they could be chat traffic (a bot named, or not
// GET/HEAD/OPTIONS); a page, an asset or a health check does not. Every
// request still reaches the observer.
func TestUntrackedCountsOnlyWhatCouldBeChat(t *testing.T) {
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) }))
	tp := startProxy(t, up, nil)
	for _, c := range []struct {
		method, path, body string
		counted            bool
	}{
		{"GET", "/", "", false},
		{"GET", "/static/app.js", "", false},
		{"HEAD", "/healthz", "", false},
		{"OPTIONS", "/api", "", false},
		{"GET", "/history?botId=b1", "", true},
		{"POST", "/api/messages", `{"text":"oi"}`, true},
		{"PUT", "/api/x", "", true},
		{"POST", "/api/messages?sessionId=s1", `{"text":"oi"}`, false}, // tracked
	} {
		before := tp.p.Stats().Untracked.Load()
		req, _ := http.NewRequest(c.method, tp.http(c.path), strings.NewReader(c.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := tp.p.Stats().Untracked.Load() - before; got != map[bool]int64{true: 1, false: 0}[c.counted] {
			t.Errorf("%s %s: untracked +%d, want counted %v", c.method, c.path, got, c.counted)
		}
	}
	n := 0
	for _, e := range tp.rec.snapshot() {
		if isKind(evHTTP)(e) {
			n++
		}
	}
	if n != 8 {
		t.Errorf("the observer got %d requests, want 8", n)
	}
}
