// Command demo shows the sidecar at work in one command, with nothing but Go:
//
//	go run ./cmd/demo
//
// It starts, in one process, a demo conversation service that speaks the seed
// platform's WebChat socket protocol and serves a WebChat page, the sidecar in
// front of it (presence on, a 10 s check interval, a 5 s liveness probe), and
// a demo agent console that receives the sidecar's notifications and shows
// them live. Then it prints what to open and what to try.
//
// Every sidecar variable can be overridden from the environment (for example
// PRESENCE_CHECK_INTERVAL=30s or PRESENCE_MODE=activity); the flags choose the
// ports.
//
// -only service or -only console runs that one part alone, for a stack where
// the sidecar runs as its own process or container (deploy/compose):
//
//	go run ./cmd/demo -only service -service :8082
//	HANDOFF_SIGNING_SECRET=whsec_… go run ./cmd/demo -only console -console :8081
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/presence-sidecar/presence-sidecar/internal/config"
	"github.com/presence-sidecar/presence-sidecar/internal/demo"
	"github.com/presence-sidecar/presence-sidecar/presence"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	webchat := fs.String("webchat", ":8080", "the sidecar's listener (LISTEN_ADDR): open the WebChat here")
	console := fs.String("console", ":8081", "the demo agent console")
	admin := fs.String("admin", "127.0.0.1:9090", "the sidecar's admin listener (ADMIN_ADDR): the status page")
	service := fs.String("service", "127.0.0.1:8082", "the demo conversation service (the sidecar's upstream)")
	keepAlive := fs.Duration("keepalive", 5*time.Second, "how often the WebChat page sends keep_alive (the real client: 9m)")
	only := fs.String("only", "", "run one part alone: service (the conversation service on -service) or console (the agent console on -console; it verifies with HANDOFF_SIGNING_SECRET and HANDOFF_TOKEN when set)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: go run ./cmd/demo [flags]\n\nStarts a demo conversation service, the sidecar in front of it and a demo agent console.\nSidecar variables (PRESENCE_CHECK_INTERVAL, PRESENCE_MODE, ...) may be set in the environment.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if *only != "" {
		return runOnly(ctx, *only, *service, *console, *keepAlive, environ, stdout, stderr)
	}
	// Demo defaults < the real environment < flags given on the command line.
	env := append([]string(nil), environ...)
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["webchat"] || !has(environ, "LISTEN_ADDR") {
		env = append(env, "LISTEN_ADDR="+*webchat)
	}
	if set["admin"] || !has(environ, "ADMIN_ADDR") {
		env = append(env, "ADMIN_ADDR="+*admin)
	}
	s, err := demo.Start(ctx, demo.StackOptions{
		WebChatAddr: *webchat,
		AdminAddr:   *admin,
		ConsoleAddr: *console,
		ServiceAddr: *service,
		Env:         env,
		KeepAlive:   *keepAlive,
	})
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		fmt.Fprintf(stderr, "demo: ports in use? choose others with -webchat, -console, -admin and -service (see -h)\n")
		return 1
	}
	c := s.Config
	bot := demoBot(c)
	status := s.StatusURL + "/"
	if c.AdminToken != "" {
		if u, err := url.Parse(status); err == nil {
			u.User = url.UserPassword("admin", c.AdminToken)
			status = u.String()
		}
	}
	fmt.Fprintf(stdout, `
presence-sidecar demo is running (Ctrl-C stops it).

  WebChat (through the sidecar)  %s/
  Agent console                  %s/
  Sidecar status page            %s   (any user, password %q = ADMIN_TOKEN)

Presence (bot %s): mode %s, a handed-over client is absent after %s without presence; probe every %s.

%s
`, s.WebChatURL, s.ConsoleURL, status, c.AdminToken, demo.DefaultBotID, bot.Mode, bot.CheckInterval, c.ProbeInterval,
		steps(bot))
	if err := s.Wait(); err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	return 0
}

