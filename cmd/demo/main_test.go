package main

import (
	"strings"
	"testing"
	"time"
)

// TestStepsFollowTheMode: the printed steps say how a client leaves in the
// mode the demo runs: closing the tab (connection), or staying silent
// (activity), where closing the tab is not the thing to try.
func TestStepsFollowTheMode(t *testing.T) {
	conn := steps("connection", 10*time.Second, "voltou")
	for _, want := range []string{"close the tab", "Wait 10s", `POST /message  "voltou"`, "reopen"} {
		if !strings.Contains(conn, want) {
			t.Errorf("connection mode steps lack %q:\n%s", want, conn)
		}
	}
	act := steps("activity", 30*time.Second, "voltou")
	for _, want := range []string{"type nothing for 30s", "keep_alive is not", "reason inactive", "Type something in the same tab", `POST /message  "voltou"`} {
		if !strings.Contains(act, want) {
			t.Errorf("activity mode steps lack %q:\n%s", want, act)
		}
	}
	if strings.Contains(act, "close the tab") || strings.Contains(act, "reopen link") {
		t.Errorf("activity mode steps tell to close the tab:\n%s", act)
	}
	if steps("", time.Minute, "x") != steps("connection", time.Minute, "x") {
		t.Error("the default mode is connection")
	}
}
