// Command wsbench compares presence-sidecar with nginx, HAProxy and no proxy
// at all, in one run on one machine: memory per idle WebSocket connection,
// echo throughput, latency and CPU for each workload (message size, with and
// without permessage-deflate), and handshakes per second. It prints a
// Markdown report on stdout and its progress on stderr. See ../../README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/presence-sidecar/presence-sidecar/bench/harness"
)

func main() {
	harness.MaybeRunChild() // the echo upstream is this binary re-executed

	var cfg harness.Config
	var only string
	workloads := workloadList()
	flag.IntVar(&cfg.Idle, "n", 3000, "idle WebSocket connections per candidate")
	flag.IntVar(&cfg.Clients, "m", 50, "concurrent echo clients")
	flag.DurationVar(&cfg.Duration, "d", 3*time.Second, "measured echo time per workload and run")
	flag.DurationVar(&cfg.Warmup, "warmup", 0, "echo time before the measurement (0: min(d/10, 1s); negative: none)")
	flag.IntVar(&cfg.Reps, "r", 3, "runs of every candidate, interleaved")
	flag.StringVar(&workloads, "workloads", workloads, "comma list of echo workloads: message size in bytes (4k = 4096), z for permessage-deflate")
	flag.StringVar(&only, "only", "", "comma list of candidates to run: "+strings.Join(harness.AllCandidates, ", ")+" (default all)")
	flag.StringVar(&cfg.RepoDir, "repo", "", "presence-sidecar repository to build (default: found above the working directory)")
	flag.StringVar(&cfg.SidecarBin, "sidecar", "", "use this presence-sidecar binary instead of building one")
	flag.StringVar(&cfg.NginxBin, "nginx", "", "nginx binary (default: nginx on PATH, else /usr/sbin/nginx)")
	flag.StringVar(&cfg.HAProxyBin, "haproxy", "", "haproxy binary (default: haproxy on PATH, else /usr/sbin/haproxy)")
	out := flag.String("out", "", "also write the Markdown report to this file (e.g. results/wsbench.md), and the JSON summary beside it (.json)")
	jsonOut := flag.String("json", "", "write the JSON summary to this file (default: beside -out)")
	flag.IntVar(&cfg.GoMaxProcs, "gomaxprocs", 0, "GOMAXPROCS for the sidecar process (0: Go's default, all CPUs)")
	flag.BoolVar(&cfg.Diag, "diag", false, "also look inside the sidecar holding the idle connections: goroutines, heap, stacks")
	flag.StringVar(&cfg.ProfileDir, "profile", "", "with -diag: write the sidecar's heap profile (idle) and CPU profile (echoing the first workload) to this directory, and show their tops")
	flag.DurationVar(&cfg.Hold, "hold", 0, "also hold the idle connections this long (answering the sidecar's pings) and measure memory again")
	flag.Func("sidecar-env", "extra `KEY=VALUE` for the sidecar processes, e.g. GOGC=50 (repeatable)", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("want KEY=VALUE, got %q", v)
		}
		cfg.SidecarEnv = append(cfg.SidecarEnv, v)
		return nil
	})
	quiet := flag.Bool("q", false, "no progress on stderr")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: wsbench [flags]\n\nCompares presence-sidecar with nginx, HAProxy and a direct connection; prints a Markdown report.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	var err error
	if cfg.Workloads, err = harness.ParseWorkloads(workloads); err != nil {
		fmt.Fprintln(os.Stderr, "wsbench: -workloads:", err)
		os.Exit(2)
	}
	if only != "" {
		for _, n := range strings.Split(only, ",") {
			if n = strings.TrimSpace(n); n != "" {
				cfg.Only = append(cfg.Only, n)
			}
		}
	}
	if !*quiet {
		cfg.Log = os.Stderr
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := harness.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsbench:", err)
		os.Exit(1)
	}
	md := rep.Markdown()
	fmt.Print(md)
	if *out != "" {
		write(*out, []byte(md))
		if *jsonOut == "" {
			*jsonOut = strings.TrimSuffix(*out, filepath.Ext(*out)) + ".json"
		}
	}
	if *jsonOut != "" {
		js, err := rep.JSON()
		if err != nil {
			fmt.Fprintln(os.Stderr, "wsbench:", err)
			os.Exit(1)
		}
		write(*jsonOut, js)
	}
}

// workloadList is the default -workloads.
func workloadList() string {
	var s []string
	for _, w := range harness.DefaultWorkloads {
		s = append(s, w.Flag())
	}
	return strings.Join(s, ",")
}

func write(path string, b []byte) {
	if err := os.WriteFile(path, b, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "wsbench:", err)
		os.Exit(1)
	}
}
