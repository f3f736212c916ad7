// Package proxy is the data plane: a transparent reverse proxy for plain
// HTTP and WebSocket upgrades. After a 101 it relays bytes unchanged in both
// directions while a frame tap (package wsframe) watches them go by, and it
// tells an event.Observer what it sees. It knows nothing of presence.
package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/tracectx"
)

// Options configure a Proxy.
type Options struct {
	Upstream    *url.URL
	DialTimeout time.Duration // connect to the upstream; also bounds the WebSocket handshake (0: 10s)
	// ResponseTimeout bounds the wait for a plain request's response
	// headers once the request (body included) went upstream; then 504.
	// A response whose headers came is never cut by it. 0: no limit.
	ResponseTimeout time.Duration
	KeepAlive       time.Duration // TCP keep-alive period on upstream sockets (client sockets: the http.Server's)
	MaxConnections  int           // in-flight requests plus open WebSockets; 0 = no cap
	ProbeInterval   time.Duration // 0 = no liveness probe
	ProbeTimeout    time.Duration
	InspectBytes    int // prefix of each message / body that ids and rules see
	SessionFrom     Sources
	BotFrom         Sources
	// Framing decodes a chat stack's messages for ids and rules (PRESET;
	// framing.go). The zero value is plain JSON.
	Framing Framing
	// InspectClient / InspectServer: the observer looks at message content in
	// that direction (rules); ids from frame: sources turn client inspection on
	// by themselves.
	InspectClient bool
	InspectServer bool
	Observer      event.Observer // nil: event.Nop
	Log           *zap.Logger
	// Tracer makes a server span per request and per upgrade (with the
	// upstream dial as a child); its context is the traceparent sent
	// upstream. nil: no spans, and the client's traceparent (or a new one)
	// is passed on.
	Tracer trace.TracerProvider
	// GoroutineRelay relays every WebSocket with two goroutines (pump.go),
	// as on platforms without epoll and for TLS upstreams, instead of the
	// event loop (evloop_linux.go). For comparison and tests.
	GoroutineRelay bool
}

// Proxy is an http.Handler that forwards everything to one upstream.
type Proxy struct {
	o         Options
	log       *zap.Logger
	obs       event.Observer
	tracer    trace.Tracer
	traced    bool // the observer wants each request's trace (it is not event.Nop)
	rp        *httputil.ReverseProxy
	dialer    net.Dialer
	nextID    atomic.Uint64
	active    atomic.Int64 // requests in flight + open WebSockets, for MaxConnections
	stats     Stats
	upgrading atomic.Int64 // handshakes in progress
	connsMu   sync.Mutex
	conns     map[*wsConn]struct{}
	closing   atomic.Bool

	inspectLogAt atomic.Int64 // unix ns of the last "no longer inspected" log line
}

// Stats are the proxy's counters, read with atomic loads.
type Stats struct {
	HTTPRequests   atomic.Int64
	Upgrades       atomic.Int64
	OpenWebSockets atomic.Int64
	Rejected       atomic.Int64 // over MaxConnections
	UpstreamErrors atomic.Int64 // 502s and 504s: the upstream unreachable or not answering in time
	ClientErrors   atomic.Int64 // 400s and 413s for the client's own request body, and clients gone mid-body
	ProbeTimeouts  atomic.Int64
	Frames         [2]atomic.Int64 // by event.Direction
	Bytes          [2]atomic.Int64
	Untracked      atomic.Int64 // connections, and requests that could be chat traffic (httpSeen), with no session id
	// InspectionStopped, by event.Direction: connections whose compressed
	// messages in that direction are no longer inspected (a message inflated
	// past the bound, or could not be inflated, with context takeover).
	InspectionStopped [2]atomic.Int64
	// Unparsed, by event.Direction: messages Options.Framing could not
	// decode; ignored (framing.go).
	Unparsed [2]atomic.Int64
}

