package e2e

import (
	"os/exec"
	"testing"
)

// The container image's HEALTHCHECK runs the binary's own check.
func TestHealthcheckSubcommand(t *testing.T) {
	sc := start(t, map[string]string{"UPSTREAM_URL": "http://" + freeAddr(t)})
	ok := exec.Command(binary, "healthcheck")
	ok.Env = []string{"ADMIN_ADDR=" + sc.admin}
	if out, err := ok.CombinedOutput(); err != nil {
		t.Fatalf("healthy sidecar: %v %s", err, out)
	}
	bad := exec.Command(binary, "healthcheck")
	bad.Env = []string{"ADMIN_ADDR=" + freeAddr(t)}
	if out, err := bad.CombinedOutput(); err == nil {
		t.Fatalf("nothing listens there, yet the check passed: %s", out)
	}
}
