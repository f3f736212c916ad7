// Package app wires the sidecar's parts from a Config and runs them: the
// proxy, the presence engine, the deliverer, the store and the admin listener.
// cmd/presence-sidecar and the demo both start the sidecar through it.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/presence-sidecar/presence-sidecar/handoff"
	"github.com/presence-sidecar/presence-sidecar/internal/admin"
	"github.com/presence-sidecar/presence-sidecar/internal/admin/status"
	"github.com/presence-sidecar/presence-sidecar/internal/config"
	"github.com/presence-sidecar/presence-sidecar/internal/history"
	"github.com/presence-sidecar/presence-sidecar/internal/readiness"
	"github.com/presence-sidecar/presence-sidecar/internal/telemetry"
	"github.com/presence-sidecar/presence-sidecar/presence"
	"github.com/presence-sidecar/presence-sidecar/presence/cluster"
	"github.com/presence-sidecar/presence-sidecar/presence/rules"
	"github.com/presence-sidecar/presence-sidecar/proxy"
	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
	"github.com/presence-sidecar/presence-sidecar/timeline"
)

// NewLogger builds the zap logger LOG_LEVEL and LOG_FORMAT ask for.
func NewLogger(cfg config.Config, out io.Writer) (*zap.Logger, error) {
	level, err := zapcore.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, fmt.Errorf("LOG_LEVEL=%q: %w", cfg.LogLevel, err)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if cfg.LogFormat == "console" {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(out), level)), nil
}

// App is the wired sidecar.
type App struct {
	cfg     config.Config
	log     *zap.Logger
	tel     *telemetry.Telemetry
	metrics *metrics
	proxy   *proxy.Proxy
	admin   *admin.Server

	// With presence on, one of the two modes' parts is set.
	store     store.Store // embedded mode
	engine    *presence.Engine
	deliverer *handoff.Deliverer

	replica          string // cluster mode
	redis            *redisstate.State
	clusterEngine    *cluster.Engine
	clusterDeliverer *handoff.ClusterDeliverer

	presence admin.Presence // either mode's, for the admin listener
	outbox   admin.Outbox
	runners  []runner // the presence and delivery loops Serve runs
	history  *history.Recorder
	// /readyz's checks (readiness.go); platformCheck is nil with presence off.
	upstreamCheck *readiness.Upstream
	platformCheck *readiness.Platform
	timeline      *timeline.Recorder // sessions' histories (timeline.go); nil: presence off
	closers       []func() error     // run by close, in order
}

// runner is a loop Serve runs until its context ends.
type runner struct {
	name string
	run  func(context.Context) error
}

// Build wires everything; nothing listens yet. tel (nil: telemetry.Off())
// is the App's from here on: Serve shuts it down last, which flushes the
// exporters. When Build fails, tel is still the caller's.
func Build(cfg config.Config, log *zap.Logger, tel *telemetry.Telemetry) (*App, error) {
	if tel == nil {
		tel = telemetry.Off()
	}
	a := &App{cfg: cfg, log: log, tel: tel}
	var err error
	if a.metrics, err = newMetrics(tel.Meter); err != nil {
		return nil, err
	}
	upstream, _ := url.Parse(cfg.UpstreamURL) // validated by config
	po := proxy.Options{
		Upstream:        upstream,
		DialTimeout:     cfg.DialTimeout,
		ResponseTimeout: cfg.ResponseTimeout,
		KeepAlive:       cfg.TCPKeepAlive,
		MaxConnections:  cfg.MaxConnections,
		ProbeInterval:   cfg.ProbeInterval,
		ProbeTimeout:    cfg.ProbeTimeout,
		InspectBytes:    cfg.InspectBytes,
		Log:             log.Named("proxy"),
		Tracer:          tel.Tracer,
	}
	if cfg.PresenceEnabled {
		if err := a.buildPresence(&po); err != nil {
			return nil, err
		}
	}
	a.buildReadiness(upstream)
	p, err := proxy.New(po)
	if err != nil {
		a.close()
		return nil, err
	}
	a.proxy = p
	if err := a.metrics.observe(tel.Meter, p, a.presenceStats(), a.outboxDepth()); err != nil {
		a.close()
		return nil, err
	}
	if a.clusterEngine != nil {
		if err := a.metrics.observeCluster(tel.Meter, a.clusterEngine, a.clusterDeliverer); err != nil {
			a.close()
			return nil, err
		}
	}
	a.admin = &admin.Server{
		Token:    cfg.AdminToken,
		Presence: a.presence,
		Outbox:   a.outbox,
		Metrics:  tel.MetricsHandler(),
		Ready:    a.checks,
	}
	if a.clusterEngine != nil {
		a.admin.Cluster = a.clusterEngine
	}
	a.buildHistory() // history.go
	so := status.Options{Config: cfg, History: a.history.Last}
	if a.presence != nil { // a nil pointer must not become a non-nil interface
		so.Presence, so.Outbox = a.presence, a.outbox
	}
	a.admin.Status = status.New(so)
	a.admin.Assets = status.Assets()
	if a.presence != nil {
		a.admin.Session = status.NewTimeline(cfg.AdminToken, a.presence)
	}
	return a, nil
}

