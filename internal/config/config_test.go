package config

import (
	"errors"
	"strings"
	"testing"
)

func TestDefaults(t *testing.T) {
	c, err := Load([]string{"UPSTREAM_URL=http://127.0.0.1:3000"})
	if err != nil {
		t.Fatal(err)
	}
	if c.ListenAddr != ":8080" || c.AdminAddr != "127.0.0.1:9090" || c.PresenceCheckInterval.String() != "2m0s" ||
		c.ProbeInterval.String() != "25s" || c.ProbeTimeout.String() != "20s" || c.HandoffExpirePath != "/expire" ||
		c.HandoffRetryFor.String() != "24h0m0s" || c.PresenceMode != "connection" || c.DataDir != "./data" {
		t.Fatalf("unexpected defaults: %+v", c)
	}
	d, _ := c.HandoffDetection()
	if !d.Rules || !d.API || d.Always {
		t.Fatalf("HANDOFF_DETECT default: %+v", d)
	}
}

// Every bad value names the variable, the value and what is allowed.
func TestBadValuesNameVariableValueAndRange(t *testing.T) {
	base := []string{"UPSTREAM_URL=http://127.0.0.1:3000"}
	cases := []struct {
		env  []string
		want []string
	}{
		{nil, []string{"UPSTREAM_URL is required"}},
		{[]string{"UPSTREAM_URL=localhost"}, []string{"UPSTREAM_URL", `"localhost"`, "http://"}},
		{append(base, "PROBE_INTERVAL=soon"), []string{"PROBE_INTERVAL", `"soon"`, "duration"}},
		{append(base, "MAX_CONNECTIONS=lots"), []string{"MAX_CONNECTIONS", `"lots"`, "whole number"}},
		{append(base, "PRESENCE_ENABLED=yes please"), []string{"PRESENCE_ENABLED", "true or false"}},
		{append(base, "PRESENCE_ENABLED=true", "HANDOFF_URL=http://h", "PRESENCE_CHECK_INTERVAL=30s"), []string{"PRESENCE_CHECK_INTERVAL", `"30s"`, "1m0s to 10m0s"}},
		{append(base, "PRESENCE_ENABLED=true", "HANDOFF_URL=http://h", "PRESENCE_CHECK_INTERVAL=11m"), []string{"PRESENCE_CHECK_INTERVAL", `"11m0s"`}},
		{append(base, "PRESENCE_MODE=vibes"), []string{"PRESENCE_MODE", `"vibes"`, "connection or activity"}},
		{append(base, "PRESENCE_ENABLED=true"), []string{"HANDOFF_URL", "required when PRESENCE_ENABLED"}},
		{append(base, "HANDOFF_DETECT=rules,psychic"), []string{"HANDOFF_DETECT", "always, rules, api"}},
		{append(base, "LOG_FORMAT=xml"), []string{"LOG_FORMAT", `"xml"`, "json or console"}},
		{append(base, "HANDOFF_EXPIRE_PATH=expire"), []string{"HANDOFF_EXPIRE_PATH", "starting with /"}},
		{append(base, "PROBE_TIMEOUT=0s"), []string{"PROBE_TIMEOUT", "positive"}},
		// Checked with presence off too: a mistake shows the day it is made.
		{append(base, "SESSION_ID_FROM=bogus:x"), []string{"SESSION_ID_FROM", "bogus"}},
		{append(base, "PRESENCE_IGNORE=sideways:a=b"), []string{"PRESENCE_IGNORE", "client or server"}},
		{append(base, "HANDOFF_START_MATCH=server:data.isTransfer"), []string{"HANDOFF_START_MATCH", "PATH=VALUE"}},
		{append(base, "PRESENCE_BOTS_FILE=/nonexistent/bots.json"), []string{"PRESENCE_BOTS_FILE", "/nonexistent/bots.json"}},
		{append(base, "HANDOFF_SIGNING_SECRET=sekrit"), []string{"HANDOFF_SIGNING_SECRET", "whsec_"}},
		{append(base, "REDIS_URL=ftp://:pw@redis:6379/0"), []string{"REDIS_URL", "ftp://:xxxxx@redis:6379/0", "invalid URL scheme"}},
		{append(base, "REDIS_URL=redis://redis:6379/x"), []string{"REDIS_URL", "invalid database number"}},
		{append(base, "REDIS_URL=redis://redis", "REDIS_KEY_PREFIX={app}:"), []string{"REDIS_KEY_PREFIX", "{app}:", "no braces"}},
		{append(base, "REDIS_URL=redis://redis", "REDIS_LEASE_TTL=500ms"), []string{"REDIS_LEASE_TTL", "500ms", "1s to 1h"}},
	}
	for _, c := range cases {
		_, err := Load(c.env)
		if err == nil {
			t.Errorf("%v: no error", c.env)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q does not mention %q", c.env, err, w)
			}
		}
	}
}

