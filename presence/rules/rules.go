// Package rules matches JSON messages against the operator's conditions:
// HANDOFF_START_MATCH, HANDOFF_END_MATCH and PRESENCE_IGNORE.
//
// Grammar: a Set is rules separated by ';' (any may match); a rule is
// [DIRECTION:]COND[&COND...] (all must hold), DIRECTION is client or server,
// and COND is PATH=VALUE or PATH!=VALUE. PATH is a gjson path
// (data.isTransfer); a value compares with the field's text form, so true,
// 42 and end_conversation all work. A missing field is never equal.
package rules

import (
	"fmt"
	"strings"
	"unsafe"

	"github.com/tidwall/gjson"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

type cond struct {
	path  string
	value string
	neg   bool
	// key is the path's last key as it must appear in a document that has
	// it, quotes included ("isTransfer"); "" when the path is not plain
	// enough to tell (keyNeedle).
	key string
}

type rule struct {
	dir   event.Direction
	conds []cond
}

// Set is a parsed list of rules. The zero Set matches nothing.
type Set struct {
	rules []rule
	src   string
}

// Parse reads a rule list. Rules without a direction get def.
func Parse(src string, def event.Direction) (Set, error) {
	s := Set{src: src}
	for _, raw := range strings.Split(src, ";") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		r := rule{dir: def}
		body := raw
		// A colon after the first '=' belongs to a value (a URL, a time).
		if d, rest, ok := strings.Cut(raw, ":"); ok && !strings.Contains(d, "=") {
			switch strings.TrimSpace(d) {
			case "client":
				r.dir, body = event.FromClient, rest
			case "server":
				r.dir, body = event.FromServer, rest
			default:
				return Set{}, fmt.Errorf("rule %q: direction must be client or server, not %q", raw, d)
			}
		}
		for _, c := range strings.Split(body, "&") {
			c = strings.TrimSpace(c)
			var k cond
			if p, v, ok := strings.Cut(c, "!="); ok {
				k = cond{path: strings.TrimSpace(p), value: strings.TrimSpace(v), neg: true}
			} else if p, v, ok := strings.Cut(c, "="); ok {
				k = cond{path: strings.TrimSpace(p), value: strings.TrimSpace(v)}
			} else {
				return Set{}, fmt.Errorf("rule %q: condition %q must be PATH=VALUE or PATH!=VALUE", raw, c)
			}
			if k.path == "" {
				return Set{}, fmt.Errorf("rule %q: condition %q has no path", raw, c)
			}
			k.key = keyNeedle(k.path)
			r.conds = append(r.conds, k)
		}
		s.rules = append(s.rules, r)
	}
	return s, nil
}

// MustParse is Parse for constants known to be valid.
func MustParse(src string, def event.Direction) Set {
	s, err := Parse(src, def)
	if err != nil {
		panic(err)
	}
	return s
}

// Empty reports whether the set has no rules.
func (s Set) Empty() bool { return len(s.rules) == 0 }

// Has reports whether any rule looks at direction dir, so callers can skip
// inspecting traffic nobody asks about.
func (s Set) Has(dir event.Direction) bool {
	for _, r := range s.rules {
		if r.dir == dir {
			return true
		}
	}
	return false
}

// String returns the rules as written.
func (s Set) String() string { return s.src }

// keyNeedle returns `"KEY"` for a path whose last element KEY can only be
// an object's key spelled just so: a path of plain names (letters, digits,
// '_' and '-', joined by '.') whose last name is not a number (gjson would
// also take that as an array index). Otherwise "": gjson's wildcards,
// escapes, queries and modifiers are left to gjson.
func keyNeedle(path string) string {
	last := path[strings.LastIndexByte(path, '.')+1:]
	if last == "" || strings.Trim(last, "0123456789") == "" || path[0] == '.' || strings.Contains(path, "..") {
		return "" // an index, or an empty name (gjson's JSON Lines "..")
	}
	for _, r := range path {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return ""
		}
	}
	return `"` + last + `"`
}

// hasKey reports whether key (quotes included) starts at one of doc's
// quotes. In a document without backslashes quotes only delimit strings,
// so there are few to try, each found by IndexByte; strings.Contains would
// give up on its byte search early in a document so full of quotes and
// compare at every offset (about 6× slower on a 4 KiB message).
func hasKey(doc, key string) bool {
	for {
		i := strings.IndexByte(doc, '"')
		if i < 0 {
			return false
		}
		if strings.HasPrefix(doc[i:], key) {
			return true
		}
		doc = doc[i+1:]
	}
}

// absentFrom reports whether doc certainly lacks c's field: a document
// without backslashes (plain caches whether doc is one) that does not hold
// c's key. false means gjson must look.
func (c *cond) absentFrom(doc string, plain *int8) bool {
	if c.key == "" {
		return false
	}
	if *plain < 0 {
		*plain = 0
		if strings.IndexByte(doc, '\\') < 0 {
			*plain = 1
		}
	}
	return *plain == 1 && !hasKey(doc, c.key)
}

// Match reports whether doc, a JSON message (possibly a truncated prefix)
// sent in direction dir, satisfies any rule.
//
// A field whose key does not occur in doc is missing, and a document
// without a backslash spells every key as it is: then a search from quote
// to quote (hasKey) answers where gjson would walk the document, skipping
// every long string byte by byte (the seed's rules on a 4 KiB chat
// message: 0.35 µs against 2.3, BenchmarkMatch4K). With a backslash, a key
// could be escaped ("is\u0054ransfer"), and gjson decides.
func (s Set) Match(dir event.Direction, doc []byte) bool {
	// gjson.GetBytes copies each value it returns; a view of doc does
	// not, and nothing here outlives the call: one allocation less per
	// message.
	json := unsafe.String(unsafe.SliceData(doc), len(doc))
	plain := int8(-1) // absentFrom's: unknown; 1: doc has no backslash, 0: it has
	for i := range s.rules {
		r := &s.rules[i]
		if r.dir != dir {
			continue
		}
		ok := true
		for i := range r.conds {
			c := &r.conds[i]
			eq := false // a missing field is never equal
			if !c.absentFrom(json, &plain) {
				res := gjson.Get(json, c.path)
				eq = res.Exists() && res.String() == c.value
			}
			if eq == c.neg {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
