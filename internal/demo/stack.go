package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/internal/app"
	"github.com/presence-sidecar/presence-sidecar/internal/config"
)

// SigningSecret is the demo's HANDOFF_SIGNING_SECRET (the key is the bytes
// "presence-sidecar-demo-signing-key"). Never use it anywhere else.
const SigningSecret = "whsec_cHJlc2VuY2Utc2lkZWNhci1kZW1vLXNpZ25pbmcta2V5"

// AdminToken is the demo's ADMIN_TOKEN.
const AdminToken = "demo"

// StackOptions say where the demo listens and how the sidecar is set up.
type StackOptions struct {
	WebChatAddr string // the sidecar's LISTEN_ADDR: the WebChat is opened here
	AdminAddr   string // the sidecar's ADMIN_ADDR: the status page
	ConsoleAddr string // the agent console
	ServiceAddr string // the conversation service (the sidecar's upstream)

	// Env is laid over the demo's defaults (see DefaultEnv), KEY=VALUE, later
	// entries win: the real environment, then explicit choices.
	Env []string
	// KeepAlive is the WebChat page's keep_alive period.
	KeepAlive time.Duration
	// DataDir, when empty, is a new temporary directory removed at the end.
	DataDir string
	// Log, when nil, is built from LOG_LEVEL and LOG_FORMAT and writes to
	// LogOutput (default stderr).
	Log       *zap.Logger
	LogOutput io.Writer
}

// DefaultEnv is the sidecar's environment in the demo: presence on with a
// short interval and probe, notifications signed and sent to the console.
func DefaultEnv(serviceURL, consoleURL, dataDir string) []string {
	return []string{
		"UPSTREAM_URL=" + serviceURL,
		"PRESENCE_ENABLED=true",
		"PRESENCE_ALLOW_ANY_INTERVAL=true",
		"PRESENCE_CHECK_INTERVAL=10s",
		"PROBE_INTERVAL=5s",
		"PROBE_TIMEOUT=5s",
		"HANDOFF_URL=" + consoleURL,
		"HANDOFF_SIGNING_SECRET=" + SigningSecret,
		"ADMIN_TOKEN=" + AdminToken,
		"DATA_DIR=" + dataDir,
		"SHUTDOWN_GRACE=2s",
		"LOG_FORMAT=console",
	}
}

// Stack is a running demo: conversation service, agent console and the
// sidecar in front of the service.
type Stack struct {
	Service *Service
	Console *Console
	Config  config.Config

	WebChatURL string // through the sidecar
	StatusURL  string // the sidecar's admin listener
	ConsoleURL string
	ServiceURL string // the service directly (bypassing the sidecar)

	done chan error
}

// Start brings the stack up and returns once everything listens. It runs
// until ctx ends; Wait then returns when everything has stopped.
func Start(ctx context.Context, o StackOptions) (*Stack, error) {
	s := &Stack{done: make(chan error, 1)}
	var cleanup []func()
	undo := func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	fail := func(err error) (*Stack, error) {
		undo()
		return nil, err
	}
	dataDir := o.DataDir
	if dataDir == "" {
		d, err := os.MkdirTemp("", "presence-sidecar-demo-")
		if err != nil {
			return fail(err)
		}
		dataDir = d
		cleanup = append(cleanup, func() { _ = os.RemoveAll(d) })
	}

	svcLn, err := net.Listen("tcp", orDefault(o.ServiceAddr, "127.0.0.1:0"))
	if err != nil {
		return fail(fmt.Errorf("demo conversation service: %w", err))
	}
	cleanup = append(cleanup, func() { svcLn.Close() })
	conLn, err := net.Listen("tcp", orDefault(o.ConsoleAddr, "127.0.0.1:0"))
	if err != nil {
		return fail(fmt.Errorf("demo agent console: %w", err))
	}
	cleanup = append(cleanup, func() { conLn.Close() })
	s.ServiceURL = "http://" + hostForURL(svcLn.Addr())
	s.ConsoleURL = "http://" + hostForURL(conLn.Addr())

	environ := DefaultEnv(s.ServiceURL, s.ConsoleURL, dataDir)
	environ = append(environ, "LISTEN_ADDR="+orDefault(o.WebChatAddr, "127.0.0.1:0"), "ADMIN_ADDR="+orDefault(o.AdminAddr, "127.0.0.1:0"))
	environ = append(environ, o.Env...)
	cfg, err := config.Load(environ)
	if err != nil {
		return fail(fmt.Errorf("sidecar configuration: %w", err))
	}
	s.Config = cfg
	log := o.Log
	if log == nil {
		out := o.LogOutput
		if out == nil {
			out = os.Stderr
		}
		if log, err = app.NewLogger(cfg, out); err != nil {
			return fail(err)
		}
	}

	s.Service = NewService(ServiceOptions{KeepAlive: o.KeepAlive, Log: log.Named("demo-service")})
	if s.Console, err = NewConsole(ConsoleOptions{SigningSecret: cfg.HandoffSigningSecret, Token: cfg.HandoffToken, Log: log.Named("demo-console")}); err != nil {
		return fail(err)
	}
	a, err := app.Build(cfg, log, nil)
	if err != nil {
		return fail(fmt.Errorf("sidecar: %w", err))
	}

	base := func(net.Listener) context.Context { return ctx }
	svcSrv := &http.Server{Handler: s.Service.Handler(), ReadHeaderTimeout: 10 * time.Second, BaseContext: base}
	conSrv := &http.Server{Handler: s.Console.Handler(), ReadHeaderTimeout: 10 * time.Second, BaseContext: base}
	go func() { _ = svcSrv.Serve(svcLn) }()
	go func() { _ = conSrv.Serve(conLn) }()

	type addrs struct{ proxy, admin string }
	started := make(chan addrs, 1)
	served := make(chan error, 1)
	go func() {
		served <- a.Serve(ctx, func(p, ad string) { started <- addrs{p, ad} })
	}()
	stopOthers := func() {
		s.Console.Close()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = conSrv.Shutdown(sctx)
		_ = svcSrv.Shutdown(sctx)
		_ = conSrv.Close()
		_ = svcSrv.Close() // hijacked sockets are the sidecar's to close; Close drops the rest
	}
	select {
	case ad := <-started:
		s.WebChatURL = "http://" + hostForURL(mustAddr(ad.proxy))
		s.StatusURL = "http://" + hostForURL(mustAddr(ad.admin))
	case err := <-served:
		stopOthers()
		if err == nil {
			err = errors.New("sidecar stopped before it started")
		}
		return fail(err)
	}
	go func() {
		err := <-served // returns after ctx ends and the sidecar drained
		stopOthers()
		undo()
		s.done <- err
	}()
	return s, nil
}

// Wait blocks until the stack stopped (after ctx of Start ended) and returns
// the sidecar's error, if any.
func (s *Stack) Wait() error { return <-s.done }

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func mustAddr(s string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}
	}
	return a
}

// hostForURL is host:port a browser on this machine can open: a wildcard
// listener (":8080", "0.0.0.0:8080", "[::]:8080") is shown as localhost.
func hostForURL(a net.Addr) string {
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if t.IP == nil || t.IP.IsUnspecified() {
		return fmt.Sprintf("localhost:%d", t.Port)
	}
	if t.IP.IsLoopback() && t.IP.To4() != nil {
		return fmt.Sprintf("127.0.0.1:%d", t.Port)
	}
	return t.String()
}