// presenceParts are what both modes' engines are built from.
type presenceParts struct {
	rules  config.Rules
	detect presence.Detect
	bots   map[string]store.BotSettings // PRESENCE_BOTS_FILE
}

// handoffOptions are the deliverer's options; st is the embedded store (nil
// in cluster mode, where the outbox is in Redis).
func (a *App) handoffOptions(st store.Store, log *zap.Logger) handoff.Options {
	cfg := a.cfg
	return handoff.Options{
		URL:           cfg.HandoffURL,
		ExpirePath:    cfg.HandoffExpirePath,
		MessagePath:   cfg.HandoffMessagePath,
		Token:         cfg.HandoffToken,
		SigningSecret: cfg.HandoffSigningSecret,
		Timeout:       cfg.HandoffTimeout,
		RetryMaxDelay: cfg.HandoffRetryMaxDelay,
		RetryFor:      cfg.HandoffRetryFor,
		Store:         st,
		Log:           log,
		Observe:       a.observeDelivery, // timeline.go
		Tracer:        a.tel.Tracer,
	}
}

// buildPresence wires the store, the presence engine and the deliverer, and
// tells the proxy what to look at.
func (a *App) buildPresence(po *proxy.Options) error {
	cfg := a.cfg
	// Validated by config; the errors only matter to a Config not from Load.
	var err error
	if po.SessionFrom, po.BotFrom, err = cfg.IDSources(); err != nil {
		return err
	}
	po.Framing = cfg.Framing() // PRESET
	r, err := cfg.PresenceRules()
	if err != nil {
		return err
	}
	for _, s := range []rules.Set{r.Ignore, r.HandoffStart, r.HandoffEnd} {
		po.InspectClient = po.InspectClient || s.Has(event.FromClient)
		po.InspectServer = po.InspectServer || s.Has(event.FromServer)
	}
	detect, _ := cfg.HandoffDetection() // validated by config
	if cfg.PresenceAllowAny {
		a.log.Warn("PRESENCE_ALLOW_ANY_INTERVAL=true: the 1m–10m range of check intervals is lifted; meant for tests and demos")
	}
	bots, err := cfg.PresenceBots()
	if err != nil {
		return err
	}

	p := presenceParts{rules: r, detect: presence.Detect(detect), bots: bots}
	a.buildTimeline() // timeline.go
	build := a.buildEmbedded
	if cfg.RedisURL != "" {
		build = a.buildCluster
	}
	if err := build(p); err != nil {
		return err
	}
	a.timelineBackend() // timeline_store.go
	po.Observer = a.presence.(event.Observer)
	return nil
}

// buildEmbedded wires the embedded mode: one replica, its state and outbox
// in a bbolt file under DATA_DIR.
func (a *App) buildEmbedded(p presenceParts) error {
	cfg := a.cfg
	st, err := store.OpenBolt(cfg.DataDir, a.log.Named("store"))
	if err != nil {
		return err
	}
	a.store = st
	a.closers = append(a.closers, st.Close)
	a.deliverer, err = handoff.New(a.handoffOptions(st, a.log.Named("handoff")))
	if err != nil {
		a.close()
		return err
	}
	a.engine, err = presence.New(presence.Options{
		Defaults:         cfg.PresenceDefaults(),
		AllowAnyInterval: cfg.PresenceAllowAny,
		Bots:             p.bots,
		Store:            st,
		Log:              a.log.Named("presence"),
		Detect:           p.detect,
		HandoffStart:     p.rules.HandoffStart,
		HandoffEnd:       p.rules.HandoffEnd,
		Ignore:           p.rules.Ignore,
		ForgetAfter:      cfg.PresenceForgetAfter,
		MaxSessions:      cfg.PresenceMaxSessions,
		Wake:             a.deliverer.Wake,
		Tracer:           a.tel.Tracer,
		Timeline:         a.timeline,
	})
	if err != nil {
		a.close()
		return err
	}
	a.presence, a.outbox = a.engine, a.deliverer
	a.runners = []runner{{"presence", a.engine.Run}, {"delivery", a.deliverer.Run}}
	return nil
}

// presenceStats is the engine's Stats for the metrics (nil: presence off).
func (a *App) presenceStats() func() presence.Stats {
	if a.presence == nil {
		return nil
	}
	return a.presence.Stats
}

// outboxDepth is the outbox's depth for the metrics (nil: presence off).
func (a *App) outboxDepth() func() (int64, error) {
	switch {
	case a.deliverer != nil:
		return func() (int64, error) { return int64(a.deliverer.Depth()), nil }
	case a.clusterDeliverer != nil:
		return func() (int64, error) {
			s, err := a.clusterDeliverer.ClusterStats()
			return s.Depth, err
		}
	}
	return nil
}

