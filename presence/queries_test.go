package presence

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestViewJSON: a View marshals with the admin API's names, and Settings read
// back what they write.
func TestViewJSON(t *testing.T) {
	r := newRig(t, nil, nil, nil)
	r.handover(1, "s1", "bot")
	b, err := json.Marshal(r.e.Sessions())
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{`"id":"s1"`, `"botId":"bot"`, `"handedOver":true`, `"connections":1`, `"checkInterval":"2m0s"`, `"mode":"connection"`, `"enabled":true`} {
		if !strings.Contains(s, want) {
			t.Errorf("%s lacks %s", s, want)
		}
	}
	var back Settings
	if err := json.Unmarshal([]byte(`{"enabled":true,"checkInterval":"3m","mode":"activity"}`), &back); err != nil ||
		back.CheckInterval != 3*time.Minute || back.Mode != ModeActivity || !back.Enabled {
		t.Fatalf("%+v %v", back, err)
	}
}
