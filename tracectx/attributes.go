package tracectx

import "go.opentelemetry.io/otel/attribute"

// The span attributes of the sidecar's own spans, in one place so that a
// trace query names each the same way whichever package set it. Session ids
// use semconv's session.id and HTTP fields the HTTP conventions; these are
// what no semantic convention covers.
const (
	AttrBotID  = attribute.Key("bot.id")
	AttrConnID = attribute.Key("presence_sidecar.conn.id") // the id the logs show as "conn"

	// Presence transitions.
	AttrEpisode    = attribute.Key("presence.episode")
	AttrReason     = attribute.Key("presence.reason")
	AttrMode       = attribute.Key("presence.mode")
	AttrHandedOver = attribute.Key("presence.handed_over")

	// Delivery attempts.
	AttrWebhookID = attribute.Key("presence_sidecar.webhook.id")
	AttrKind      = attribute.Key("presence_sidecar.notification.kind")
	AttrAttempt   = attribute.Key("presence_sidecar.delivery.attempt")
	AttrOutcome   = attribute.Key("presence_sidecar.delivery.outcome")
)
