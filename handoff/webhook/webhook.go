// Package webhook is the wire format of a notification as the human-service
// platform receives it: the JSON bodies of client.offline and client.online
// (Render), and the Standard Webhooks headers, signature and its check
// (Sign, Verify, DecodeSecret). The deliverer (package handoff) writes it; the
// demo agent console reads it.
//
// Standard Webhooks: https://www.standardwebhooks.com/, specification at
// https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
package webhook

// The Standard Webhooks headers (specification, "Webhook headers"). HTTP header
// names are case-insensitive (RFC 9110 §5.1): http.Header stores them as
// Webhook-Id and so on, and Get and Set find them in either spelling.
const (
	// HeaderID carries the message id, the same on every retry: the
	// receiver's idempotency key.
	HeaderID = "webhook-id"
	// HeaderTimestamp carries the time of the attempt, in Unix seconds.
	HeaderTimestamp = "webhook-timestamp"
	// HeaderSignature carries space-separated signatures "v1,<base64>".
	HeaderSignature = "webhook-signature"
)