func (a *App) ready() string {
	if b, ok := a.store.(interface{ Check() error }); ok {
		if err := b.Check(); err != nil {
			return "state store: " + err.Error()
		}
	}
	if a.clusterEngine != nil {
		if why := a.clusterEngine.RedisTrouble(); why != "" {
			return "Redis: " + why
		}
	}
	return ""
}

// Serve runs the listeners until ctx ends, then drains: /readyz fails, new
// connections are refused, open ones get SHUTDOWN_GRACE, state is flushed.
// started, when not nil, gets the bound proxy and admin addresses.
func (a *App) Serve(ctx context.Context, started func(proxyAddr, adminAddr string)) error {
	cfg := a.cfg
	lc := net.ListenConfig{KeepAlive: cfg.TCPKeepAlive}
	ln, err := lc.Listen(ctx, "tcp", cfg.ListenAddr)
	if err != nil {
		a.close()
		a.shutdownTelemetry()
		return fmt.Errorf("LISTEN_ADDR=%q: %w", cfg.ListenAddr, err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		ln.Close()
		a.close()
		a.shutdownTelemetry()
		return fmt.Errorf("ADMIN_ADDR=%q: %w", cfg.AdminAddr, err)
	}
	proxySrv := &http.Server{
		Handler:           a.proxy,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		// Idle keep-alive connections between requests are closed after a
		// while (WebSockets are hijacked and not affected).
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    zap.NewStdLog(a.log.Named("http")),
	}
	adminSrv := &http.Server{Handler: a.admin.Handler(), ReadHeaderTimeout: 10 * time.Second}

	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 2+len(a.runners))
	for _, r := range a.runners {
		wg.Go(func() { errs <- nonNil(r.run(bg), r.name) })
	}
	go func() { errs <- serveErr(proxySrv.Serve(ln), "proxy listener") }()
	go func() { errs <- serveErr(adminSrv.Serve(adminLn), "admin listener") }()
	if started != nil {
		started(ln.Addr().String(), adminLn.Addr().String())
	}
	a.log.Info("presence-sidecar started",
		zap.String("listen", ln.Addr().String()), zap.String("admin", adminLn.Addr().String()),
		zap.String("upstream", config.RedactURL(cfg.UpstreamURL)), zap.Bool("presence", cfg.PresenceEnabled),
		zap.String("state", a.stateName()),
		zap.String("version", telemetry.Version()), zap.String("telemetry", a.tel.String()))

	var failure error
	select {
	case <-ctx.Done():
		a.log.Info("shutting down", zap.Duration("grace", cfg.ShutdownGrace))
	case failure = <-errs:
		if failure == nil {
			failure = errors.New("a component stopped unexpectedly")
		}
	}
	a.admin.Drain()
	grace, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	var drain sync.WaitGroup
	drain.Add(2)
	go func() { defer drain.Done(); _ = proxySrv.Shutdown(grace) }()
	go func() { defer drain.Done(); a.proxy.Shutdown(grace) }()
	drain.Wait()
	proxySrv.Close()
	stopBG() // the engine flushes its state, the deliverer finishes attempts in flight
	wg.Wait()
	// What the loops reported as they stopped (a final flush that failed)
	// is logged, not lost in the channel.
	for drained := false; !drained; {
		select {
		case err := <-errs:
			if err != nil {
				a.log.Error("stopping", zap.Error(err))
				if failure == nil {
					failure = err
				}
			}
		default:
			drained = true
		}
	}
	if err := a.close(); err != nil && failure == nil {
		failure = err
	}
	_ = adminSrv.Close()
	a.shutdownTelemetry() // last: the spans and metrics of the drain go out too
	a.log.Info("stopped")
	return failure
}

func serveErr(err error, what string) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

func nonNil(err error, what string) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

// telemetryFlush bounds the final export: a collector that is down must not
// hold up the exit past the pod's grace period.
const telemetryFlush = 5 * time.Second

func (a *App) shutdownTelemetry() {
	ctx, cancel := context.WithTimeout(context.Background(), telemetryFlush)
	defer cancel()
	if err := a.tel.Shutdown(ctx); err != nil {
		a.log.Warn("telemetry: final flush failed", zap.Error(err))
	}
}

// close releases the state (the store's file, the Redis client), once.
func (a *App) close() error {
	var errs []error
	for _, c := range a.closers {
		errs = append(errs, c())
	}
	a.closers = nil
	return errors.Join(errs...)
}

// stateName says where presence state lives, for the start-up log line.
func (a *App) stateName() string {
	switch {
	case a.redis != nil:
		return "redis " + config.RedactURL(a.cfg.RedisURL) + " as replica " + a.replica
	case a.store != nil:
		return "embedded " + a.cfg.DataDir
	}
	return "none"
}
