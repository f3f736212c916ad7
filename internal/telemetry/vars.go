package telemetry

import "slices"

// Vars lists every variable telemetry reads, itself or through the
// OpenTelemetry SDK and its OTLP exporters, so that a deployment's
// variables can be checked against it (a misspelt OTEL_ name is silently
// ignored by the SDK). OTEL_PROPAGATORS and OTEL_LOGS_EXPORTER are not here:
// the sidecar always speaks W3C trace context and logs through zap.
func Vars() []string {
	out := []string{
		// Setup's own choices and the resource.
		"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER",
		"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "POD_NAME", "POD_NAMESPACE",
		// The trace SDK.
		"OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
		"OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
		"OTEL_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
		"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_EVENT_COUNT_LIMIT",
		"OTEL_SPAN_LINK_COUNT_LIMIT", "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
		// The metric SDK.
		"OTEL_METRIC_EXPORT_INTERVAL", "OTEL_METRIC_EXPORT_TIMEOUT", "OTEL_METRICS_EXEMPLAR_FILTER",
		"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
	}
	// The OTLP exporters: each setting for both signals, or for one.
	for _, signal := range []string{"", "TRACES_", "METRICS_"} {
		for _, s := range []string{"ENDPOINT", "PROTOCOL", "HEADERS", "TIMEOUT", "COMPRESSION", "INSECURE",
			"CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY"} {
			out = append(out, "OTEL_EXPORTER_OTLP_"+signal+s)
		}
	}
	slices.Sort(out)
	return out
}

// Validate checks the OTEL_* choices Setup makes (exporters, protocols)
// without building anything.
func Validate(getenv func(string) string) error {
	_, err := plan(getenv)
	return err
}
