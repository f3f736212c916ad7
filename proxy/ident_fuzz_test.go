package proxy

// Fuzz targets of the id extractors (ident.go): SESSION_ID_FROM and
// BOT_ID_FROM are the operator's, but the query, headers, cookies, frames
// and bodies they are applied to are whatever a client sends.
//
//	go test -run '^$' -fuzz=FuzzParseSources -fuzztime=3m ./proxy
//	go test -run '^$' -fuzz=FuzzIDFromRequest -fuzztime=3m ./proxy
//	go test -run '^$' -fuzz=FuzzIDFromJSON -fuzztime=3m ./proxy

import (
	"bufio"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// identSpecs are the specs the tests and the defaults use.
var identSpecs = []string{
	"query:sessionId,header:X-Session-Id,frame:data.sessionId,body:sessionId", // SESSION_ID_FROM default
	"query:botId,frame:data.botId,body:botId",                                 // BOT_ID_FROM default
	"query:sessionId,header:X-Session-Id,cookie:sid,frame:data.sessionId,body:sessionId",
	" query : sid , , cookie:sid ",
	"frame:data.ids.0,body:a\\.b",
	"bogus:x", "query", "query:", ":x", "frame:a:b",
}

// FuzzParseSources: ParseSources never panics; an error names the variable;
// a parsed list written back as KIND:NAME parses to the same list.
func FuzzParseSources(f *testing.F) {
	for _, s := range identSpecs {
		f.Add(s)
	}
	kinds := [...]string{fromQuery: "query", fromHeader: "header", fromCookie: "cookie", fromFrame: "frame", fromBody: "body"}
	f.Fuzz(func(t *testing.T, spec string) {
		got, err := ParseSources("SESSION_ID_FROM", spec)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "SESSION_ID_FROM=") {
				t.Fatalf("error %q does not name the variable", err)
			}
			return
		}
		var parts []string
		for _, s := range got {
			if s.name == "" || s.name != strings.TrimSpace(s.name) || strings.Contains(s.name, ",") || int(s.kind) >= len(kinds) {
				t.Fatalf("source %+v from %q", s, spec)
			}
			parts = append(parts, kinds[s.kind]+":"+s.name)
		}
		again, err := ParseSources("SESSION_ID_FROM", strings.Join(parts, ","))
		if err != nil || !slices.Equal(again, got) {
			t.Fatalf("%q parsed to %v; written back as %q it parses to %v, %v", spec, got, strings.Join(parts, ","), again, err)
		}
	})
}

// FuzzIDFromRequest: whatever the request line and headers a client sends,
// fromRequest never panics and returns either nothing or the trimmed value
// of one of the named query parameters, headers or cookies.
func FuzzIDFromRequest(f *testing.F) {
	for _, c := range []struct{ spec, query, header, cookie string }{
		{identSpecs[2], "sessionId=q1&botId=qb1", "", ""},
		{identSpecs[2], "", "h1", ""},
		{identSpecs[2], "", "", "theme=dark; sid=c1"},
		{identSpecs[2], "sessionId=%20%20&sessionId=second", " \t", "sid="},
		{identSpecs[0], "sessionId=%zz;x", "é\x00", `sid="quoted"`},
		{identSpecs[3], "sid=a+b&sid=c", "", "sid=1; sid=2"},
	} {
		f.Add(c.spec, c.query, c.header, c.cookie)
	}
	f.Fuzz(func(t *testing.T, spec, query, header, cookie string) {
		src, err := ParseSources("SESSION_ID_FROM", spec)
		if err != nil {
			return
		}
		raw := "GET /ws?" + query + " HTTP/1.1\r\nHost: sidecar\r\nX-Session-Id: " + header + "\r\nCookie: " + cookie + "\r\n\r\n"
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return // net/http answers 400 before any id is looked for
		}
		id := src.fromRequest(r)
		if id == "" {
			return
		}
		if id != strings.TrimSpace(id) {
			t.Fatalf("id %q is not trimmed", id)
		}
		var candidates []string
		for _, s := range src {
			switch s.kind {
			case fromQuery:
				candidates = append(candidates, r.URL.Query()[s.name]...)
			case fromHeader:
				candidates = append(candidates, r.Header.Values(s.name)...)
			case fromCookie:
				for _, c := range r.CookiesNamed(s.name) {
					candidates = append(candidates, c.Value)
				}
			}
		}
		if !slices.ContainsFunc(candidates, func(c string) bool { return strings.TrimSpace(c) == id }) {
			t.Fatalf("id %q is none of the named values %q", id, candidates)
		}
	})
}

// plainPath is a gjson path of plain keys, where the id found is a literal
// of the document.
var plainPath = regexp.MustCompile(`^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$`)

// FuzzIDFromJSON: whatever a client's frame or body holds (truncated,
// invalid, deep, huge numbers) and whatever the path, fromJSON never panics
// and returns a trimmed id; through a path of plain keys, in a document
// without escapes, an id that is not a number is text of the document.
func FuzzIDFromJSON(f *testing.F) {
	for _, c := range []struct{ spec, doc string }{
		{identSpecs[0], linkFrame},
		{identSpecs[1], linkFrame},
		{identSpecs[0], `{"sessionId":"s2","botId":"b2","text":"hi"}`},
		{identSpecs[0], `{"action":"link","data":{"sessionId":12345678901234567890}}`},
		{identSpecs[0], `{"action":"link","data":{"sessionId":"  "}}`},
		{identSpecs[0], `{"action":"link","data":{"sessionId":"abc`},
		{identSpecs[4], `{"data":{"ids":["x","y"]},"a.b":"dotted"}`},
		{"frame:data.#(k==\"v\").id,body:@reverse", `{"data":[{"k":"v","id":"m"}]}`},
		{identSpecs[0], `[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`},
		{identSpecs[0], "{\"data\":{\"sessionId\":\"\\u00e9\\ud800\"}}"},
	} {
		f.Add(c.spec, []byte(c.doc))
	}
	f.Fuzz(func(t *testing.T, spec string, doc []byte) {
		src, err := ParseSources("SESSION_ID_FROM", spec)
		if err != nil {
			return
		}
		for _, k := range []sourceKind{fromFrame, fromBody} {
			id := src.fromJSON(k, doc)
			if id == "" {
				continue
			}
			if id != strings.TrimSpace(id) {
				t.Fatalf("id %q is not trimmed", id)
			}
			// A number is written back in gjson's form (1.50 becomes 1.5).
			_, notNumber := strconv.ParseFloat(id, 64)
			plain := notNumber != nil && utf8.Valid(doc) && !strings.ContainsRune(string(doc), '\\')
			for _, s := range src {
				plain = plain && (s.kind != k || plainPath.MatchString(s.name))
			}
			if plain && !strings.Contains(string(doc), id) {
				t.Fatalf("id %q through plain paths %v is not in the document %q", id, src, doc)
			}
		}
	})
}
