// Package telemetry sets up OpenTelemetry for the sidecar from the standard
// OTEL_* variables: a tracer provider for the proxy, the presence engine and
// the deliverer, and a meter provider whose instruments are exported over
// OTLP (when configured) and always served in Prometheus text on the admin
// listener's /metrics.
//
// Nothing configured means no exporter and next to no cost: the tracer is
// the no-op one, and metrics are only computed when /metrics is scraped.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
)

// DefaultServiceName is service.name unless OTEL_SERVICE_NAME or
// OTEL_RESOURCE_ATTRIBUTES say otherwise.
const DefaultServiceName = "presence-sidecar"

// Telemetry is the sidecar's OpenTelemetry.
type Telemetry struct {
	// Tracer is the tracer provider every part uses (never nil).
	Tracer trace.TracerProvider
	// Meter is the meter provider behind /metrics and OTLP (never nil).
	Meter metric.MeterProvider

	metrics  http.Handler
	shutdown []func(context.Context) error
	summary  string
}

// MetricsHandler serves the instruments in the Prometheus text format (and
// the Go runtime's and the process's own figures).
func (t *Telemetry) MetricsHandler() http.Handler { return t.metrics }

// String says what is exported where, for the start-up log line.
func (t *Telemetry) String() string { return t.summary }

// Shutdown flushes the exporters (spans still batched, a last metrics
// export) and stops them; ctx bounds how long it may take.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range t.shutdown {
		errs = append(errs, f(ctx))
	}
	t.shutdown = nil
	return errors.Join(errs...)
}

// Options configure Setup.
type Options struct {
	// Getenv reads the variables Setup decides on (nil: os.Getenv). The
	// OTLP exporters and OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME are
	// read from the process environment by the SDK itself.
	Getenv func(string) string
	// Log receives export errors (nil: none are logged).
	Log *zap.Logger
}

// Setup builds the telemetry the OTEL_* variables ask for:
//   - OTEL_SDK_DISABLED=true: no OTLP export at all (/metrics still works);
//   - OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER: otlp or none (metrics
//     also accept prometheus, which is /metrics, always on). Unset: otlp if
//     an OTLP endpoint is configured (OTEL_EXPORTER_OTLP_ENDPOINT or the
//     signal's own), else none — unlike the SDK default, a sidecar nobody
//     pointed at a collector sends nothing anywhere;
//   - OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_PROTOCOL: http/protobuf (default) or grpc;
//   - the rest (endpoints, headers, timeouts, TLS, OTEL_TRACES_SAMPLER,
//     OTEL_BSP_*, OTEL_METRIC_EXPORT_INTERVAL) as the SDK reads them.
//
// The resource has service.name (OTEL_SERVICE_NAME, default
// presence-sidecar), service.version (the build's), k8s.pod.name and
// k8s.namespace.name from POD_NAME / POD_NAMESPACE (the downward API), and
// OTEL_RESOURCE_ATTRIBUTES.
func Setup(ctx context.Context, o Options) (*Telemetry, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	log := o.Log
	if log == nil {
		log = zap.NewNop()
	}
	plan, err := plan(getenv)
	if err != nil {
		return nil, err
	}
	res, err := Resource(ctx, getenv)
	if err != nil {
		return nil, err
	}

	var tp trace.TracerProvider = noop.NewTracerProvider()
	var shutdown []func(context.Context) error
	if plan.traces != "" {
		var exp sdktrace.SpanExporter
		if plan.traces == protoGRPC {
			exp, err = otlptracegrpc.New(ctx)
		} else {
			exp, err = otlptracehttp.New(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("OTLP trace exporter: %w", err)
		}
		sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
		tp = sdk
		shutdown = append(shutdown, sdk.Shutdown)
	}
	var readers []sdkmetric.Reader
	if plan.metrics != "" {
		var exp sdkmetric.Exporter
		if plan.metrics == protoGRPC {
			exp, err = otlpmetricgrpc.New(ctx)
		} else {
			exp, err = otlpmetrichttp.New(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("OTLP metric exporter: %w", err)
		}
		readers = append(readers, sdkmetric.NewPeriodicReader(exp))
	}
	t, err := New(tp, res, readers...)
	if err != nil {
		return nil, err
	}
	t.shutdown = append(shutdown, t.shutdown...)
	t.summary = plan.String()
	if plan.traces != "" || plan.metrics != "" {
		// Export failures (a collector down) are logged, not printed by the
		// SDK's default handler in its own format.
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			log.Warn("telemetry: export failed", zap.Error(err))
		}))
	}
	// For libraries that use the globals; the sidecar itself passes its
	// providers explicitly.
	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(t.Meter)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return t, nil
}

