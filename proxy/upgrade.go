package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/tracectx"
)

// hopByHop are the connection-specific headers of RFC 9110 section 7.6.1;
// they are never forwarded (Connection and Upgrade are set anew for the
// upgrade itself).
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// removeHopByHop deletes the hop-by-hop headers from h: those the
// Connection header names, and the fixed list.
func removeHopByHop(h http.Header) {
	if connection := h["Connection"]; len(connection) > 0 {
		for name := range h {
			if httpguts.HeaderValuesContainsToken(connection, name) {
				delete(h, name)
			}
		}
	}
	for _, name := range hopByHop {
		h.Del(name)
	}
}

var handshakeReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

// handshakeWriters buffer the request to the upstream: given a bare
// net.Conn, http.Request.Write makes a 4 KiB bufio.Writer of its own for
// every handshake.
var handshakeWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4096) }}

// serveUpgrade forwards an upgrade request. It reports whether the
// connection was handed to a relay (which then owns the MaxConnections slot).
// span is the upgrade's server span (r carries it); it ends when the
// handshake is over, not with the connection.
func (p *Proxy) serveUpgrade(w http.ResponseWriter, r *http.Request, span trace.Span, who event.Identity) bool {
	p.stats.Upgrades.Add(1)
	// Handshakes in progress count for Shutdown until they become tracked
	// connections (or fail); none starts once it began.
	p.upgrading.Add(1)
	defer p.upgrading.Add(-1)
	if p.closing.Load() {
		w.Header().Set("Connection", "close")
		http.Error(w, "presence-sidecar: shutting down", http.StatusServiceUnavailable)
		return false
	}
	target := httpURL(p.o.Upstream)
	ctx, cancel := context.WithTimeout(r.Context(), p.o.DialTimeout)
	defer cancel()

	out := r.Clone(ctx) // a deep copy: its Header is its own
	upgrade := r.Header.Get("Upgrade")
	removeHopByHop(out.Header)
	rewrite(&httputil.ProxyRequest{In: r, Out: out}, target)
	out.Header.Set("Connection", "Upgrade")
	out.Header.Set("Upgrade", upgrade)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header.Set("User-Agent", "") // keep net/http from adding its own
	}
	out.RequestURI = ""
	out.Close = false

	up, err := p.dialUpstream(ctx, target.Scheme == "https", target.Host)
	if err != nil {
		p.badGateway(w, r, err)
		return false
	}
	handedOff := false
	defer func() {
		if !handedOff {
			up.Close()
		}
	}()
	deadline, _ := ctx.Deadline()
	up.SetDeadline(deadline) // bounds the handshake
	bw := handshakeWriters.Get().(*bufio.Writer)
	bw.Reset(up)
	if err = out.Write(bw); err == nil { // a bufio.Writer given is not flushed
		err = bw.Flush()
	}
	bw.Reset(nil)
	handshakeWriters.Put(bw)
	if err != nil {
		p.badGateway(w, r, err)
		return false
	}
	br := handshakeReaders.Get().(*bufio.Reader)
	br.Reset(up)
	defer func() { br.Reset(nil); handshakeReaders.Put(br) }()
	resp, err := http.ReadResponse(br, out)
	if err != nil {
		p.badGateway(w, r, err)
		return false
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// The upstream refused the upgrade: its answer goes back as it is.
		defer resp.Body.Close()
		h := w.Header()
		for k, vs := range resp.Header {
			h[k] = vs
		}
		removeHopByHop(h)
		spanStatus(span, resp.StatusCode)
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		return false
	}
	up.SetDeadline(time.Time{})

	client, cbuf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		p.log.Error("cannot take over the client connection", zap.Error(err))
		http.Error(w, "presence-sidecar: cannot upgrade this connection", http.StatusInternalServerError)
		return false
	}
	client.SetDeadline(time.Time{})
	// The 101 goes back with every header the upstream sent (Connection and
	// Upgrade included: they are the upgrade).
	cbuf.Writer.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	resp.Header.Write(cbuf.Writer)
	cbuf.Writer.WriteString("\r\n")
	if err := cbuf.Writer.Flush(); err != nil {
		client.Close()
		return false
	}
	handedOff = true
	// Bytes that either peer sent right after the handshake are already in
	// the handshake buffers; they go first.
	fromClient := takeBuffered(cbuf.Reader)
	fromUpstream := takeBuffered(br)

	c := p.newWSConn(client, up, who, resp.Header["Sec-Websocket-Extensions"], isWebSocket(upgrade))
	if !p.o.GoroutineRelay {
		c.adoptSockets() // the event loop when it can take them (evloop_linux.go), else the pumps
	}
	tp := p.traceOf(r)
	if span.IsRecording() {
		span.SetAttributes(semconv.HTTPResponseStatusCode(http.StatusSwitchingProtocols), tracectx.AttrConnID.Int64(int64(c.id)))
	}
	p.track(c)
	go c.run(fromClient, fromUpstream, tp)
	return true
}

// dialUpstream connects to the upstream, in a child span of the upgrade.
func (p *Proxy) dialUpstream(ctx context.Context, useTLS bool, host string) (net.Conn, error) {
	ctx, span := p.tracer.Start(ctx, "proxy.dial", trace.WithSpanKind(trace.SpanKindClient))
	defer span.End()
	conn, err := p.dial(ctx, useTLS, host)
	if span.IsRecording() {
		if h, port, perr := net.SplitHostPort(host); perr == nil {
			n, _ := strconv.Atoi(port)
			span.SetAttributes(semconv.ServerAddress(h), semconv.ServerPort(n))
		} else {
			span.SetAttributes(semconv.ServerAddress(host))
		}
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, shortReason(err))
		}
	}
	return conn, err
}

func (p *Proxy) dial(ctx context.Context, useTLS bool, host string) (net.Conn, error) {
	if _, _, err := net.SplitHostPort(host); err != nil {
		if useTLS {
			host = net.JoinHostPort(host, "443")
		} else {
			host = net.JoinHostPort(host, "80")
		}
	}
	if useTLS {
		d := tls.Dialer{NetDialer: &p.dialer, Config: &tls.Config{NextProtos: []string{"http/1.1"}}}
		return d.DialContext(ctx, "tcp", host)
	}
	return p.dialer.DialContext(ctx, "tcp", host)
}

func takeBuffered(br *bufio.Reader) []byte {
	n := br.Buffered()
	if n == 0 {
		return nil
	}
	b, _ := br.Peek(n)
	return append([]byte(nil), b...)
}

// isWebSocket reports whether an Upgrade header value names WebSocket
// among its protocols (RFC 6455 §4.1).
func isWebSocket(upgrade string) bool {
	return httpguts.HeaderValuesContainsToken([]string{upgrade}, "websocket")
}
