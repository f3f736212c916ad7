package proxy

// Tests of httperr.go: whose fault a failed plain request is, and what the
// client gets for it.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// silentUpstream accepts connections, reads what comes and never answers:
// a hung upstream. The connections stay open until the test ends.
func silentUpstream(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(io.Discard, c) }()
		}
	}()
	return ln.Addr().String()
}

// checkShortText checks a plain-text error body of one short line naming want.
func checkShortText(t *testing.T, resp *http.Response, body []byte, want string) {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q", ct)
	}
	if len(body) == 0 || len(body) > 200 || !strings.Contains(string(body), want) || strings.Count(string(body), "\n") > 1 {
		t.Errorf("body %q: want one short line containing %q", body, want)
	}
}

// TestSilentUpstreamGives504: an upstream that accepts and never answers
// gets a GET and a POST a 504 once ResponseTimeout has passed, counted as an
// upstream error; before, the request hung as long as the client waited.
func TestSilentUpstreamGives504(t *testing.T) {
	const timeout = 300 * time.Millisecond
	tp := startProxy(t, silentUpstream(t), func(o *Options) { o.ResponseTimeout = timeout })
	hc := &http.Client{Timeout: waitTime}
	for _, method := range []string{"GET", "POST"} {
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader(`{"text":"hi"}`)
		}
		req, _ := http.NewRequest(method, tp.http("/slow?sessionId=s1"), body)
		start := time.Now()
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s: %v (the proxy never answered)", method, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if took := time.Since(start); took < timeout {
			t.Errorf("%s: answered after %v, before the %v timeout", method, took, timeout)
		}
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("%s: status %s, want 504", method, resp.Status)
		}
		checkShortText(t, resp, b, "upstream timed out")
		t.Logf("504 body: %q", b)
	}
	if n := tp.p.Stats().UpstreamErrors.Load(); n != 2 {
		t.Errorf("UpstreamErrors %d, want 2", n)
	}
	if n := tp.p.Stats().ClientErrors.Load(); n != 0 {
		t.Errorf("ClientErrors %d, want 0", n)
	}
}

// TestResponseTimeoutSparesStreamsUploadsAndQuickPolls: the timeout counts
// only until the response headers, from the end of the request: a stream
// that lasts many timeouts after its headers, an upload that takes several
// timeouts to send, and a long poll answered within the timeout all get
// through whole.
func TestResponseTimeoutSparesStreamsUploadsAndQuickPolls(t *testing.T) {
	const timeout = 400 * time.Millisecond
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/events":
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 5 {
				fmt.Fprintf(w, "data: %d\n\n", i)
				w.(http.Flusher).Flush()
				time.Sleep(timeout / 2)
			}
		case "/upload":
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "got %d", n)
		case "/poll":
			time.Sleep(timeout / 4)
			io.WriteString(w, "news")
		}
	}))
	tp := startProxy(t, up, func(o *Options) { o.ResponseTimeout = timeout })
	hc := &http.Client{Timeout: waitTime}

	t.Run("stream", func(t *testing.T) {
		resp, err := hc.Get(tp.http("/events"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || strings.Count(string(b), "data:") != 5 {
			t.Fatalf("%s %q %v: the stream was cut", resp.Status, b, err)
		}
	})
	t.Run("slow upload", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			for range 5 {
				pw.Write([]byte(strings.Repeat("x", 100)))
				time.Sleep(timeout / 2)
			}
			pw.Close()
		}()
		resp, err := hc.Post(tp.http("/upload"), "application/octet-stream", pr)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "got 500" {
			t.Fatalf("%s %q", resp.Status, b)
		}
	})
	t.Run("long poll", func(t *testing.T) {
		resp, err := hc.Get(tp.http("/poll"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "news" {
			t.Fatalf("%s %q", resp.Status, b)
		}
	})
	if n := tp.p.Stats().UpstreamErrors.Load(); n != 0 {
		t.Errorf("UpstreamErrors %d, want 0", n)
	}
}

// TestBadRequestBodyIs400ClientError: a chunked body with a malformed chunk
// size is the client's fault: 400 with a short reason, counted in
// ClientErrors and never in UpstreamErrors (it used to be "502 upstream
// unavailable"), with and without body inspection. A body that ends before
// its Content-Length (the client half-closed) is the same.
func TestBadRequestBodyIs400ClientError(t *testing.T) {
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}))
	for _, inspect := range []bool{true, false} {
		t.Run(fmt.Sprintf("inspect=%v", inspect), func(t *testing.T) {
			tp := startProxy(t, up, func(o *Options) {
				if !inspect {
					o.Observer = event.Nop{}
				}
			})
			// A good request first: the upstream and the path work.
			resp, b := rawRequest(t, tp.addr, "POST /m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n", []byte("2\r\nhi\r\n0\r\n\r\n"))
			if resp.StatusCode != 200 || string(b) != "ok" {
				t.Fatalf("good request: %s %q", resp.Status, b)
			}
			resp, b = rawRequest(t, tp.addr, "POST /m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", []byte("5\r\nhello\r\nzz\r\n"))
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("bad chunk size: status %s %q, want 400", resp.Status, b)
			}
			checkShortText(t, resp, b, "bad request body")
			t.Logf("400 body: %q", b)

			resp, b = halfClosedRequest(t, tp.addr, "POST /m HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", []byte("only a little"))
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("short body: status %s %q, want 400", resp.Status, b)
			}
			if n := tp.p.Stats().ClientErrors.Load(); n != 2 {
				t.Errorf("ClientErrors %d, want 2", n)
			}
			if n := tp.p.Stats().UpstreamErrors.Load(); n != 0 {
				t.Errorf("UpstreamErrors %d, want 0", n)
			}
		})
	}
}

// halfClosedRequest writes req and body, closes its side for writing and
// reads the answer.
func halfClosedRequest(t *testing.T, addr, req string, body []byte) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitTime))
	io.WriteString(c, req)
	c.Write(body)
	c.(*net.TCPConn).CloseWrite()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestClientGoneMidBodyIsClientError: a client that disconnects in the
// middle of its body, while the upstream waits for the rest, is counted as
// a client error, never as an upstream one.
func TestClientGoneMidBodyIsClientError(t *testing.T) {
	reading := make(chan struct{}, 1)
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 10)
		r.Body.Read(buf)
		reading <- struct{}{}
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}))
	tp := startProxy(t, up, nil)
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "POST /m HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
	io.WriteString(c, strings.Repeat("y", 1000))
	select {
	case <-reading:
	case <-time.After(waitTime):
		t.Fatal("the body never reached the upstream")
	}
	c.Close()
	testutil.Eventually(t, waitTime, "a client error", func() bool { return tp.p.Stats().ClientErrors.Load() == 1 })
	// Give a wrong count time to show.
	time.Sleep(100 * time.Millisecond)
	if n, m := tp.p.Stats().UpstreamErrors.Load(), tp.p.Stats().ClientErrors.Load(); n != 0 || m != 1 {
		t.Errorf("UpstreamErrors %d, ClientErrors %d; want 0, 1", n, m)
	}
}
