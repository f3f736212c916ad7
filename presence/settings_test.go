package presence

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/store"
)

// TestSettingsValidation pins ValidateSettings' texts (as the bots file and
// the admin API show them), Resolve's merge, and New refusing a bad default.
func TestSettingsValidation(t *testing.T) {
	cases := []struct {
		s        Settings
		allowAny bool
		want     string
	}{
		{Settings{CheckInterval: 30 * time.Second}, false, `checkInterval "30s": want 1m0s to 10m0s (the seed's 1–10 minutes)`},
		{Settings{CheckInterval: 11 * time.Minute}, false, `checkInterval "11m0s": want 1m0s to 10m0s (the seed's 1–10 minutes)`},
		{Settings{CheckInterval: 30 * time.Second}, true, ""},
		{Settings{CheckInterval: 0}, true, `checkInterval "0s": want a positive duration`},
		{Settings{CheckInterval: time.Minute, Mode: "tcp"}, false, `mode "tcp": want connection or activity`},
		{Settings{CheckInterval: 10 * time.Minute, Mode: ModeActivity}, false, ""},
		{Settings{CheckInterval: time.Minute}, false, ""},
	}
	for _, c := range cases {
		err := ValidateSettings(c.s, c.allowAny)
		if got := fmt.Sprint(err); (c.want == "" && err != nil) || (c.want != "" && got != c.want) {
			t.Errorf("%+v allowAny=%v: %v, want %q", c.s, c.allowAny, err, c.want)
		}
	}
	def := Settings{Enabled: true, CheckInterval: interval}
	if _, err := Resolve(def, store.BotSettings{CheckInterval: "soon"}, false); err == nil || !strings.Contains(err.Error(), `checkInterval "soon"`) {
		t.Errorf("bad duration: %v", err)
	}
	got, err := Resolve(def, store.BotSettings{Mode: " Activity ", ReturnMessage: "x"}, false)
	if err != nil || got.Mode != ModeActivity || got.ReturnMessage != "x" || got.CheckInterval != interval || !got.Enabled {
		t.Errorf("Resolve = %+v, %v", got, err)
	}
	if _, err := New(Options{Store: store.NewMemory(), Defaults: Settings{CheckInterval: time.Second}}); err == nil ||
		!strings.Contains(err.Error(), `checkInterval "1s": want 1m0s to 10m0s`) {
		t.Errorf("New accepted a bad default: %v", err)
	}
}

// TestCheckInterval pins the one interval check and its wording, which the
// environment's PRESENCE_CHECK_INTERVAL and ValidateSettings share.
func TestCheckInterval(t *testing.T) {
	cases := []struct {
		d        time.Duration
		allowAny bool
		want     string
	}{
		{time.Minute, false, ""},
		{10 * time.Minute, false, ""},
		{2 * time.Minute, false, ""},
		{30 * time.Second, false, "want 1m0s to 10m0s (the seed's 1–10 minutes)"},
		{10*time.Minute + 1, false, "want 1m0s to 10m0s (the seed's 1–10 minutes)"},
		{30 * time.Second, true, ""},
		{time.Hour, true, ""},
		{0, false, "want a positive duration"},
		{0, true, "want a positive duration"},
		{-time.Minute, true, "want a positive duration"},
	}
	for _, c := range cases {
		err := CheckInterval(c.d, c.allowAny)
		if got := fmt.Sprint(err); (c.want == "" && err != nil) || (c.want != "" && got != c.want) {
			t.Errorf("CheckInterval(%v, %v) = %v, want %q", c.d, c.allowAny, err, c.want)
		}
	}
}

// TestSettingsJSON pins the JSON of Settings: every setting, under the
// names of store.BotSettings, in order, zero values included.
func TestSettingsJSON(t *testing.T) {
	if got := strings.Join(botSettingNames, ","); got != "enabled,checkInterval,returnMessage,mode" {
		t.Fatalf("setting names %s", got)
	}
	for s, want := range map[Settings]string{
		{Enabled: true, CheckInterval: 2 * time.Minute, Mode: ModeActivity, ReturnMessage: "<voltou> & \"bem\""}: `{"enabled":true,"checkInterval":"2m0s","returnMessage":"\u003cvoltou\u003e \u0026 \"bem\"","mode":"activity"}`,
		{}: `{"enabled":false,"checkInterval":"0s","returnMessage":"","mode":"connection"}`,
	} {
		b, err := json.Marshal(s)
		if err != nil || string(b) != want {
			t.Errorf("%+v: %s %v, want %s", s, b, err, want)
		}
		var back Settings
		if err := json.Unmarshal(b, &back); err != nil || back != (Settings{s.Enabled, s.CheckInterval, s.ReturnMessage, s.Mode.normal()}) {
			t.Errorf("%s read back as %+v, %v", b, back, err)
		}
	}
	var back Settings
	if err := json.Unmarshal([]byte(`{"checkInterval":"soon"}`), &back); err == nil || !strings.Contains(err.Error(), `checkInterval "soon" is not a duration`) {
		t.Errorf("bad duration: %v", err)
	}
}

// TestParseBotSettingsChange pins the admin API's PUT body: set fields,
// null or "" clears one, and errors name the field and the allowed ones.
func TestParseBotSettingsChange(t *testing.T) {
	set, clear, err := ParseBotSettingsChange(strings.NewReader(`{"enabled":false,"checkInterval":"3m","returnMessage":null,"mode":""}`))
	slices.Sort(clear)
	if err != nil || set.Enabled == nil || *set.Enabled || set.CheckInterval != "3m" || set.ReturnMessage != "" || set.Mode != "" ||
		!slices.Equal(clear, []string{"mode", "returnMessage"}) {
		t.Fatalf("%+v %v %v", set, clear, err)
	}
	if set, clear, err := ParseBotSettingsChange(strings.NewReader(`{}`)); err != nil || set != (store.BotSettings{}) || clear != nil {
		t.Fatalf("empty change: %+v %v %v", set, clear, err)
	}
	for body, want := range map[string]string{
		`["enabled"]`:             "body must be a JSON object with enabled, checkInterval, returnMessage, mode: json: cannot unmarshal array",
		``:                        "body must be a JSON object with enabled, checkInterval, returnMessage, mode: EOF",
		`{"checkIntervall":"3m"}`: `unknown field "checkIntervall" (want enabled, checkInterval, returnMessage, mode)`,
		`{"enabled":"yes"}`:       "enabled: json: cannot unmarshal string into Go value of type bool",
		`{"checkInterval":180}`:   "checkInterval: json: cannot unmarshal number into Go value of type string",
	} {
		if _, _, err := ParseBotSettingsChange(strings.NewReader(body)); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: %v, want %q", body, err, want)
		}
	}
}
