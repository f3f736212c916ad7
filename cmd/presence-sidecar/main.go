// Command presence-sidecar is a reverse proxy that sits in front of a
// conversation service's WebChat socket, infers whether each client is still
// there, and tells the human-service platform when a handed-over client goes
// away and comes back. Configuration comes from the environment; see README.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/internal/app"
	"github.com/presence-sidecar/presence-sidecar/internal/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Environ(), os.Stderr))
}

// run starts the sidecar and blocks until ctx ends (a signal), then drains.
// It returns the process exit code.
func run(ctx context.Context, environ []string, stderr io.Writer) int {
	cfg, err := config.Load(environ)
	if err != nil {
		fmt.Fprintf(stderr, "presence-sidecar: configuration error: %v\n", err)
		return 2
	}
	log, err := app.NewLogger(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "presence-sidecar: %v\n", err)
		return 2
	}
	defer log.Sync()
	a, err := app.Build(cfg, log)
	if err != nil {
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