func TestAllowAnyIntervalLiftsRange(t *testing.T) {
	_, err := Load([]string{"UPSTREAM_URL=http://u", "PRESENCE_ENABLED=true", "HANDOFF_URL=http://h",
		"PRESENCE_CHECK_INTERVAL=2s", "PRESENCE_ALLOW_ANY_INTERVAL=true"})
	if err != nil {
		t.Fatal(err)
	}
}

// A password in a URL is never shown: not in an error about that URL, nor
// in one about another variable's URL.
func TestErrorsRedactURLPasswords(t *testing.T) {
	for _, env := range [][]string{
		{"UPSTREAM_URL=ftp://u:hunter2@up:3000"},
		{"UPSTREAM_URL=http://127.0.0.1:3000", "HANDOFF_URL=mailto://u:hunter2@h"},
		{"UPSTREAM_URL=http://127.0.0.1:3000", "HANDOFF_URL=https://h/api?token=hunter2&x=1", "HANDOFF_EXPIRE_PATH=nope"},
	} {
		_, err := Load(env)
		if err == nil {
			t.Fatalf("%v: no error", env)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%v: error shows the password: %v", env, err)
		}
	}
	if got := RedactURL("https://u:hunter2@h/api?token=hunter2&x=1"); got != "https://u:xxxxx@h/api?token=xxxxx&x=1" {
		t.Errorf("RedactURL = %q", got)
	}
}

// One start-up shows every mistake, whether a value does not parse, is out
// of range or is missing, each naming its variable once.
func TestAllErrorsAtOnce(t *testing.T) {
	_, err := Load([]string{"PROBE_INTERVAL=abc", "MAX_HEADER_BYTES=zz", "LOG_LEVEL=loud",
		"PRESENCE_ENABLED=true", "PRESENCE_CHECK_INTERVAL=11m", "REDIS_URL=redis://r", "REDIS_LEASE_TTL=1ms"})
	var all Errors
	if !errors.As(err, &all) {
		t.Fatalf("error %v (%T) is not Errors", err, err)
	}
	want := []string{"UPSTREAM_URL is required", `PROBE_INTERVAL="abc"`, `MAX_HEADER_BYTES="zz"`, `LOG_LEVEL="loud"`,
		`PRESENCE_CHECK_INTERVAL="11m0s"`, "HANDOFF_URL", `REDIS_LEASE_TTL="1ms"`}
	if len(all) != len(want) {
		t.Errorf("%d errors, want %d:\n%v", len(all), len(want), err)
	}
	for _, w := range want {
		if n := strings.Count(err.Error(), w); n != 1 {
			t.Errorf("%q appears %d times in:\n%v", w, n, err)
		}
	}
	var v *VarError
	if !errors.As(err, &v) || v.Name == "" {
		t.Errorf("errors.As finds no VarError in %v", err)
	}
}

// A good environment is no error at all (not an empty list).
func TestNoErrorsIsNil(t *testing.T) {
	if _, err := Load([]string{"UPSTREAM_URL=http://u"}); err != nil {
		t.Fatalf("err = %#v", err)
	}
}
