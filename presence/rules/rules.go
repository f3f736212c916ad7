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

// Match reports whether doc, a JSON message (possibly a truncated prefix)
// sent in direction dir, satisfies any rule.
func (s Set) Match(dir event.Direction, doc []byte) bool {
	// gjson.GetBytes copies each value it returns; a view of doc does
	// not, and nothing here outlives the call: one allocation less per
	// message.
	json := unsafe.String(unsafe.SliceData(doc), len(doc))
	for i := range s.rules {
		r := &s.rules[i]
		if r.dir != dir {
			continue
		}
		ok := true
		for _, c := range r.conds {
			res := gjson.Get(json, c.path)
			eq := res.Exists() && res.String() == c.value
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
