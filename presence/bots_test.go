package presence

import (
	"strings"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
)

// TestPerBotSettings: PRESENCE_BOTS_FILE's interval, enabled, return message
// and mode apply to their bots' sessions; PutBotSettings validates, stores
// and applies run-time changes, which win over the file field by field
// after a restart; clearing one falls back to the file, then the
// environment.
func TestPerBotSettings(t *testing.T) {
	yes, no := true, false
	clk := newClock()
	st := store.NewMemory()
	file := map[string]store.BotSettings{
		"slow":     {CheckInterval: "5m", ReturnMessage: "Cliente de volta"},
		"off":      {Enabled: &no},
		"blank":    {ReturnMessage: "   "},
		"activity": {Mode: "activity", Enabled: &yes},
	}
	r := newRig(t, st, clk, func(o *Options) { o.Bots = file })
	for i, bot := range []string{"slow", "off", "blank", "activity", ""} {
		c := event.ConnID(i + 1)
		r.handover(c, "s-"+bot, bot)
		if bot != "activity" {
			r.close(c)
		}
	}
	r.advance(interval)
	p := r.notes()
	got := map[string]bool{}
	for _, n := range p {
		got[n.SessionID] = true
	}
	if len(p) != 3 || !got["s-blank"] || !got["s-activity"] || !got["s-"] {
		t.Fatalf("after 2m: %v", p)
	}
	if v := r.view("s-off"); v.State != store.Absent || v.ExpireSent {
		t.Fatalf("disabled bot: state still tracked, no notification: %+v", v)
	}
	r.advance(3 * time.Minute)
	p = r.notes()
	if len(p) != 4 || p[3].SessionID != "s-slow" {
		t.Fatalf("slow bot after 5m: %v", kindsOf(p))
	}
	for i, bot := range []string{"slow", "off", "blank"} {
		r.open(event.ConnID(10+i), "s-"+bot, bot)
	}
	p = r.notes()
	texts := map[string]string{}
	for _, n := range p {
		if n.Kind == store.KindOnline {
			texts[n.SessionID] = n.Text
		}
	}
	if len(texts) != 2 || texts["s-slow"] != "Cliente de volta" || texts["s-blank"] != DefaultReturnMessage {
		t.Fatalf("return texts %v", texts)
	}

	// Run-time change: merged over the file entry, validated, persisted.
	if _, err := r.e.PutBotSettings("slow", store.BotSettings{CheckInterval: "30s"}); err == nil ||
		!strings.Contains(err.Error(), `checkInterval "30s": want 1m0s to 10m0s`) {
		t.Fatalf("invalid change accepted: %v", err)
	}
	set, err := r.e.PutBotSettings("slow", store.BotSettings{CheckInterval: "1m"})
	if err != nil {
		t.Fatal(err)
	}
	if set.CheckInterval != time.Minute || set.ReturnMessage != "Cliente de volta" || !set.Enabled {
		t.Fatalf("merged settings %+v", set)
	}
	if got := r.e.BotSettings("slow"); got != set {
		t.Fatalf("BotSettings %+v", got)
	}
	if b, _ := st.Bots(); b["slow"].CheckInterval != "1m" || b["slow"].ReturnMessage != "" {
		t.Fatalf("stored %+v: only the run-time change is stored, the file keeps its own", b)
	}
	r.close(10)
	r.advance(time.Minute)
	if p := r.notes(); p[len(p)-1].SessionID != "s-slow" || p[len(p)-1].Kind != store.KindOffline {
		t.Fatal("new interval not applied")
	}
	// A new engine: the run-time change wins over the file, field by field;
	// an edit of the file shows in the fields the API did not set.
	file["slow"] = store.BotSettings{CheckInterval: "5m", ReturnMessage: "Voltou (editado)"}
	r.restart(0)
	if got := r.e.BotSettings("slow"); got.CheckInterval != time.Minute || got.ReturnMessage != "Voltou (editado)" {
		t.Fatalf("after restart %+v", got)
	}
	// Clearing a run-time change falls back to the file, then the environment.
	if got, err := r.e.PutBotSettings("slow", store.BotSettings{}, "checkInterval"); err != nil || got.CheckInterval != 5*time.Minute {
		t.Fatalf("cleared interval: %+v %v", got, err)
	}
	if _, err := r.e.PutBotSettings("b2", store.BotSettings{ReturnMessage: "Custom"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.e.PutBotSettings("b2", store.BotSettings{}, "returnMessage"); got.ReturnText() != DefaultReturnMessage {
		t.Fatalf("cleared return message: %+v", got)
	}
	if _, err := r.e.PutBotSettings("b2", store.BotSettings{}, "colour"); err == nil {
		t.Fatal("an unknown field to clear must be refused")
	}
	if got := r.e.BotSettings("unknown"); got.CheckInterval != interval || got.Mode != ModeConnection {
		t.Fatalf("defaults %+v", got)
	}
}

// TestLoadBotsFile: LoadBotsFile reads and validates PRESENCE_BOTS_FILE; its
// errors name the bot and the field.
func TestLoadBotsFile(t *testing.T) {
	def := Settings{Enabled: true, CheckInterval: interval}
	write := func(body string) string {
		p := t.TempDir() + "/bots.json"
		if err := writeFile(p, body); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write(`{"botA":{"enabled":true,"checkInterval":"3m","returnMessage":"voltou","mode":"activity"},"botB":{"enabled":false}}`)
	m, err := LoadBotsFile(good, def, false)
	if err != nil || len(m) != 2 || m["botA"].CheckInterval != "3m" || *m["botB"].Enabled {
		t.Fatalf("%v %v", m, err)
	}
	for body, want := range map[string]string{
		`{"botA":{"checkInterval":"30s"}}`:         `bot "botA": checkInterval "30s": want 1m0s to 10m0s`,
		`{"botA":{"mode":"push"}}`:                 `bot "botA": mode "push": want connection or activity`,
		`{"botA":{"enabled":"yes"}}`:               `bot "botA": enabled has the wrong type`,
		`{"botA":{"checkInterva":"3m"}}`:           `bot "botA": json: unknown field "checkInterva"`,
		`["botA"]`:                                 `not a JSON object`,
		`{"ok":{},"botZ":{"checkInterval":"99m"}}`: `bot "botZ": checkInterval "1h39m0s": want 1m0s to 10m0s`,
	} {
		_, err := LoadBotsFile(write(body), def, false)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", body, err, want)
		}
	}
	if m, err := LoadBotsFile(write(`{"botA":{"checkInterval":"30s"}}`), def, true); err != nil || len(m) != 1 {
		t.Errorf("allowAny: %v", err)
	}
	if m, err := LoadBotsFile("", def, false); m != nil || err != nil {
		t.Errorf("no file: %v %v", m, err)
	}
	if _, err := LoadBotsFile(t.TempDir()+"/missing.json", def, false); err == nil {
		t.Error("missing file accepted")
	}
}