// demoBot is the settings of the bot the WebChat page uses: the
// environment's, or PRESENCE_BOTS_FILE's entry for it (the sidecar has
// already refused a bad file, so an error here keeps the defaults).
func demoBot(c config.Config) presence.Settings {
	def := c.PresenceDefaults()
	if def.Mode == "" { // an explicitly empty PRESENCE_MODE
		def.Mode = presence.ModeConnection
	}
	bots, err := c.PresenceBots()
	if err != nil {
		return def
	}
	o, ok := bots[demo.DefaultBotID]
	if !ok {
		return def
	}
	if s, err := presence.Resolve(def, o, c.PresenceAllowAny); err == nil {
		return s
	}
	return def
}

// steps is what to try, for the mode: in connection mode a client leaves by
// closing its tab; in activity mode by staying silent (the page's
// keep_alive does not count), and it comes back by typing.
func steps(s presence.Settings) string {
	interval, text := s.CheckInterval, s.ReturnText()
	off := ""
	if !s.Enabled {
		off = "  Presence is off for bot " + demo.DefaultBotID + " (PRESENCE_BOTS_FILE): nothing is sent to the console.\n"
	}
	if strings.EqualFold(string(s.Mode), string(presence.ModeActivity)) {
		return fmt.Sprintf(`Try it (activity mode: presence is what the client does, not an open socket):
%s  1. Open the WebChat, type anything: the bot answers over the socket.
  2. Type "human" (or "atendente"): the bot hands the conversation over to a person.
  3. Leave the tab open and type nothing for %s (the page's keep_alive is not
     activity): the agent console shows  POST /expire?offline=true  reason inactive.
  4. Type something in the same tab:
     the console shows  POST /message  "%s".
  Closing the tab is an absence too, decided %s after the last activity.
  Watch the status page: the session goes present → absent → present.
`, off, interval, text, interval)
	}
	return fmt.Sprintf(`Try it:
%s  1. Open the WebChat, type anything: the bot answers over the socket.
  2. Type "human" (or "atendente"): the bot hands the conversation over to a person.
  3. Copy the page's "reopen" link, then close the tab.
  4. Wait %s: the agent console shows  POST /expire?offline=true  for that session.
  5. Open the reopen link (same ?session=; Ctrl+Shift+T usually works too):
     the console shows  POST /message  "%s",
     and the page shows the conversation where it stopped.
  Each tab is its own session (its id lives in the tab's sessionStorage);
  ?session=ID opens an existing one, e.g. in a second tab.
  Watch the status page: the session goes present → absent → present.
`, off, interval, text)
}

// runOnly serves the demo conversation service or the agent console alone
// until ctx ends.
func runOnly(ctx context.Context, part, serviceAddr, consoleAddr string, keepAlive time.Duration, environ []string, stdout, stderr io.Writer) int {
	log, err := zap.NewDevelopment(zap.ErrorOutput(zapcore.AddSync(stderr)))
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	var h http.Handler
	var addr string
	switch part {
	case "service":
		addr, h = serviceAddr, demo.NewService(demo.ServiceOptions{KeepAlive: keepAlive, Log: log.Named("demo-service")}).Handler()
	case "console":
		c, err := demo.NewConsole(demo.ConsoleOptions{
			SigningSecret: lookup(environ, "HANDOFF_SIGNING_SECRET"),
			Token:         lookup(environ, "HANDOFF_TOKEN"),
			Log:           log.Named("demo-console"),
		})
		if err != nil {
			fmt.Fprintf(stderr, "demo: %v\n", err)
			return 2
		}
		defer c.Close()
		context.AfterFunc(ctx, c.Close) // ends the live streams so Shutdown can finish
		addr, h = consoleAddr, c.Handler()
	default:
		fmt.Fprintf(stderr, "demo: -only %q: want service or console\n", part)
		return 2
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = srv.Close()
	}()
	fmt.Fprintf(stdout, "demo %s listening on %s\n", part, ln.Addr())
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	return 0
}

func lookup(environ []string, key string) string {
	for i := len(environ) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(environ[i], key+"="); ok {
			return v
		}
	}
	return ""
}

func has(environ []string, key string) bool {
	return slices.ContainsFunc(environ, func(kv string) bool { return strings.HasPrefix(kv, key+"=") })
}