// New builds a Proxy.
func New(o Options) (*Proxy, error) {
	if o.Upstream == nil || o.Upstream.Host == "" {
		return nil, errors.New("proxy: upstream URL with a host required")
	}
	if o.Observer == nil {
		o.Observer = event.Nop{}
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.InspectBytes <= 0 {
		o.InspectBytes = DefaultInspectBytes
	}
	if o.ProbeInterval > 0 && o.ProbeTimeout <= 0 {
		return nil, errors.New("proxy: a probe interval needs a probe timeout")
	}
	if o.Tracer == nil {
		o.Tracer = noop.NewTracerProvider()
	}
	p := &Proxy{o: o, log: o.Log, obs: o.Observer, conns: map[*wsConn]struct{}{}}
	p.tracer = o.Tracer.Tracer("github.com/presence-sidecar/presence-sidecar/proxy")
	_, nop := o.Observer.(event.Nop)
	p.traced = !nop
	p.dialer = net.Dialer{Timeout: o.DialTimeout, KeepAlive: o.KeepAlive}
	target := httpURL(o.Upstream)
	transport := &http.Transport{
		Proxy:                 nil, // the upstream is next to us; never an outbound proxy
		DialContext:           p.dialer.DialContext,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   o.DialTimeout,
		ExpectContinueTimeout: time.Second,
		// Started once the request is written: a slow upload is not cut,
		// nor a streamed or long-polled body once its headers came.
		ResponseHeaderTimeout: o.ResponseTimeout,
		DisableCompression:    true, // Accept-Encoding is the client's to send, not ours
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:      func(pr *httputil.ProxyRequest) { rewrite(pr, target) },
		Transport:    transport,
		ErrorLog:     zap.NewStdLog(o.Log.Named("reverseproxy")),
		ErrorHandler: p.proxyError,
		ModifyResponse: func(resp *http.Response) error {
			spanStatus(trace.SpanFromContext(resp.Request.Context()), resp.StatusCode)
			return nil
		},
	}
	return p, nil
}

// Stats returns the live counters.
func (p *Proxy) Stats() *Stats { return &p.stats }

// ServeHTTP forwards one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if n := p.active.Add(1); p.o.MaxConnections > 0 && n > int64(p.o.MaxConnections) {
		p.active.Add(-1)
		p.stats.Rejected.Add(1)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "presence-sidecar: too many connections", http.StatusServiceUnavailable)
		p.refused(r)
		return
	}
	// Ids from the request line, headers and cookies, read once.
	who := event.Identity{SessionID: p.o.SessionFrom.fromRequest(r), BotID: p.o.BotFrom.fromRequest(r)}
	if isUpgrade(r) {
		r, span := p.startSpan(r, r.Context(), "proxy.upgrade", who)
		defer span.End()
		// The WebSocket's slot is released when the relay ends.
		if !p.serveUpgrade(w, r, span, who) {
			p.active.Add(-1)
			// Invariant 7 (docs/ARCHITECTURE.md, "Presence invariants"): a
			// client whose handshake failed, whoever's fault it was, is
			// still trying to reach the service.
			p.obs.UpgradeFailed(event.Request{Who: who, Trace: p.traceOf(r)})
		}
		return
	}
	defer p.active.Add(-1)
	p.stats.HTTPRequests.Add(1)
	// Every body is wrapped, inspected or not, so that proxyError can tell
	// the client's failures (a malformed chunk, a body cut short) from the
	// upstream's; the request's context carries it there.
	ctx := r.Context()
	var tap *bodyTap
	safe := safeMethod(r.Method)
	if r.Body != nil && r.Body != http.NoBody {
		tap = &bodyTap{ReadCloser: r.Body, p: p, who: who, safe: safe, inspect: p.wantsBody(), limit: p.o.InspectBytes}
		ctx = context.WithValue(ctx, bodyKey{}, tap)
	}
	r, span := p.startSpan(r, ctx, "proxy.http", who)
	defer span.End()
	tp := p.traceOf(r)
	if tap != nil {
		r.Body = tap
	}
	if tap != nil && tap.inspect {
		tap.trace = tp
		// The upstream may answer before the body ended, and ReverseProxy
		// does not pass Close on: the request is reported at the latest here.
		defer tap.reportOnce()
	} else {
		p.httpSeen(who, nil, tp, safe)
	}
	p.rp.ServeHTTP(w, r)
}

