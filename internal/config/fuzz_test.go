package config

// Fuzz target of the environment parsing: whatever value a variable holds,
// Load either succeeds or stops start-up with an error naming a variable it
// was given, and never shows a secret in it.
//
//	go test -run '^$' -fuzz=FuzzLoad -fuzztime=3m ./internal/config

import (
	"net/url"
	"strings"
	"testing"
)

// fuzzVars are the variables FuzzLoad sets: every one Load validates,
// except PRESENCE_BOTS_FILE (it names a file to read).
var fuzzVars = []string{
	"UPSTREAM_URL", "READ_HEADER_TIMEOUT", "MAX_HEADER_BYTES", "MAX_CONNECTIONS", "UPSTREAM_DIAL_TIMEOUT",
	"INSPECT_BYTES", "PROBE_INTERVAL", "PROBE_TIMEOUT", "SESSION_ID_FROM", "BOT_ID_FROM",
	"PRESENCE_ENABLED", "PRESENCE_CHECK_INTERVAL", "PRESENCE_ALLOW_ANY_INTERVAL", "PRESENCE_MODE", "PRESENCE_IGNORE",
	"PRESENCE_FORGET_AFTER", "PRESENCE_MAX_SESSIONS", "HANDOFF_DETECT", "HANDOFF_START_MATCH", "HANDOFF_END_MATCH",
	"HANDOFF_URL", "HANDOFF_EXPIRE_PATH", "HANDOFF_MESSAGE_PATH", "HANDOFF_SIGNING_SECRET", "HANDOFF_TIMEOUT",
	"HANDOFF_RETRY_MAX_DELAY", "HANDOFF_RETRY_FOR", "REDIS_URL", "LOG_LEVEL", "LOG_FORMAT", "SHUTDOWN_GRACE",
	"ADMIN_TOKEN", "HANDOFF_TOKEN",
}

// fuzzBase is a valid environment with presence on.
var fuzzBase = []string{"UPSTREAM_URL=http://127.0.0.1:3000", "PRESENCE_ENABLED=true", "HANDOFF_URL=https://human.example/api"}

func indexOf(name string) uint8 {
	for i, v := range fuzzVars {
		if v == name {
			return uint8(i)
		}
	}
	panic(name)
}

