package rules

import (
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
