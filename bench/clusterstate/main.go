// Command clusterstate measures what cluster mode's state costs Redis
// (package store/redisstate, against one real redis-server on a free
// port): memory per session and per live connection, connection events
// and decisions per second, and each script's latency, as the client sees
// it and as Redis itself counts it. It prints a Markdown table on stdout
// (and with -out, into a file) and its progress on stderr.
//
//	cd bench && go run ./clusterstate                  # ~2 minutes on 2 cores
//	cd bench && go test -run '^$' -bench . ./clusterstate
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
)

func main() {
	var cfg Config
	flag.IntVar(&cfg.Sessions, "n", 20000, "sessions for the memory figures and the sweep")
	flag.DurationVar(&cfg.Duration, "d", 3*time.Second, "measured time of the main throughput phase (the others take a fraction)")
	flag.IntVar(&cfg.Conc, "c", 64, "goroutines calling Redis at once")
	flag.IntVar(&cfg.Rate, "rate", 10000, "connection events/s of the paced phase")
	flag.IntVar(&cfg.Reps, "r", 3, "runs, each on a fresh redis-server; the table shows medians")
	flag.StringVar(&cfg.Prefix, "prefix", "presence-sidecar:", "key prefix (REDIS_KEY_PREFIX)")
	flag.StringVar(&cfg.Replica, "replica", "5f7d8c9b", "replica id (the sidecar makes 8 hex digits)")
	flag.StringVar(&cfg.Bot, "bot", "bot-1", "bot id")
	flag.DurationVar(&cfg.Interval, "interval", 5*time.Minute, "check interval of the bot")
	flag.StringVar(&cfg.RedisBin, "redis", "", "redis-server binary (default: on PATH, else /usr/bin)")
	out := flag.String("out", "", "also write the table to this file (e.g. results/clusterstate.md)")
	quiet := flag.Bool("q", false, "no progress on stderr")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: clusterstate [flags]\n\nMeasures cluster mode's Redis state; prints a Markdown table.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	if !*quiet {
		cfg.Log = os.Stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "clusterstate:", err)
		os.Exit(1)
	}
	md := rep.Markdown()
	fmt.Print(md)
	if *out != "" {
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err == nil {
			err = os.WriteFile(*out, []byte(md), 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "clusterstate:", err)
			os.Exit(1)
		}
	}
}
