// Command presence-sidecar is a reverse proxy that sits in front of a
// conversation service's WebChat socket, infers whether each client is still
// there, and tells the human-service platform when a handed-over client goes
// away and comes back. Configuration comes from the environment; see README.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/internal/app"
	"github.com/presence-sidecar/presence-sidecar/internal/config"
	"github.com/presence-sidecar/presence-sidecar/internal/telemetry"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(healthcheck(os.Getenv("ADMIN_ADDR"), os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Environ(), os.Stderr))
}

// healthcheck asks a running sidecar's /healthz; the container image has no
// shell or curl for its HEALTHCHECK.
func healthcheck(adminAddr string, stderr io.Writer) int {
	if adminAddr == "" {
		adminAddr = "127.0.0.1:9090"
	}
	host, port, err := net.SplitHostPort(adminAddr)
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: ADMIN_ADDR=%q: %v\n", adminAddr, err)
		return 1
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "healthcheck: /healthz answered %s\n", resp.Status)
		return 1
	}
	return 0
}

// run starts the sidecar and blocks until ctx ends (a signal), then drains.
// It returns the process exit code.
func run(ctx context.Context, environ []string, stderr io.Writer) int {
	cfg, err := config.Load(environ)
	if err != nil {
		reportConfigErrors(stderr, err)
		return 2
	}
	log, err := app.NewLogger(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "presence-sidecar: %v\n", err)
		return 2
	}
	defer log.Sync()
	tel, err := telemetry.Setup(ctx, telemetry.Options{Log: log.Named("telemetry")})
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		fmt.Fprintf(stderr, "presence-sidecar: configuration error: %v\n", err)
		return 2
	}
	a, err := app.Build(cfg, log, tel) // Serve shuts tel down, flushing it
	if err != nil {
		_ = tel.Shutdown(context.Background())
		log.Error("cannot start", zap.Error(err))
		fmt.Fprintf(stderr, "presence-sidecar: cannot start: %v\n", err)
		return 1
	}
	if err := a.Serve(ctx, nil); err != nil {
		log.Error("stopped with an error", zap.Error(err))
		return 1
	}
	return 0
}

// reportConfigErrors prints every configuration mistake, one per line, so
// that one run shows what to fix.
func reportConfigErrors(w io.Writer, err error) {
	var all config.Errors
	if !errors.As(err, &all) || len(all) == 1 {
		fmt.Fprintf(w, "presence-sidecar: configuration error: %v\n", err)
		return
	}
	fmt.Fprintf(w, "presence-sidecar: %d configuration errors:\n", len(all))
	for _, e := range all {
		fmt.Fprintf(w, "  %v\n", e)
	}
}