// refused reports a request refused over MaxConnections: the sidecar's
// refusal is not the client leaving (invariant 7, docs/ARCHITECTURE.md,
// "Presence invariants"). Only the request's own ids are known.
func (p *Proxy) refused(r *http.Request) {
	if _, nop := p.obs.(event.Nop); nop {
		return // a pure proxy: not even the ids are read
	}
	who := event.Identity{SessionID: p.o.SessionFrom.fromRequest(r), BotID: p.o.BotFrom.fromRequest(r)}
	if isUpgrade(r) {
		p.obs.UpgradeFailed(event.Request{Who: who})
	} else {
		p.obs.HTTPRequest(event.Request{Who: who})
	}
}

// traceOf is the traceparent r goes upstream with, for the observer; "" when
// nobody wants it.
func (p *Proxy) traceOf(r *http.Request) string {
	if !p.traced {
		return ""
	}
	return tracectx.Format(trace.SpanContextFromContext(r.Context()))
}

// startSpan starts the server span of a request, continuing the client's
// trace when it sent a traceparent. The returned request carries the span
// in a context derived from ctx (r's, or one derived from it): rewrite
// sends the span's context upstream.
func (p *Proxy) startSpan(r *http.Request, ctx context.Context, name string, who event.Identity) (*http.Request, trace.Span) {
	ctx = tracectx.Propagator.Extract(ctx, propagation.HeaderCarrier(r.Header))
	ctx, span := tracectx.Start(ctx, p.tracer, name, trace.WithSpanKind(trace.SpanKindServer))
	if span.IsRecording() {
		attrs := []attribute.KeyValue{
			semconv.HTTPRequestMethodKey.String(r.Method),
			semconv.URLPath(r.URL.Path),
			semconv.ServerAddress(r.Host),
			semconv.UserAgentOriginal(r.UserAgent()),
		}
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			attrs = append(attrs, semconv.ClientAddress(host))
		}
		if who.SessionID != "" {
			attrs = append(attrs, semconv.SessionID(who.SessionID))
		}
		if who.BotID != "" {
			attrs = append(attrs, tracectx.AttrBotID.String(who.BotID))
		}
		span.SetAttributes(attrs...)
	}
	return r.WithContext(ctx), span
}

// spanStatus records the status code the client gets.
func spanStatus(span trace.Span, code int) {
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(semconv.HTTPResponseStatusCode(code))
	if code >= 500 {
		span.SetStatus(codes.Error, http.StatusText(code))
	}
}

func (p *Proxy) wantsBody() bool {
	_, nop := p.obs.(event.Nop)
	return !nop && (p.o.InspectClient || p.o.SessionFrom.has(fromBody) || p.o.BotFrom.has(fromBody))
}

// httpSeen reports a plain request once its ids are known. A request
// without a session id counts as untracked only when it could be chat
// traffic: it names a bot, or its method is not a safe one (RFC 9110
// §9.2.1). Pages, scripts and health checks are not a session missed.
func (p *Proxy) httpSeen(who event.Identity, body []byte, trace string, safe bool) {
	if body != nil {
		if who.SessionID == "" {
			who.SessionID = p.o.SessionFrom.fromJSON(fromBody, body)
		}
		if who.BotID == "" {
			who.BotID = p.o.BotFrom.fromJSON(fromBody, body)
		}
	}
	if who.SessionID == "" && (who.BotID != "" || !safe) {
		p.stats.Untracked.Add(1)
	}
	p.obs.HTTPRequest(event.Request{Who: who, Body: body, Trace: trace})
}

// bodyTap wraps a request body as it streams to the upstream. It records
// how reading the client's body went (proxyError's evidence that a failure
// is the client's) and, when inspect is set, keeps a bounded prefix and
// reports the request once: when the body is done, or when the handler
// returns. The transport reads it on its own goroutine, which can outlive
// the handler, hence the lock.
type bodyTap struct {
	io.ReadCloser
	p       *Proxy
	who     event.Identity
	safe    bool // GET, HEAD or OPTIONS (httpSeen)
	trace   string
	inspect bool
	limit   int
	mu      sync.Mutex
	buf     []byte
	done    bool  // reported (inspect), buf no longer changes
	started bool  // some of the body was read
	eof     bool  // the body was read to its end
	readErr error // reading the client's body failed
}

