package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// Three bad variables are three lines of one run's output, and the exit code
// is the configuration error's.
func TestStartUpReportsEveryConfigurationError(t *testing.T) {
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"UPSTREAM_URL=http://127.0.0.1:1", "PROBE_INTERVAL=soon",
		"LOG_FORMAT=xml", "PRESENCE_MODE=vibes"}, &stderr)
	if code != 2 {
		t.Fatalf("exit code %d, want 2; stderr:\n%s", code, &stderr)
	}
	out := stderr.String()
	if !strings.HasPrefix(out, "presence-sidecar: 3 configuration errors:\n") {
		t.Fatalf("stderr:\n%s", out)
	}
	for _, w := range []string{`  PROBE_INTERVAL="soon": want a Go duration`, `  LOG_FORMAT="xml": want json or console`, `  PRESENCE_MODE="vibes": `} {
		if !strings.Contains(out, w) {
			t.Errorf("stderr lacks %q:\n%s", w, out)
		}
	}
}
