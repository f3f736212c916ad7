package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/internal/config"
	"github.com/presence-sidecar/presence-sidecar/presence"
)

// TestStepsFollowTheMode: the printed steps say how a client leaves in the
// mode the demo runs: closing the tab (connection), or staying silent
// (activity), where closing the tab is not the thing to try.
func TestStepsFollowTheMode(t *testing.T) {
	on := func(mode presence.Mode, d time.Duration) presence.Settings {
		return presence.Settings{Enabled: true, Mode: mode, CheckInterval: d, ReturnMessage: "voltou"}
	}
	conn := steps(on(presence.ModeConnection, 10*time.Second))
	for _, want := range []string{"close the tab", "Wait 10s", `POST /message  "voltou"`, "reopen"} {
		if !strings.Contains(conn, want) {
			t.Errorf("connection mode steps lack %q:\n%s", want, conn)
		}
	}
	act := steps(on(presence.ModeActivity, 30*time.Second))
	for _, want := range []string{"type nothing for 30s", "keep_alive is not", "reason inactive", "Type something in the same tab", `POST /message  "voltou"`} {
		if !strings.Contains(act, want) {
			t.Errorf("activity mode steps lack %q:\n%s", want, act)
		}
	}
	if strings.Contains(act, "close the tab") || strings.Contains(act, "reopen link") {
		t.Errorf("activity mode steps tell to close the tab:\n%s", act)
	}
	if s := steps(presence.Settings{Enabled: true, CheckInterval: time.Minute}); !strings.Contains(s, "close the tab") || !strings.Contains(s, presence.DefaultReturnMessage) {
		t.Errorf("the default mode is connection, the default text %q:\n%s", presence.DefaultReturnMessage, s)
	}
	// The longest lines are those with the default return message.
	long := steps(presence.Settings{Enabled: true, CheckInterval: time.Minute}) + steps(presence.Settings{Enabled: true, Mode: presence.ModeActivity, CheckInterval: time.Minute})
	for _, line := range strings.Split(long, "\n") {
		if len([]rune(line)) > 100 {
			t.Errorf("a step line is %d characters long: %q", len([]rune(line)), line)
		}
	}
}

// TestDemoBotSettings: the steps follow what the demo's bot gets, which
// PRESENCE_BOTS_FILE may change from the environment's defaults.
func TestDemoBotSettings(t *testing.T) {
	load := func(env ...string) config.Config {
		t.Helper()
		c, err := config.Load(append([]string{"UPSTREAM_URL=http://127.0.0.1:1", "PRESENCE_ENABLED=true", "HANDOFF_URL=http://127.0.0.1:2", "PRESENCE_ALLOW_ANY_INTERVAL=true", "PRESENCE_CHECK_INTERVAL=10s"}, env...))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if s := demoBot(load("PRESENCE_MODE=activity")); s.Mode != presence.ModeActivity || s.CheckInterval != 10*time.Second || !s.Enabled {
		t.Errorf("PRESENCE_MODE=activity: %+v", s)
	}
	file := filepath.Join(t.TempDir(), "bots.json")
	if err := os.WriteFile(file, []byte(`{"demo-bot": {"mode": "activity", "checkInterval": "20s", "returnMessage": "de volta"}, "other": {"enabled": false}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	s := demoBot(load("PRESENCE_BOTS_FILE=" + file))
	if s.Mode != presence.ModeActivity || s.CheckInterval != 20*time.Second || s.ReturnText() != "de volta" || !s.Enabled {
		t.Errorf("the bots file's demo-bot: %+v", s)
	}
	if got := steps(s); !strings.Contains(got, "type nothing for 20s") || !strings.Contains(got, `"de volta"`) {
		t.Errorf("steps for the bots file's demo-bot:\n%s", got)
	}
	if err := os.WriteFile(file, []byte(`{"demo-bot": {"enabled": false}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := steps(demoBot(load("PRESENCE_BOTS_FILE=" + file))); !strings.Contains(got, "Presence is off for bot demo-bot") {
		t.Errorf("presence off for demo-bot is not said:\n%s", got)
	}
}
