package rules

// Fuzz targets of the rule language: the rules are the operator's, the
// documents they are matched against are whatever a client or the upstream
// sends.
//
//	go test -run '^$' -fuzz=FuzzParse -fuzztime=3m ./presence/rules
//	go test -run '^$' -fuzz=FuzzMatch -fuzztime=3m ./presence/rules

import (
	"reflect"
	"strings"
	"testing"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// ruleSeeds are the rules of the tests and the defaults.
var ruleSeeds = []string{
	"server:data.isTransfer=true",
	"server:action=end_conversation&data.isTransfer!=true",
	"client:action=keep_alive",
	"action=keep_alive; type=ping",
	"data.url=http://x",
	"sideways:a=b", "client:a", "client:=b", "a=b&c",
	" ; ;client: a = b ;", "a!=", "a=b!=c", "server:a:b=c", "a==b", "#(x>1).y=z",
}

var docSeeds = []string{
	`{"action":"end_conversation","data":{"isTransfer":true}}`,
	`{"action":"end_conversation","data":{}}`,
	`{"action":"message","data":{"isTransfer":true,"text":"aaaa`,
	`{"action":"keep_alive"}`,
	`{"data":{"url":"http://x"}}`,
	`hello`, ``, `[1,2,{"a":"b"}]`, `{"a":"b","a":"c"}`,
}

// FuzzParse: Parse never panics; a parsed set keeps its text (String), the
// text parses to the same set, and Has agrees with what the set can match.
func FuzzParse(f *testing.F) {
	for _, s := range ruleSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		s, err := Parse(src, event.FromClient)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "rule ") {
				t.Fatalf("error %q does not quote the rule", err)
			}
			return
		}
		if s.String() != src {
			t.Fatalf("String() = %q, want %q", s.String(), src)
		}
		again, err := Parse(s.String(), event.FromClient)
		if err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("%q parses to %+v, its String to %+v, %v", src, s, again, err)
		}
		blank := true
		for _, r := range strings.Split(src, ";") {
			blank = blank && strings.TrimSpace(r) == ""
		}
		if s.Empty() != blank {
			t.Fatalf("Empty() = %v for %q", s.Empty(), src)
		}
		for _, r := range s.rules {
			if !s.Has(r.dir) || len(r.conds) == 0 {
				t.Fatalf("rule %+v of %q", r, src)
			}
			for _, c := range r.conds {
				if c.path == "" || c.path != strings.TrimSpace(c.path) || c.value != strings.TrimSpace(c.value) {
					t.Fatalf("condition %+v of %q", c, src)
				}
			}
		}
	})
}

// FuzzMatch: Match never panics on any document; "a;b" matches what a or b
// matches, and "DIR:c1&c2" what both "DIR:c1" and "DIR:c2" match.
func FuzzMatch(f *testing.F) {
	for i, r := range ruleSeeds {
		f.Add(r, ruleSeeds[(i+1)%len(ruleSeeds)], []byte(docSeeds[i%len(docSeeds)]), i%2 == 0)
	}
	f.Fuzz(func(t *testing.T, a, b string, doc []byte, server bool) {
		dir := event.FromClient
		if server {
			dir = event.FromServer
		}
		sa, errA := Parse(a, event.FromClient)
		sb, errB := Parse(b, event.FromClient)
		if errA != nil || errB != nil {
			return
		}
		both, err := Parse(a+";"+b, event.FromClient)
		if err != nil {
			t.Fatalf("%q and %q parse, %q does not: %v", a, b, a+";"+b, err)
		}
		ma, mb := sa.Match(dir, doc), sb.Match(dir, doc)
		if ref := withoutKeySearch(sa).Match(dir, doc); ref != ma {
			t.Fatalf("%q on %q: %v, gjson alone says %v", a, doc, ma, ref)
		}
		if got := both.Match(dir, doc); got != (ma || mb) {
			t.Fatalf("%q matches %q: %v, but %q: %v and %q: %v", doc, a+";"+b, got, a, ma, b, mb)
		}
		// Conjunction, for a and b that are one condition each without a direction.
		if strings.ContainsAny(a+b, ";&:") || len(sa.rules) != 1 || len(sb.rules) != 1 {
			return
		}
		and, err := Parse("server:"+a+"&"+b, event.FromClient)
		if err != nil {
			t.Fatalf("server:%s&%s: %v", a, b, err)
		}
		ca, _ := Parse("server:"+a, event.FromClient)
		cb, _ := Parse("server:"+b, event.FromClient)
		want := ca.Match(event.FromServer, doc) && cb.Match(event.FromServer, doc)
		if got := and.Match(event.FromServer, doc); got != want {
			t.Fatalf("%q matches server:%s&%s: %v, each alone: %v", doc, a, b, got, want)
		}
	})
}