func FuzzLoad(f *testing.F) {
	for _, c := range []struct {
		a, av, b, bv string
	}{
		{"UPSTREAM_URL", "localhost", "PROBE_INTERVAL", "soon"},
		{"MAX_CONNECTIONS", "lots", "PRESENCE_ENABLED", "yes please"},
		{"PRESENCE_CHECK_INTERVAL", "30s", "PRESENCE_ALLOW_ANY_INTERVAL", "true"},
		{"PRESENCE_MODE", "vibes", "HANDOFF_DETECT", "rules,psychic"},
		{"HANDOFF_URL", "", "PRESENCE_ENABLED", "true"},
		{"HANDOFF_EXPIRE_PATH", "expire", "PROBE_TIMEOUT", "0s"},
		{"SESSION_ID_FROM", "bogus:x", "PRESENCE_IGNORE", "sideways:a=b"},
		{"HANDOFF_START_MATCH", "server:data.isTransfer", "HANDOFF_SIGNING_SECRET", "whsec_c2VrcmV0LXNlY3JldC1zZWNyZXQ="},
		{"REDIS_URL", "redis://:hunter22@redis:6379/0", "UPSTREAM_URL", "ftp://u:hunter22@up:3000"},
		{"HANDOFF_URL", "https://h/api?token=hunter22&x=1", "HANDOFF_MESSAGE_PATH", "nope"},
		{"UPSTREAM_URL", "http://u:p@[::1", "HANDOFF_URL", "mailto://u:hunter22@h"},
		{"PRESENCE_MAX_SESSIONS", "-1", "INSPECT_BYTES", "63"},
		{"PRESENCE_MAX_SESSIONS", "99999999999999999999", "MAX_HEADER_BYTES", "0x400"},
		{"PRESENCE_FORGET_AFTER", "-1h", "SHUTDOWN_GRACE", "1e9"},
		{"LOG_LEVEL", "trace", "LOG_FORMAT", "xml"},
		{"ADMIN_TOKEN", "change-me-please", "HANDOFF_TOKEN", "bearer-secret"},
	} {
		f.Add(indexOf(c.a), c.av, indexOf(c.b), c.bv)
	}
	f.Fuzz(func(t *testing.T, ia uint8, av string, ib uint8, bv string) {
		a, b := fuzzVars[int(ia)%len(fuzzVars)], fuzzVars[int(ib)%len(fuzzVars)]
		if a == b {
			b, bv = a, av // one variable; a later entry would win anyway
		}
		env := append(append([]string(nil), fuzzBase...), a+"="+av, b+"="+bv)
		_, err := Load(env)
		if err == nil {
			return
		}
		msg := err.Error()
		if !strings.Contains(msg, a) && !strings.Contains(msg, b) {
			t.Fatalf("%s=%q, %s=%q: the error names neither: %s", a, av, b, bv, msg)
		}
		for _, v := range []struct{ name, value, otherName, other string }{{a, av, b, bv}, {b, bv, a, av}} {
			for _, s := range hidden(v.name, v.value) {
				if len(s) < 8 || strings.Contains(v.other, s) || !strings.Contains(msg, s) {
					continue
				}
				// Shown: unless the text is the error's own wording (a
				// variable's name, "want a …"), which it also says without it.
				_, without := Load(append(append([]string(nil), fuzzBase...), v.name+"=", v.otherName+"="+v.other))
				if without == nil || !strings.Contains(without.Error(), s) {
					t.Fatalf("%s=%q: the error shows %q: %s", v.name, v.value, s, msg)
				}
			}
		}
	})
}

// hidden are the parts of a value an error must never show: a secret, a
// URL's password and credential-like query values, an unparsable URL.
func hidden(name, value string) []string {
	if Secret(name) {
		return []string{value}
	}
	if !strings.HasSuffix(name, "_URL") {
		return nil
	}
	u, err := url.Parse(value)
	if err != nil {
		return []string{value}
	}
	shown := RedactURL(value)
	var out []string
	if p, ok := u.User.Password(); ok && !strings.Contains(shown, p) {
		out = append(out, p)
	}
	for k, vs := range u.Query() {
		if Secret(strings.ToUpper(k)) || strings.EqualFold(k, "key") {
			for _, v := range vs {
				if !strings.Contains(shown, v) {
					out = append(out, v)
				}
			}
		}
	}
	return out
}

// TestMaxSessionsMustBeZeroOrMore: PRESENCE_MAX_SESSIONS takes 0 (no cap)
// or a positive count, and names itself otherwise.
func TestMaxSessionsMustBeZeroOrMore(t *testing.T) {
	for v, want := range map[string]string{"-1": "want 0 (no cap) or more", "many": "want a whole number"} {
		_, err := Load(append(append([]string(nil), fuzzBase...), "PRESENCE_MAX_SESSIONS="+v))
		if err == nil || !strings.Contains(err.Error(), "PRESENCE_MAX_SESSIONS=") || !strings.Contains(err.Error(), want) {
			t.Errorf("PRESENCE_MAX_SESSIONS=%s: %v", v, err)
		}
	}
	for v, want := range map[string]int{"0": 0, "250": 250} {
		c, err := Load(append(append([]string(nil), fuzzBase...), "PRESENCE_MAX_SESSIONS="+v))
		if err != nil || c.PresenceMaxSessions != want {
			t.Errorf("PRESENCE_MAX_SESSIONS=%s: %d, %v", v, c.PresenceMaxSessions, err)
		}
	}
	if c, _ := Load(fuzzBase); c.PresenceMaxSessions != 100_000 {
		t.Errorf("default %d", c.PresenceMaxSessions)
	}
}
