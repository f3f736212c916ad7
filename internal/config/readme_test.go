package config

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// markdownRow is how README.md lists a variable.
func markdownRow(v Var) string {
	d := "`" + v.Default + "`"
	switch {
	case v.Required:
		d = "required"
	case v.Default == "":
		d = "—"
	}
	return fmt.Sprintf("| `%s` | %s | %s |", v.Name, d, v.Desc)
}

// The README's variable table and the Config struct must not drift apart:
// every variable is listed with its default, and nothing else is listed.
func TestREADMEVariableTableMatchesConfig(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	known := map[string]bool{}
	var missing []string
	for _, v := range Vars() {
		known[v.Name] = true
		if !strings.Contains(readme, markdownRow(v)+"\n") {
			missing = append(missing, markdownRow(v))
		}
	}
	if len(missing) > 0 {
		t.Errorf("README.md lacks these rows (or has them with another default or text):\n%s", strings.Join(missing, "\n"))
	}
	row := regexp.MustCompile("(?m)^\\| `([A-Z][A-Z0-9_]+)` \\|")
	for _, m := range row.FindAllStringSubmatch(readme, -1) {
		if !known[m[1]] {
			t.Errorf("README.md lists %s, which the sidecar does not read", m[1])
		}
	}
}

// TestREADMEPresetBlocksMatchPresets: the README's block for each preset
// shows exactly the defaults it sets, in the order of the variable table.
func TestREADMEPresetBlocksMatchPresets(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range Presets {
		block := "```\nPRESET=" + p.Name +
			"\nSESSION_ID_FROM=" + p.SessionIDFrom +
			"\nBOT_ID_FROM=" + p.BotIDFrom +
			"\nPRESENCE_IGNORE=" + p.PresenceIgnore +
			"\nHANDOFF_START_MATCH=" + p.HandoffStartMatch +
			"\nHANDOFF_END_MATCH=" + p.HandoffEndMatch + "\n```\n"
		if !strings.Contains(string(readme), block) {
			t.Errorf("README.md lacks preset %s's block, which must read:\n%s", p.Name, block)
		}
	}
}
