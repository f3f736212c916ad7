package proxy

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/tidwall/gjson"
)

type sourceKind uint8

const (
	fromQuery sourceKind = iota
	fromHeader
	fromCookie
	fromFrame
	fromBody
)

type source struct {
	kind sourceKind
	name string // query/header/cookie name, or a gjson path for frame/body
}

// Sources is a parsed SESSION_ID_FROM or BOT_ID_FROM: where an id comes
// from, tried in order.
type Sources []source

// ParseSources reads "query:NAME,header:NAME,cookie:NAME,frame:PATH,body:PATH".
// variable names the setting in error messages.
func ParseSources(variable, spec string) (Sources, error) {
	var out Sources
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		kind, name, ok := strings.Cut(item, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("%s=%q: %q must be KIND:NAME with KIND one of query, header, cookie, frame, body", variable, spec, item)
		}
		var k sourceKind
		switch strings.TrimSpace(kind) {
		case "query":
			k = fromQuery
		case "header":
			k = fromHeader
		case "cookie":
			k = fromCookie
		case "frame":
			k = fromFrame
		case "body":
			k = fromBody
		default:
			return nil, fmt.Errorf("%s=%q: unknown source %q (want query, header, cookie, frame or body)", variable, spec, kind)
		}
		out = append(out, source{k, name})
	}
	return out, nil
}

func (s Sources) has(k sourceKind) bool {
	for _, src := range s {
		if src.kind == k {
			return true
		}
	}
	return false
}

// fromRequest returns the first id found in the request line, headers or cookies.
func (s Sources) fromRequest(r *http.Request) string {
	var query map[string][]string
	for _, src := range s {
		var v string
		switch src.kind {
		case fromQuery:
			if query == nil {
				query = r.URL.Query()
			}
			if vs := query[src.name]; len(vs) > 0 {
				v = vs[0]
			}
		case fromHeader:
			v = r.Header.Get(src.name)
		case fromCookie:
			if c, err := r.Cookie(src.name); err == nil {
				v = c.Value
			}
		}
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}

// fromJSON returns the first id found in doc by sources of kind k (frame or body).
func (s Sources) fromJSON(k sourceKind, doc []byte) string {
	for _, src := range s {
		if src.kind != k {
			continue
		}
		res := gjson.GetBytes(doc, src.name)
		if res.Type == gjson.String || res.Type == gjson.Number {
			if v := strings.TrimSpace(res.String()); v != "" {
				return v
			}
		}
	}
	return ""
}
