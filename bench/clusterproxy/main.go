// Command clusterproxy measures what a Redis outage costs the relay in
// cluster mode, against the goal "Redis down for 60 s: 0 proxy errors, no
// added WebSocket connect latency beyond 1 ms at p99, 0 false /expire after
// it returns".
//
// It builds cmd/presence-sidecar (no -race), starts a redis-server on a
// free port (append-only file on, so that a restart keeps the data), an echo
// upstream (this binary re-executed), a webhook receiver, and two sidecar
// replicas in cluster mode. It holds -n connected sessions over both
// replicas for the whole run, and opens new WebSockets at -rate a second
// (open loop: each attempt starts at its scheduled time, whatever the others
// do) through three phases: Redis up (the baseline), Redis down for
// -outage, Redis back (restarted with its data) for a lease + an interval +
// -margin. It prints a Markdown table (and writes it to -out) and exits 1
// on any proxy error or any /expire for a held session.
//
//	cd bench && go run ./clusterproxy                 # ~3 min: 60 s outage, 2,000 held sessions, 100 connects/s
//	cd bench && go run ./clusterproxy -outage 10s     # a quick check (~1 min)
//	cd bench && go run ./clusterproxy -r 3            # three runs, medians
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/presence-sidecar/presence-sidecar/bench/harness"
)

func main() {
	harness.MaybeRunChild() // the echo upstream is this binary re-executed

	var cfg Config
	flag.DurationVar(&cfg.Outage, "outage", 60*time.Second, "how long Redis is down")
	flag.DurationVar(&cfg.Baseline, "baseline", 0, "measured time with Redis up before the outage (0: the outage's length)")
	flag.DurationVar(&cfg.Margin, "margin", 10*time.Second, "the phase after Redis is back lasts a lease + an interval + this")
	flag.IntVar(&cfg.Held, "n", 2000, "sessions held connected for the whole run, spread over both replicas")
	flag.Float64Var(&cfg.Rate, "rate", 100, "new WebSocket connects a second, open loop, alternating replicas")
	flag.IntVar(&cfg.Reps, "r", 1, "runs, each with fresh processes; the table shows medians")
	flag.StringVar(&cfg.Down, "down", DownRestart, "how Redis goes away: restart (SIGTERM, restarted with its AOF data), empty (SIGKILL, restarted without data), pause (SIGSTOP … SIGCONT)")
	flag.DurationVar(&cfg.Lease, "lease", 5*time.Second, "REDIS_LEASE_TTL")
	flag.DurationVar(&cfg.Interval, "interval", 5*time.Second, "PRESENCE_CHECK_INTERVAL")
	flag.StringVar(&cfg.SidecarBin, "sidecar", "", "a prebuilt presence-sidecar binary (default: go build ./cmd/presence-sidecar)")
	flag.StringVar(&cfg.RepoDir, "repo", "", "the repository to build (default: found upwards)")
	flag.StringVar(&cfg.RedisBin, "redis", "", "redis-server binary (default: on PATH)")
	var extra multiFlag
	flag.Var(&extra, "sidecar-env", "extra KEY=VALUE for the sidecars, repeatable")
	out := flag.String("out", "", "write the table to this file (default: results/clusterproxy.md of the bench module; - for none)")
	quiet := flag.Bool("q", false, "no progress on stderr")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: clusterproxy [flags]\n\nThe relay while Redis is away, in cluster mode; prints a Markdown table.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	cfg.SidecarEnv = extra
	if !*quiet {
		cfg.Log = os.Stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "clusterproxy:", err)
		os.Exit(1)
	}
	md := rep.Markdown()
	fmt.Print(md)
	path := *out
	if path == "" {
		path = filepath.Join(rep.Repo, "bench", "results", "clusterproxy.md")
	}
	if path != "-" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
			err = os.WriteFile(path, []byte(md), 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "clusterproxy:", err)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "clusterproxy: wrote", path)
	}
	if fails := rep.Failures(); len(fails) > 0 {
		for _, f := range fails {
			fmt.Fprintln(os.Stderr, "clusterproxy: FAIL:", f)
		}
		os.Exit(1)
	}
}

type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint([]string(*m)) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
