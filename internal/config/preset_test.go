package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/presence-sidecar/presence-sidecar/proxy"
	"github.com/presence-sidecar/presence-sidecar/proxy/event"
)

// seed is what Defaults are: the two must not drift apart.
func TestSeedPresetIsTheDefaults(t *testing.T) {
	d := Defaults()
	seed, ok := LookupPreset("seed")
	if !ok || Presets[0].Name != "seed" {
		t.Fatal("no seed preset first")
	}
	got := Preset{Name: "seed", Framing: d.Framing(), SessionIDFrom: d.SessionIDFrom, BotIDFrom: d.BotIDFrom,
		PresenceIgnore: d.PresenceIgnore, HandoffStartMatch: d.HandoffStartMatch, HandoffEndMatch: d.HandoffEndMatch}
	if got != seed {
		t.Fatalf("Defaults %+v\nseed     %+v", got, seed)
	}
	if d.Preset != "seed" {
		t.Fatalf("default PRESET %q", d.Preset)
	}
}

// Each preset sets its values, and every one of them parses (a preset that
// did not would stop every start-up that names it).
func TestEachPresetSetsItsValues(t *testing.T) {
	framings := map[string]proxy.Framing{"seed": proxy.FramingJSON, "socketio": proxy.FramingSocketIO, "sockjs": proxy.FramingSockJS, "centrifuge": proxy.FramingCentrifuge}
	if len(Presets) != len(framings) {
		t.Fatalf("%d presets, want %d", len(Presets), len(framings))
	}
	for _, p := range Presets {
		c, err := Load([]string{"UPSTREAM_URL=http://u", "PRESET=" + p.Name})
		if err != nil {
			t.Fatalf("PRESET=%s: %v", p.Name, err)
		}
		if c.SessionIDFrom != p.SessionIDFrom || c.BotIDFrom != p.BotIDFrom || c.PresenceIgnore != p.PresenceIgnore ||
			c.HandoffStartMatch != p.HandoffStartMatch || c.HandoffEndMatch != p.HandoffEndMatch {
			t.Fatalf("PRESET=%s gave %+v", p.Name, c)
		}
		if c.Framing() != framings[p.Name] {
			t.Fatalf("PRESET=%s: framing %v", p.Name, c.Framing())
		}
		r, err := c.PresenceRules()
		if err != nil || r.Ignore.Empty() || !r.HandoffStart.Has(event.FromServer) || !r.HandoffEnd.Has(event.FromServer) {
			t.Fatalf("PRESET=%s rules: %+v %v", p.Name, r, err)
		}
	}
}

// The heartbeats and chatter each preset ignores, and the messages it does
// not, on the documents the framings make (proxy/framing.go).
func TestPresetRulesOnDecodedMessages(t *testing.T) {
	for _, tc := range []struct {
		preset, doc string
		ignored     bool
	}{
		{"socketio", `{"type":"pong"}`, true},
		{"socketio", `{"type":"connect","nsp":"/","data":{"sessionId":"s"}}`, true},
		{"socketio", `{"type":"ack","nsp":"/","id":3,"data":[]}`, true},
		{"socketio", `{"type":"event","nsp":"/","data":["keep_alive"]}`, true},
		{"socketio", `{"type":"event","nsp":"/","data":["chat",{"text":"hi"}]}`, false},
		{"centrifuge", `{"type":"pong"}`, true},
		{"centrifuge", `{"type":"subscribe","id":2,"subscribe":{"channel":"c"}}`, true},
		{"centrifuge", `{"type":"publish","id":3,"publish":{"channel":"c","data":{}}}`, false},
		{"centrifuge", `{"type":"rpc","id":4,"rpc":{"method":"m"}}`, false},
		{"sockjs", `{"action":"keep_alive"}`, true},
		{"sockjs", `{"action":"message","data":{"text":"hi"}}`, false},
	} {
		c, _ := Load([]string{"UPSTREAM_URL=http://u", "PRESET=" + tc.preset})
		r, _ := c.PresenceRules()
		if got := r.Ignore.Match(event.FromClient, []byte(tc.doc)); got != tc.ignored {
			t.Errorf("PRESET=%s %s: ignored %v, want %v", tc.preset, tc.doc, got, tc.ignored)
		}
	}
}

func TestExplicitVariablesWinOverPreset(t *testing.T) {
	c, err := Load([]string{"UPSTREAM_URL=http://u", "PRESET=centrifuge", "SESSION_ID_FROM=cookie:sid", "HANDOFF_END_MATCH=server:type=push&push.pub.data.done=true"})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := LookupPreset("centrifuge")
	if c.SessionIDFrom != "cookie:sid" || c.HandoffEndMatch != "server:type=push&push.pub.data.done=true" {
		t.Fatalf("explicit values lost: %+v", c)
	}
	if c.BotIDFrom != p.BotIDFrom || c.PresenceIgnore != p.PresenceIgnore || c.HandoffStartMatch != p.HandoffStartMatch || c.Framing() != proxy.FramingCentrifuge {
		t.Fatalf("preset values lost: %+v", c)
	}
}

// An unknown preset is a start-up error like any other, reported with the
// others.
func TestUnknownPresetIsAConfigError(t *testing.T) {
	_, err := Load([]string{"UPSTREAM_URL=http://u", "PRESET=socket.io", "LOG_LEVEL=loud"})
	var v *VarError
	if !errors.As(err, &v) {
		t.Fatalf("want VarErrors, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{`PRESET="socket.io": want seed, socketio, sockjs or centrifuge`, "LOG_LEVEL"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("error %q lacks %q", msg, want)
		}
	}
	// Its values are not applied: the rest is checked against seed's.
	if _, err := Load([]string{"UPSTREAM_URL=http://u", "PRESET=nope", "HANDOFF_START_MATCH=oops"}); err == nil ||
		!strings.Contains(err.Error(), "PRESET") || !strings.Contains(err.Error(), "HANDOFF_START_MATCH") {
		t.Fatalf("want both errors, got %v", err)
	}
}

func TestBlankPresetIsSeed(t *testing.T) {
	c, err := Load([]string{"UPSTREAM_URL=http://u", "PRESET="})
	if err != nil || c.Framing() != proxy.FramingJSON || c.SessionIDFrom != Defaults().SessionIDFrom {
		t.Fatalf("PRESET= gave %+v, %v", c, err)
	}
}