// bodyKey is the context key of a request's *bodyTap.
type bodyKey struct{}

func (b *bodyTap) Read(q []byte) (int, error) {
	n, err := b.ReadCloser.Read(q)
	b.mu.Lock()
	if room := b.limit - len(b.buf); b.inspect && room > 0 && n > 0 && !b.done {
		b.buf = append(b.buf, q[:min(n, room)]...)
	}
	b.started = b.started || n > 0
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil && b.readErr == nil && !errors.Is(err, http.ErrBodyReadAfterClose):
		// A read after Close is the transport's, once the handler returned.
		b.readErr = err
	}
	b.mu.Unlock()
	if err != nil && b.inspect {
		b.reportOnce()
	}
	return n, err
}

// clientFault is why the client's body failed, if it did: a read error, or
// the client gone (gone: its request's context ended) in the middle of its
// body. A client gone before any of its body was read is one that gave up
// waiting, not a fault.
func (b *bodyTap) clientFault(gone bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.readErr == nil && gone && b.started && !b.eof {
		return io.ErrUnexpectedEOF
	}
	return b.readErr
}

func (b *bodyTap) Close() error {
	if b.inspect {
		b.reportOnce()
	}
	return b.ReadCloser.Close()
}

// reportOnce reports the request with the body prefix kept so far; later
// calls do nothing.
func (b *bodyTap) reportOnce() {
	b.mu.Lock()
	done := b.done
	b.done = true // buf no longer changes
	b.mu.Unlock()
	if done {
		return
	}
	body := b.buf
	if body == nil {
		body = []byte{}
	}
	b.p.httpSeen(b.who, body, b.trace, b.safe)
}

func (p *Proxy) badGateway(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away; nobody to answer
	}
	p.stats.UpstreamErrors.Add(1)
	if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
		span.RecordError(err)
		span.SetAttributes(semconv.HTTPResponseStatusCode(http.StatusBadGateway))
		span.SetStatus(codes.Error, "upstream unavailable")
	}
	p.log.Warn("upstream unavailable", zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
	http.Error(w, "presence-sidecar: upstream unavailable: "+shortReason(err), http.StatusBadGateway)
}

// shortReason turns a dial or transport error into a few words for a 502 body.
func shortReason(err error) string {
	var op *net.OpError
	switch {
	case errors.As(err, &op) && op.Op == "dial":
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "connect timed out"
		}
		return "cannot connect (" + op.Err.Error() + ")"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed before a response"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timed out"
	}
	return err.Error()
}

// httpURL maps ws:// and wss:// upstreams onto the HTTP schemes the handshake uses.
func httpURL(u *url.URL) *url.URL {
	c := *u
	switch c.Scheme {
	case "ws":
		c.Scheme = "http"
	case "wss":
		c.Scheme = "https"
	}
	return &c
}

// isUpgrade reports whether r asks to switch protocols (RFC 9110 §7.8):
// an Upgrade header and "upgrade" among the Connection options, say
// Firefox's "keep-alive, Upgrade".
func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" && httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade")
}

// rewrite points an outbound request at the upstream, for plain requests
// and upgrades alike.
func rewrite(pr *httputil.ProxyRequest, target *url.URL) {
	pr.SetURL(target)
	pr.Out.Host = pr.In.Host // end to end: virtual hosts, origin checks
	// We sit behind an ingress: keep the forwarding headers it set (its
	// scheme and host, the chain of addresses) and add our hop.
	in := pr.In.Header
	pr.Out.Header["X-Forwarded-For"] = in["X-Forwarded-For"]
	pr.SetXForwarded()
	for _, h := range []string{"X-Forwarded-Proto", "X-Forwarded-Host"} {
		if v := in.Get(h); v != "" {
			pr.Out.Header.Set(h, v)
		}
	}
	// The request's span (startSpan) goes upstream: ours, a child of the
	// client's; with no tracer recording, the client's own traceparent (or
	// a new one when it sent none).
	tracectx.Propagator.Inject(pr.Out.Context(), propagation.HeaderCarrier(pr.Out.Header))
}

// safeMethod: GET, HEAD and OPTIONS only read (RFC 9110 §9.2.1).
func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}
