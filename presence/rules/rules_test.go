package rules

import (
	"slices"
	"strings"
	"testing"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

func TestSeedDefaults(t *testing.T) {
	start := MustParse("server:data.isTransfer=true", event.FromClient)
	end := MustParse("server:action=end_conversation&data.isTransfer!=true", event.FromClient)
	cases := []struct {
		name       string
		dir        event.Direction
		doc        string
		start, end bool
	}{
		{"transfer", event.FromServer, `{"action":"end_conversation","data":{"isTransfer":true}}`, true, false},
		{"end", event.FromServer, `{"action":"end_conversation","data":{}}`, false, true},
		{"end no data", event.FromServer, `{"action":"end_conversation"}`, false, true},
		{"end transfer false", event.FromServer, `{"action":"end_conversation","data":{"isTransfer":false}}`, false, true},
		{"client side ignored", event.FromClient, `{"action":"end_conversation","data":{"isTransfer":true}}`, false, false},
		{"message", event.FromServer, `{"action":"message","data":{"text":"hi"}}`, false, false},
		{"not json", event.FromServer, `hello`, false, false},
		{"truncated prefix", event.FromServer, `{"action":"message","data":{"isTransfer":true,"text":"aaaa`, true, false},
	}
	for _, c := range cases {
		if got := start.Match(c.dir, []byte(c.doc)); got != c.start {
			t.Errorf("%s: start = %v, want %v", c.name, got, c.start)
		}
		if got := end.Match(c.dir, []byte(c.doc)); got != c.end {
			t.Errorf("%s: end = %v, want %v", c.name, got, c.end)
		}
	}
}

func TestDefaultDirectionAndAlternatives(t *testing.T) {
	s := MustParse("action=keep_alive; type=ping", event.FromClient)
	if !s.Match(event.FromClient, []byte(`{"action":"keep_alive"}`)) || !s.Match(event.FromClient, []byte(`{"type":"ping"}`)) {
		t.Fatal("alternatives should match")
	}
	if s.Match(event.FromServer, []byte(`{"action":"keep_alive"}`)) {
		t.Fatal("rule without direction must take the default")
	}
	if !s.Has(event.FromClient) || s.Has(event.FromServer) {
		t.Fatal("Has is wrong")
	}
	if u := MustParse("data.url=http://x", event.FromClient); !u.Match(event.FromClient, []byte(`{"data":{"url":"http://x"}}`)) {
		t.Fatal("a colon in a value is not a direction")
	}
	if !(Set{}).Empty() || (Set{}).Match(event.FromClient, []byte(`{}`)) {
		t.Fatal("zero set must match nothing")
	}
}

func TestParseErrors(t *testing.T) {
	for _, bad := range []string{"sideways:a=b", "client:a", "client:=b", "a=b&c"} {
		if _, err := Parse(bad, event.FromClient); err == nil {
			t.Errorf("Parse(%q) should fail", bad)
		}
	}
}

// withoutKeySearch is s deciding by gjson alone, as Match did before its
// key search: the reference the search must agree with.
func withoutKeySearch(s Set) Set {
	out := Set{src: s.src}
	for _, r := range s.rules {
		cs := slices.Clone(r.conds)
		for i := range cs {
			cs[i].key = ""
		}
		out.rules = append(out.rules, rule{dir: r.dir, conds: cs})
	}
	return out
}

// TestKeySearchAgreesWithGJSON: a key that is absent decides at once, an
// escaped key still matches, and paths the search cannot read (array
// indexes, wildcards, escapes) are left to gjson.
func TestKeySearchAgreesWithGJSON(t *testing.T) {
	long := strings.Repeat("words and more words ", 200)
	docs := []string{
		`{"action":"message","data":{"sessionId":"s1","text":"` + long + `"}}`,
		`{"action":"message","data":{"sessionId":"s1","text":"` + long + `","isTransfer":true}}`,
		`{"action":"message","data":{"text":"say \"isTransfer\"","is\u0054ransfer":true}}`, // escaped key
		`{"action":"message","data":{"text":"a \"quote\"","isTransfer":true}}`,
		`{"action":"message","data":{"text":"isTransfer","other":true}}`, // the name as a value
		`{"type":"event","data":["end_conversation",{"isTransfer":true}]}`,
		`{"data":{"0":"x"},"items":["a","b"]}`,
		`{"action":"end_conversation","data":{"isTransfer":tru`, // truncated
		`not json at all`,
	}
	sets := []string{
		"server:data.isTransfer=true",
		"server:action=end_conversation&data.isTransfer!=true",
		"server:type=event&data.1.isTransfer=true",
		"server:data.0=x; server:items.1=b",
		"server:data.*=true",
		"server:data.is\\u0054ransfer=true",
		"server:data.text!=isTransfer",
	}
	matched := 0
	for _, src := range sets {
		s := MustParse(src, event.FromClient)
		ref := withoutKeySearch(s)
		for _, d := range docs {
			got, want := s.Match(event.FromServer, []byte(d)), ref.Match(event.FromServer, []byte(d))
			if got != want {
				t.Errorf("%s on %.80q: %v, gjson alone says %v", src, d, got, want)
			}
			if got {
				matched++
			}
		}
	}
	if matched < 6 {
		t.Errorf("only %d matches: the cases no longer test matching", matched)
	}
	if k := keyNeedle("data.1.isTransfer"); k != `"isTransfer"` {
		t.Errorf("keyNeedle(data.1.isTransfer) = %s", k)
	}
	for _, p := range []string{"data.1", "data.*", "a\\.b", "data.#", "@this", "a|b", "..a", "a..b", ".a"} {
		if k := keyNeedle(p); k != "" {
			t.Errorf("keyNeedle(%s) = %s, want none", p, k)
		}
	}
}

// BenchmarkMatch4K is the seed's hand-over rules on a 4 KiB chat message
// from the upstream, which has neither field (the common case).
func BenchmarkMatch4K(b *testing.B) {
	doc := []byte(`{"action":"message","data":{"sessionId":"s1","text":"` + strings.Repeat("words and more words ", 195) + `"}}`)
	start := MustParse("server:data.isTransfer=true", event.FromClient)
	end := MustParse("server:action=end_conversation&data.isTransfer!=true", event.FromClient)
	for _, c := range []struct {
		name string
		s, e Set
	}{{"key-search", start, end}, {"gjson-only", withoutKeySearch(start), withoutKeySearch(end)}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			b.ReportAllocs()
			for b.Loop() {
				if c.s.Match(event.FromServer, doc) || c.e.Match(event.FromServer, doc) {
					b.Fatal("matched")
				}
			}
		})
	}
}