// New builds Telemetry around tp with the Prometheus /metrics reader plus
// readers (OTLP, or a test's manual reader). res may be nil.
func New(tp trace.TracerProvider, res *resource.Resource, readers ...sdkmetric.Reader) (*Telemetry, error) {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	reg := prometheus.NewRegistry()
	prom, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		// presence_sidecar.open_connections -> presence_sidecar_open_connections,
		// counters end in _total, seconds in _seconds.
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
		otelprom.WithoutScopeInfo(), // one scope; its labels would only add noise
	)
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts := []sdkmetric.Option{sdkmetric.WithReader(prom)}
	for _, r := range readers {
		opts = append(opts, sdkmetric.WithReader(r))
	}
	if res == nil {
		// Not the SDK's default ("unknown_service:…" in target_info).
		res = resource.NewSchemaless(semconv.ServiceName(DefaultServiceName), semconv.ServiceVersion(Version()))
	}
	opts = append(opts, sdkmetric.WithResource(res))
	mp := sdkmetric.NewMeterProvider(opts...)
	return &Telemetry{
		Tracer:   tp,
		Meter:    mp,
		metrics:  promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		shutdown: []func(context.Context) error{mp.Shutdown},
		summary:  exportPlan{}.String(), // nothing exported; Setup replaces it
	}, nil
}

// Off is telemetry without export: the no-op tracer and /metrics.
func Off() *Telemetry {
	t, err := New(nil, nil)
	if err != nil {
		panic(err) // only a bad option combination, fixed in code
	}
	return t
}

// Resource describes this process: see Setup.
func Resource(ctx context.Context, getenv func(string) string) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{semconv.ServiceName(DefaultServiceName), semconv.ServiceVersion(Version())}
	if v := getenv("POD_NAME"); v != "" {
		attrs = append(attrs, semconv.K8SPodName(v))
	}
	if v := getenv("POD_NAMESPACE"); v != "" {
		attrs = append(attrs, semconv.K8SNamespaceName(v))
	}
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(attrs...),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES: last, so they win
	)
	if err != nil {
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES=%q: %w", getenv("OTEL_RESOURCE_ATTRIBUTES"), err)
	}
	return res, nil
}

// version, when set at link time (-ldflags "-X
// github.com/presence-sidecar/presence-sidecar/internal/telemetry.version=v1.2.3",
// the Dockerfile's VERSION build argument), is the service.version: a build
// in a container has no module version or VCS data to read.
var version string

// Version is service.version: the linked-in version, else the module
// version the binary was built from ("devel" for a build from a work tree,
// with the VCS revision when known).
func Version() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "devel-" + s.Value[:12]
		}
	}
	return "devel"
}

const (
	protoHTTP = "http/protobuf"
	protoGRPC = "grpc"
)

// exportPlan is what Setup exports: the OTLP protocol per signal, "" for none.
type exportPlan struct{ traces, metrics string }

func (p exportPlan) String() string {
	or := func(proto string) string {
		if proto == "" {
			return "off"
		}
		return "otlp (" + proto + ")"
	}
	m := "/metrics"
	if p.metrics != "" {
		m += " and " + or(p.metrics)
	}
	return "traces: " + or(p.traces) + "; metrics: " + m
}

// plan reads the OTEL_* choices. Errors name the variable, the value and
// what is allowed.
func plan(getenv func(string) string) (exportPlan, error) {
	var p exportPlan
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return p, nil
	}
	var errs []error
	for _, sig := range []struct {
		name  string // TRACES, METRICS
		extra string // another accepted exporter name
		dst   *string
	}{{"TRACES", "", &p.traces}, {"METRICS", "prometheus", &p.metrics}} {
		on, err := exporterOn(getenv, sig.name, sig.extra)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !on {
			continue
		}
		proto, err := protocol(getenv, sig.name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		*sig.dst = proto
	}
	return p, errors.Join(errs...)
}

// exporterOn reads OTEL_<SIGNAL>_EXPORTER.
func exporterOn(getenv func(string) string, signal, extra string) (bool, error) {
	name := "OTEL_" + signal + "_EXPORTER"
	raw := getenv(name)
	if strings.TrimSpace(raw) == "" {
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT") != "", nil
	}
	on := false
	for _, v := range strings.Split(raw, ",") {
		switch v = strings.ToLower(strings.TrimSpace(v)); {
		case v == "otlp":
			on = true
		case v == "none", v == "", extra != "" && v == extra:
		default:
			allowed := "otlp or none"
			if extra != "" {
				allowed = "otlp, " + extra + " (the admin listener's /metrics, always on) or none"
			}
			return false, fmt.Errorf("%s=%q: want %s", name, raw, allowed)
		}
	}
	return on, nil
}

// protocol reads OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL, then OTEL_EXPORTER_OTLP_PROTOCOL.
func protocol(getenv func(string) string, signal string) (string, error) {
	name := "OTEL_EXPORTER_OTLP_" + signal + "_PROTOCOL"
	v := strings.TrimSpace(getenv(name))
	if v == "" {
		name = "OTEL_EXPORTER_OTLP_PROTOCOL"
		v = strings.TrimSpace(getenv(name))
	}
	switch v {
	case "", protoHTTP:
		return protoHTTP, nil
	case protoGRPC:
		return protoGRPC, nil
	}
	return "", fmt.Errorf("%s=%q: want http/protobuf or grpc", name, v)
}
