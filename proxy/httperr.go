package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"

	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
)

// proxyError is the ReverseProxy's ErrorHandler: a plain request got no
// response from the upstream. Whose fault it is decides the answer and the
// counter, so that no client can raise the upstream alert:
//   - the client's body failed (a malformed chunk, a body cut short, one
//     over a limit, the client gone mid-body): 400 or 413, ClientErrors;
//   - the client went away while waiting for the answer: nobody to answer,
//     nobody's fault (a long poll given up), not counted;
//   - no response headers within ResponseTimeout: 504, UpstreamErrors;
//   - anything else (connect failed, the upstream closed): 502, UpstreamErrors.
func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	gone := r.Context().Err() != nil
	if b, _ := r.Context().Value(bodyKey{}).(*bodyTap); b != nil {
		if berr := b.clientFault(gone); berr != nil {
			p.clientError(w, r, berr)
			return
		}
	}
	if gone && errors.Is(err, context.Canceled) {
		return
	}
	if p.o.ResponseTimeout > 0 && isResponseTimeout(err) {
		p.gatewayTimeout(w, r, err)
		return
	}
	p.badGateway(w, r, err)
}

// isResponseTimeout reports whether err is the transport giving up on the
// response headers (http.Transport.ResponseHeaderTimeout), not a dial or TLS
// handshake timeout: those are 502s, the upstream unreachable.
func isResponseTimeout(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return false
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// clientError answers a request whose body the client got wrong: 413 when a
// limit was crossed, else 400. The connection is not reused: the body's
// framing is lost.
func (p *Proxy) clientError(w http.ResponseWriter, r *http.Request, err error) {
	p.stats.ClientErrors.Add(1)
	code, reason := http.StatusBadRequest, "bad request body: "+err.Error()
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		code, reason = http.StatusRequestEntityTooLarge, "request body too large"
	}
	spanFailed(r, code, "client request body failed", err)
	// Debug: a client's own mistake is no operator's concern, and a log
	// line per bad request would let any client flood the log.
	p.log.Debug("client request body failed", zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Int("status", code), zap.Error(err))
	w.Header().Set("Connection", "close")
	http.Error(w, "presence-sidecar: "+reason, code)
}

// gatewayTimeout answers a request the upstream did not answer within
// ResponseTimeout (as nginx's proxy_read_timeout does, with 504).
func (p *Proxy) gatewayTimeout(w http.ResponseWriter, r *http.Request, err error) {
	p.stats.UpstreamErrors.Add(1)
	spanFailed(r, http.StatusGatewayTimeout, "upstream did not answer in time", err)
	p.log.Warn("upstream did not answer in time", zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Duration("timeout", p.o.ResponseTimeout))
	http.Error(w, "presence-sidecar: upstream timed out: no response within "+p.o.ResponseTimeout.String(), http.StatusGatewayTimeout)
}

// spanFailed records a failed request on its span.
func spanFailed(r *http.Request, code int, what string, err error) {
	if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
		span.RecordError(err)
		span.SetAttributes(semconv.HTTPResponseStatusCode(code))
		if code >= 500 {
			span.SetStatus(codes.Error, what)
		}
	}
}
