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
	if strings.Contains(s, `"conns"`) || strings.Contains(s, `"returnedAt"`) {
		t.Errorf("%s: conns is connections' double; returnedAt before any return", s)
	}
	var back Settings
	if err := json.Unmarshal([]byte(`{"enabled":true,"checkInterval":"3m","mode":"activity"}`), &back); err != nil ||
		back.CheckInterval != 3*time.Minute || back.Mode != ModeActivity || !back.Enabled {
		t.Fatalf("%+v %v", back, err)
	}
}

// TestViewReturnedAt: a return is dated, in the view and in the store (it
// survives a restart).
func TestViewReturnedAt(t *testing.T) {
	r := newRig(t, nil, nil, nil)
	r.open(1, "s1", "bot")
	r.close(1)
	r.advance(interval)
	back := r.clk.Now()
	r.open(2, "s1", "bot")
	if v := r.view("s1"); !v.ReturnedAt.Equal(back) || !v.AbsentAt.IsZero() {
		t.Fatalf("view %+v, want returnedAt %v", v, back)
	}
	b, _ := json.Marshal(r.view("s1"))
	if !strings.Contains(string(b), `"returnedAt":"`+back.UTC().Format(time.RFC3339Nano)+`"`) {
		t.Fatalf("%s", b)
	}
	if err := r.e.Flush(); err != nil {
		t.Fatal(err)
	}
	if s := r.stored("s1"); !s.ReturnedAt.Equal(back) {
		t.Fatalf("stored %+v", s)
	}
}
