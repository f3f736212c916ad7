package handoff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.opentelemetry.io/otel/propagation"

	"github.com/presence-sidecar/presence-sidecar/handoff/webhook"
	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/tracectx"
)

const (
	// offlineQuery is appended to ExpirePath for the offline notification.
	offlineQuery = "offline=true"
	// excerptLen bounds the part of a platform's error body kept in LastError.
	excerptLen = 120
	// drainLimit is how much of a response body is read to reuse the connection.
	drainLimit = 64 << 10
)

// ParseBaseURL parses the platform's base URL (Options.URL): it must be an
// absolute http:// or https:// URL with a host. Its error says what is
// wanted and never echoes the value, which may hold a password: the caller
// names where the value came from and shows it in its own redacted form.
func ParseBaseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("want an absolute http:// or https:// URL")
	}
	return u, nil
}

// CheckPath checks a path to put under the base URL (Options.ExpirePath,
// Options.MessagePath): it must start with / and be a path, not a URL. It may
// carry a query, which is merged with the base URL's.
func CheckPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return errors.New("want a path starting with /")
	}
	if pp, err := url.Parse(p); err != nil || pp.Scheme != "" || pp.Host != "" {
		return errors.New("want a path starting with /, not a URL")
	}
	return nil
}

// join appends p (which may carry its own query) to base, merging queries.
func join(base *url.URL, p, extra string) (string, error) {
	if err := CheckPath(p); err != nil {
		return "", err
	}
	pp, _ := url.Parse(p)
	u := *base
	u.Path = strings.TrimSuffix(base.Path, "/") + "/" + strings.TrimPrefix(pp.Path, "/")
	u.RawPath, u.Fragment, u.RawFragment = "", "", ""
	if base.RawQuery == "" && pp.RawQuery == "" {
		u.RawQuery = extra // keep the binding form "?offline=true" byte for byte
	} else {
		q := base.Query()
		for k, vs := range pp.Query() {
			q[k] = append(q[k], vs...)
		}
		if extra != "" {
			ev, _ := url.ParseQuery(extra)
			for k, vs := range ev {
				q[k] = append(q[k], vs...)
			}
		}
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}

func newClient(timeout time.Duration, conc int) *http.Client {
	tr, ok := http.DefaultTransport.(*http.Transport)
	if ok {
		tr = tr.Clone()
	} else { // DefaultTransport was replaced (instrumentation): start from a plain one
		tr = &http.Transport{Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true,
			MaxIdleConns: 100, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second}
	}
	tr.DialContext = (&net.Dialer{Timeout: min(timeout, 30*time.Second), KeepAlive: 30 * time.Second}).DialContext
	tr.MaxIdleConnsPerHost = conc
	tr.ResponseHeaderTimeout = timeout
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		// A redirected webhook would lose or re-send its signed body somewhere
		// unconfigured; treat 3xx as a failed attempt the operator can see.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// post sends n once and says what the exchange gave; ctx carries the attempt's span.
func (d *Deliverer) post(ctx context.Context, n store.Notification) exchange {
	body, err := webhook.Render(n)
	if err != nil {
		// Retrying cannot fix a note we cannot render: make it visible at once.
		return exchange{verdict: Dead, reason: "cannot render: " + err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.Endpoint(n), bytes.NewReader(body))
	if err != nil {
		return exchange{verdict: Dead, reason: "cannot build request: " + err.Error()}
	}
	ts := d.now().Unix()
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", d.o.UserAgent)
	if d.o.Token != "" {
		h.Set("Authorization", "Bearer "+d.o.Token)
	}
	// Canonical keys (Webhook-Id…): header names are case-insensitive, and a
	// transport that sets the same header (tracing) must replace, not duplicate it.
	h.Set(webhook.HeaderID, n.ID)
	h.Set(webhook.HeaderTimestamp, strconv.FormatInt(ts, 10))
	if d.key != nil {
		h.Set(webhook.HeaderSignature, webhook.Sign(d.key, n.ID, ts, body))
	}
	// The attempt's span: a child of the transition that caused n (its
	// TraceParent as it is when no tracer records).
	tracectx.Propagator.Inject(ctx, propagation.HeaderCarrier(h))

	start := time.Now()
	resp, err := d.client.Do(req)
	if err != nil {
		return exchange{verdict: Retry, reason: transportReason(err, d.o.Timeout), latency: time.Since(start)}
	}
	defer resp.Body.Close()
	x := exchange{status: resp.StatusCode, latency: time.Since(start)}
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		x.verdict = Delivered
	case code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests:
		x.verdict, x.reason = Dead, "HTTP "+strconv.Itoa(code)
	default:
		x.verdict, x.reason = Retry, "HTTP "+strconv.Itoa(code)
		if code >= 300 && code < 400 {
			x.reason += " (redirects are not followed)"
		}
		if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
			x.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), d.now())
		}
	}
	if x.verdict != Delivered {
		buf := make([]byte, excerptLen*2)
		k, _ := io.ReadFull(resp.Body, buf)
		x.excerpt = truncate(cleanText(buf[:k]), excerptLen)
	}
	// Drain a bounded amount so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainLimit))
	return x
}

// transportReason is a short, secret-free reason for a failed exchange: the
// url.Error wrapper is dropped because the URL may carry credentials.
func transportReason(err error, timeout time.Duration) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Sprintf("timeout after %s", timeout)
		}
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf("timeout after %s", timeout)
	}
	return truncate(err.Error(), 2*excerptLen)
}

// cleanText makes a body excerpt printable on one line.
func cleanText(b []byte) string {
	s := strings.ToValidUTF8(string(b), "")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
