package webhook

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The example of the Standard Webhooks specification (and of its reference
// libraries): secret, message id, timestamp, body and the signature they give.
const (
	specSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTimestamp = int64(1614265330)
	specBody      = `{"test": 2432232314}`
	specSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func specHeader(signatures string) http.Header {
	h := http.Header{}
	h.Set(HeaderID, specID)
	h.Set(HeaderTimestamp, strconv.FormatInt(specTimestamp, 10))
	h.Set(HeaderSignature, signatures)
	return h
}

func TestSignGivesTheSpecificationsVector(t *testing.T) {
	key, err := DecodeSecret(specSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := Sign(key, specID, specTimestamp, []byte(specBody)); got != specSignature {
		t.Fatalf("Sign = %s, want %s", got, specSignature)
	}
}

func TestVerifyAcceptsAnyMatchingSignatureOfTheList(t *testing.T) {
	key, _ := DecodeSecret(specSecret)
	at := time.Unix(specTimestamp, 0)
	if err := Verify(key, specHeader("v1,bogus "+specSignature), []byte(specBody), at, 5*time.Minute); err != nil {
		t.Fatalf("Verify rejects the specification's vector: %v", err)
	}
	// Header names are case-insensitive: a server's http.Header holds them as Webhook-Id etc.
	canonical := http.Header{"Webhook-Id": {specID}, "Webhook-Timestamp": {strconv.FormatInt(specTimestamp, 10)}, "Webhook-Signature": {specSignature}}
	if err := Verify(key, canonical, []byte(specBody), at, 5*time.Minute); err != nil {
		t.Errorf("canonical header spelling: %v", err)
	}
	// A signature Sign made verifies, for any id, time and body.
	now := time.Now()
	body := []byte(`{"event":"client.offline"}`)
	sh := http.Header{}
	sh.Set(HeaderID, "msg_x")
	sh.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	sh.Set(HeaderSignature, Sign(key, "msg_x", now.Unix(), body))
	if err := Verify(key, sh, body, now, time.Minute); err != nil {
		t.Errorf("Verify rejects what Sign made: %v", err)
	}
}

func TestVerifyRefusesWithAReason(t *testing.T) {
	key, _ := DecodeSecret(specSecret)
	at := time.Unix(specTimestamp, 0)
	noTimestamp := specHeader(specSignature)
	noTimestamp.Del(HeaderTimestamp)
	badTimestamp := specHeader(specSignature)
	badTimestamp.Set(HeaderTimestamp, "yesterday")
	for _, c := range []struct {
		name string
		key  []byte
		h    http.Header
		body string
		now  time.Time
		want string
	}{
		{"changed body", key, specHeader(specSignature), `{"test": 2432232315}`, at, "no webhook-signature matches the signing secret"},
		{"other key", []byte("another key"), specHeader(specSignature), specBody, at, "no webhook-signature matches"},
		{"other scheme", key, specHeader("v1a," + strings.TrimPrefix(specSignature, "v1,")), specBody, at, "no webhook-signature matches"},
		{"no signature", key, specHeader(""), specBody, at, "missing webhook-id, webhook-timestamp or webhook-signature"},
		{"no timestamp", key, noTimestamp, specBody, at, "missing webhook-id"},
		{"timestamp not seconds", key, badTimestamp, specBody, at, "webhook-timestamp is not Unix seconds"},
		{"too old", key, specHeader(specSignature), specBody, at.Add(time.Hour), "webhook-timestamp is 1h0m0s away from now (tolerance 5m0s)"},
		{"from the future", key, specHeader(specSignature), specBody, at.Add(-6 * time.Minute), "away from now"},
	} {
		err := Verify(c.key, c.h, []byte(c.body), c.now, 5*time.Minute)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Verify = %v, want %q", c.name, err, c.want)
		}
	}
}

func TestDecodeSecretErrorsDoNotShowTheSecret(t *testing.T) {
	for in, want := range map[string]string{
		"s3cr3t-plain":         `must start with "whsec_" followed by the base64 key`,
		"whsec_!!not-base64!!": `the part after "whsec_" is not valid standard base64`,
		"whsec_":               `the key after "whsec_" is empty`,
	} {
		_, err := DecodeSecret(in)
		if err == nil || err.Error() != want {
			t.Errorf("DecodeSecret(%q) = %v, want %q", in, err, want)
		}
		if v := strings.TrimPrefix(in, SecretPrefix); err != nil && v != "" && strings.Contains(err.Error(), v) {
			t.Errorf("error reveals the secret: %v", err)
		}
	}
	if key, err := DecodeSecret(specSecret); err != nil || len(key) != 24 {
		t.Errorf("DecodeSecret(the specification's secret) = %d bytes, %v", len(key), err)
	}
}
