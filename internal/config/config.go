// Package config reads the sidecar's settings from the environment. Every
// bad value stops start-up with a message naming the variable, the value and
// what is allowed.
package config

import (
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/presence-sidecar/presence-sidecar/handoff"
	"github.com/presence-sidecar/presence-sidecar/handoff/webhook"
	"github.com/presence-sidecar/presence-sidecar/presence"
	"github.com/presence-sidecar/presence-sidecar/presence/rules"
	"github.com/presence-sidecar/presence-sidecar/proxy"
	"github.com/presence-sidecar/presence-sidecar/proxy/event"
	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
)

// Config is the whole environment of the sidecar. The desc tags feed the
// README's variable table (a test keeps the two in step).
type Config struct {
	// Data plane
	ListenAddr        string        `env:"LISTEN_ADDR" desc:"proxy listener"`
	UpstreamURL       string        `env:"UPSTREAM_URL,required" desc:"the conversation service (http://, https://, ws://, wss://)"`
	ReadHeaderTimeout time.Duration `env:"READ_HEADER_TIMEOUT" desc:"time a client has to send its request headers"`
	MaxHeaderBytes    int           `env:"MAX_HEADER_BYTES" desc:"largest request header block; larger gets 431"`
	MaxConnections    int           `env:"MAX_CONNECTIONS" desc:"requests in progress plus open WebSockets allowed (0 = no cap); over it: 503"`
	DialTimeout       time.Duration `env:"UPSTREAM_DIAL_TIMEOUT" desc:"time to connect to the upstream and, for WebSockets, to get its handshake answer; then 502"`
	ResponseTimeout   time.Duration `env:"UPSTREAM_RESPONSE_TIMEOUT" desc:"time the upstream has to send a plain HTTP response's headers once the request is sent (0 = no limit); then 504. A streamed body is never cut"`
	TCPKeepAlive      time.Duration `env:"TCP_KEEPALIVE" desc:"TCP keep-alive period on client and upstream sockets"`
	InspectBytes      int           `env:"INSPECT_BYTES" desc:"bytes of each message (after inflation) and HTTP body that ids and rules look at"`
	ProbeInterval     time.Duration `env:"PROBE_INTERVAL" desc:"liveness Ping to each WebSocket client (0 = off)"`
	ProbeTimeout      time.Duration `env:"PROBE_TIMEOUT" desc:"no Pong within this after a probe: the connection is dead and both sides are closed"`
	SessionIDFrom     string        `env:"SESSION_ID_FROM" desc:"where a session id comes from, tried in order"`
	BotIDFrom         string        `env:"BOT_ID_FROM" desc:"where a bot id comes from, tried in order"`
	Preset            string        `env:"PRESET" desc:"the chat stack: seed, socketio, sockjs or centrifuge; sets how messages are decoded and the defaults of SESSION_ID_FROM, BOT_ID_FROM, PRESENCE_IGNORE, HANDOFF_START_MATCH and HANDOFF_END_MATCH (see Presets)"`

	// Presence
	PresenceEnabled       bool          `env:"PRESENCE_ENABLED" desc:"monitor client presence (off: a pure proxy)"`
	PresenceCheckInterval time.Duration `env:"PRESENCE_CHECK_INTERVAL" desc:"time without presence before a session is absent (1m–10m)"`
	PresenceAllowAny      bool          `env:"PRESENCE_ALLOW_ANY_INTERVAL" desc:"lift the 1m–10m range (tests, demos)"`
	PresenceReturnMessage string        `env:"PRESENCE_RETURN_MESSAGE" desc:"text sent when an absent client returns (blank: O cliente voltou a ficar online.)"`
	PresenceMode          string        `env:"PRESENCE_MODE" desc:"connection or activity"`
	PresenceIgnore        string        `env:"PRESENCE_IGNORE" desc:"frames that are not activity (rules)"`
	PresenceBotsFile      string        `env:"PRESENCE_BOTS_FILE" desc:"JSON file of per-bot settings"`
	PresenceForgetAfter   time.Duration `env:"PRESENCE_FORGET_AFTER" desc:"idle sessions are forgotten after this"`
	PresenceMaxSessions   int           `env:"PRESENCE_MAX_SESSIONS" desc:"most sessions tracked at once (0 = no cap); at the cap the oldest idle ones are shed (see Failure modes)"`

	// Hand-over
	HandoffDetect        string        `env:"HANDOFF_DETECT" desc:"always, rules, api (comma list)"`
	HandoffStartMatch    string        `env:"HANDOFF_START_MATCH" desc:"rules that start a hand-over"`
	HandoffEndMatch      string        `env:"HANDOFF_END_MATCH" desc:"rules that end a hand-over"`
	HandoffURL           string        `env:"HANDOFF_URL" desc:"the human-service platform (required when PRESENCE_ENABLED)"`
	HandoffExpirePath    string        `env:"HANDOFF_EXPIRE_PATH" desc:"path of the offline notification"`
	HandoffMessagePath   string        `env:"HANDOFF_MESSAGE_PATH" desc:"path of the return message"`
	HandoffToken         string        `env:"HANDOFF_TOKEN" desc:"sent as Authorization: Bearer"`
	HandoffSigningSecret string        `env:"HANDOFF_SIGNING_SECRET" desc:"whsec_… secret for Standard Webhooks signatures"`
	HandoffTimeout       time.Duration `env:"HANDOFF_TIMEOUT" desc:"time a delivery attempt may take"`
	HandoffRetryMaxDelay time.Duration `env:"HANDOFF_RETRY_MAX_DELAY" desc:"longest wait between retries"`
	HandoffRetryFor      time.Duration `env:"HANDOFF_RETRY_FOR" desc:"how long a notification is retried before it is dead-lettered"`

	// State
	DataDir        string        `env:"DATA_DIR" desc:"embedded state and outbox (one replica; relative to the working directory); unused in cluster mode"`
	RedisURL       string        `env:"REDIS_URL" desc:"cluster mode: state and outbox in Redis, shared by any number of replicas. redis:// or rediss://; a Redis Cluster as redis://h1:6379?addr=h2:6379&addr=h3:6379; Sentinel as redis://s1:26379?addr=s2:26379&master_set=NAME"`
	RedisKeyPrefix string        `env:"REDIS_KEY_PREFIX" desc:"prefix of every key the sidecar writes in Redis"`
	RedisLeaseTTL  time.Duration `env:"REDIS_LEASE_TTL" desc:"a replica not heard of this long is dead: its connections lapse and survivors take over its work (1s–1h)"`

	// Admin and lifecycle
	AdminAddr     string        `env:"ADMIN_ADDR" desc:"admin listener: /healthz /readyz /metrics /v1/ and the status page"`
	AdminToken    string        `env:"ADMIN_TOKEN" desc:"Bearer token for /v1/ and /debug/pprof/ (unset: both are off)"`
	LogLevel      string        `env:"LOG_LEVEL" desc:"debug, info, warn, error"`
	LogFormat     string        `env:"LOG_FORMAT" desc:"json or console"`
	ShutdownGrace time.Duration `env:"SHUTDOWN_GRACE" desc:"on SIGTERM, time open connections get before they are closed with 1001"`
}

// Defaults is the configuration when no variable is set. Where a library
// has a default of its own, this refers to it, so that each default is
// defined once; the rest are the sidecar's product defaults.
func Defaults() Config {
	return Config{
		ListenAddr:        ":8080",
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		DialTimeout:       proxy.DefaultDialTimeout,
		ResponseTimeout:   proxy.DefaultResponseTimeout,
		TCPKeepAlive:      30 * time.Second,
		InspectBytes:      proxy.DefaultInspectBytes,
		ProbeInterval:     25 * time.Second, // with PROBE_TIMEOUT: a dead client found within ~45 s, as Socket.IO does
		ProbeTimeout:      20 * time.Second,
		SessionIDFrom:     "query:sessionId,header:X-Session-Id,frame:data.sessionId,body:sessionId",
		BotIDFrom:         "query:botId,frame:data.botId,body:botId",
		Preset:            "seed",

		PresenceCheckInterval: 2 * time.Minute,
		PresenceMode:          string(presence.ModeConnection),
		PresenceIgnore:        "client:action=keep_alive",
		PresenceForgetAfter:   presence.DefaultForgetAfter,
		PresenceMaxSessions:   presence.DefaultMaxSessions,

		HandoffDetect:        "rules,api",
		HandoffStartMatch:    "server:data.isTransfer=true",
		HandoffEndMatch:      "server:action=end_conversation&data.isTransfer!=true",
		HandoffExpirePath:    handoff.DefaultExpirePath,
		HandoffMessagePath:   handoff.DefaultMessagePath,
		HandoffTimeout:       handoff.DefaultTimeout,
		HandoffRetryMaxDelay: handoff.DefaultRetryMaxDelay,
		HandoffRetryFor:      handoff.DefaultRetryFor,

		DataDir:        "./data",
		RedisKeyPrefix: "presence-sidecar:",
		RedisLeaseTTL:  15 * time.Second, // as Ably holds a leave; Phoenix waits 30 s, Socket.IO's adapter 10 s
		AdminAddr:      "127.0.0.1:9090",
		LogLevel:       "info",
		LogFormat:      "json",
		ShutdownGrace:  30 * time.Second,
	}
}

// Load reads and validates the configuration from environ (os.Environ() form).
// A variable that is not set keeps its value from Defaults. Every mistake is
// reported at once, one error per variable, so that one run shows them all:
// a value that does not parse keeps its default for the checks that follow,
// which therefore do not report it twice.
func Load(environ []string) (Config, error) {
	vars := env.ToMap(environ)
	c := Defaults()
	applyPreset(&c, vars["PRESET"]) // preset.go: explicit variables are read over it
	parseErrs, unset := explain(env.ParseWithOptions(&c, env.Options{Environment: vars}), vars)
	errs := parseErrs
	for _, err := range c.validate() {
		var v *VarError
		if errors.As(err, &v) && unset[v.Name] {
			continue // "required but not set" says it already
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return c, nil
	}
	return c, Errors(errs)
}

// Errors is every configuration mistake of one start-up. Its message lists
// them one per line.
type Errors []error

// Error implements error.
func (e Errors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap lets errors.Is and errors.As see each mistake.
func (e Errors) Unwrap() []error { return e }

// VarError is one variable's bad value and what is allowed instead.
type VarError struct{ Name, Value, Allowed string }

// Error implements error.
func (e *VarError) Error() string { return fmt.Sprintf("%s=%q: %s", e.Name, e.Value, e.Allowed) }

// Vars lists every variable the sidecar knows with its default and description.
func Vars() []Var {
	var out []Var
	t := reflect.TypeOf(Config{})
	defaults := reflect.ValueOf(Defaults())
	for i := range t.NumField() {
		f := t.Field(i)
		out = append(out, Var{Name: varName(f), Default: showDefault(defaults.Field(i)), Desc: f.Tag.Get("desc"), Required: strings.Contains(f.Tag.Get("env"), ",required")})
	}
	return out
}

// showDefault writes a default as an operator would set it: durations
// without trailing zero units ("2m", "24h"), booleans and numbers as
// themselves, "" for none.
func showDefault(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case time.Duration:
		s := x.String()
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
		return s
	case string:
		return x
	default:
		return fmt.Sprint(x)
	}
}

// varName is the variable a Config field is read from.
func varName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
	return name
}

// Var describes one environment variable.
type Var struct {
	Name, Default, Desc string
	Required            bool
}

// explain turns the env library's errors, which name Go fields, into ones
// that name the variable and its value; unset holds the required variables
// that are missing.
func explain(err error, vars map[string]string) (errs []error, unset map[string]bool) {
	if err == nil {
		return nil, nil
	}
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return []error{err}, nil
	}
	t := reflect.TypeOf(Config{})
	unset = map[string]bool{}
	for _, e := range agg.Errors {
		var pe env.ParseError
		var notSet env.VarIsNotSetError
		switch {
		case errors.As(e, &pe):
			f, _ := t.FieldByName(pe.Name)
			name := varName(f)
			errs = append(errs, bad(name, vars[name], allowedFor(pe.Type)))
		case errors.As(e, &notSet):
			unset[notSet.Key] = true
			errs = append(errs, fmt.Errorf("%s is required but not set", notSet.Key))
		default:
			errs = append(errs, e)
		}
	}
	return errs, unset
}

func allowedFor(t reflect.Type) string {
	switch {
	case t == reflect.TypeOf(time.Duration(0)):
		return "want a Go duration such as 500ms, 25s, 2m or 1h"
	case t.Kind() == reflect.Bool:
		return "want true or false"
	case t.Kind() == reflect.Int:
		return "want a whole number"
	}
	return "cannot parse as " + t.String()
}

func bad(name, value, allowed string) error {
	return &VarError{Name: name, Value: value, Allowed: allowed}
}

// validate checks the values that parsed, one error per mistake.
func (c Config) validate() []error {
	var errs []error
	u, err := url.Parse(c.UpstreamURL)
	if err != nil || u.Host == "" || !oneOf(u.Scheme, "http", "https", "ws", "wss") {
		errs = append(errs, bad("UPSTREAM_URL", RedactURL(c.UpstreamURL), "want an absolute http://, https://, ws:// or wss:// URL with a host"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		zero bool // zero allowed
	}{
		{"READ_HEADER_TIMEOUT", c.ReadHeaderTimeout, false},
		{"UPSTREAM_DIAL_TIMEOUT", c.DialTimeout, false},
		{"UPSTREAM_RESPONSE_TIMEOUT", c.ResponseTimeout, true},
		{"TCP_KEEPALIVE", c.TCPKeepAlive, true},
		{"PROBE_INTERVAL", c.ProbeInterval, true},
		{"PROBE_TIMEOUT", c.ProbeTimeout, false},
		{"PRESENCE_FORGET_AFTER", c.PresenceForgetAfter, false},
		{"HANDOFF_TIMEOUT", c.HandoffTimeout, false},
		{"HANDOFF_RETRY_MAX_DELAY", c.HandoffRetryMaxDelay, false},
		{"HANDOFF_RETRY_FOR", c.HandoffRetryFor, false},
		{"SHUTDOWN_GRACE", c.ShutdownGrace, true},
	} {
		if d.v < 0 || (d.v == 0 && !d.zero) {
			allowed := "want a positive duration"
			if d.zero {
				allowed = "want a duration of 0 or more"
			}
			errs = append(errs, bad(d.name, d.v.String(), allowed))
		}
	}
	if c.MaxConnections < 0 {
		errs = append(errs, bad("MAX_CONNECTIONS", fmt.Sprint(c.MaxConnections), "want 0 (no cap) or more"))
	}
	if c.PresenceMaxSessions < 0 {
		errs = append(errs, bad("PRESENCE_MAX_SESSIONS", fmt.Sprint(c.PresenceMaxSessions), "want 0 (no cap) or more"))
	}
	if c.MaxHeaderBytes < 1024 {
		errs = append(errs, bad("MAX_HEADER_BYTES", fmt.Sprint(c.MaxHeaderBytes), "want at least 1024"))
	}
	if c.InspectBytes < 64 || c.InspectBytes > 1<<20 {
		errs = append(errs, bad("INSPECT_BYTES", fmt.Sprint(c.InspectBytes), "want 64 to 1048576"))
	}
	if !oneOf(c.LogFormat, "json", "console") {
		errs = append(errs, bad("LOG_FORMAT", c.LogFormat, "want json or console"))
	}
	if !oneOf(c.LogLevel, "debug", "info", "warn", "error") {
		errs = append(errs, bad("LOG_LEVEL", c.LogLevel, "want debug, info, warn or error"))
	}
	if err := presence.CheckInterval(c.PresenceCheckInterval, c.PresenceAllowAny); err != nil {
		hint := ""
		if c.PresenceCheckInterval > 0 {
			hint = "; PRESENCE_ALLOW_ANY_INTERVAL=true lifts the range for tests and demos"
		}
		errs = append(errs, bad("PRESENCE_CHECK_INTERVAL", c.PresenceCheckInterval.String(), err.Error()+hint))
	}
	if err := presence.CheckMode(presence.Mode(c.PresenceMode)); err != nil {
		errs = append(errs, bad("PRESENCE_MODE", c.PresenceMode, err.Error()))
	}
	if _, err := c.HandoffDetection(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.validatePresenceInputs()...)
	errs = append(errs, c.validateRedis()...)
	errs = append(errs, c.validatePreset()...)
	if c.PresenceEnabled && c.HandoffURL == "" {
		errs = append(errs, bad("HANDOFF_URL", "", "required when PRESENCE_ENABLED=true: the human-service platform's base URL"))
	}
	if c.HandoffURL != "" {
		if _, err := handoff.ParseBaseURL(c.HandoffURL); err != nil {
			errs = append(errs, bad("HANDOFF_URL", RedactURL(c.HandoffURL), err.Error()))
		}
	}
	for _, p := range []struct{ name, v string }{{"HANDOFF_EXPIRE_PATH", c.HandoffExpirePath}, {"HANDOFF_MESSAGE_PATH", c.HandoffMessagePath}} {
		if err := handoff.CheckPath(p.v); err != nil {
			errs = append(errs, bad(p.name, p.v, err.Error()))
		}
	}
	return flatten(errs)
}

// flatten splits the errors.Join of a helper that checks several variables
// into one error per variable.
func flatten(errs []error) []error {
	var out []error
	for _, err := range errs {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			out = append(out, flatten(j.Unwrap())...)
			continue
		}
		out = append(out, err)
	}
	return out
}

// validateRedis checks the cluster mode variables when REDIS_URL is set.
func (c Config) validateRedis() []error {
	if c.RedisURL == "" {
		return nil
	}
	var errs []error
	if _, err := redisstate.ParseURL(c.RedisURL); err != nil {
		errs = append(errs, bad("REDIS_URL", RedactURL(c.RedisURL), err.Error()))
	}
	if err := redisstate.CheckPrefix(c.RedisKeyPrefix); err != nil {
		errs = append(errs, bad("REDIS_KEY_PREFIX", c.RedisKeyPrefix, err.Error()))
	}
	if c.RedisLeaseTTL < time.Second || c.RedisLeaseTTL > time.Hour {
		errs = append(errs, bad("REDIS_LEASE_TTL", c.RedisLeaseTTL.String(), "want 1s to 1h"))
	}
	return errs
}

// validatePresenceInputs checks the variables that only matter with
// presence on, whether it is on or not: a mistake should show the day it is
// made, not the day someone turns presence on.
func (c Config) validatePresenceInputs() []error {
	var errs []error
	if _, _, err := c.IDSources(); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.PresenceRules(); err != nil {
		errs = append(errs, err)
	}
	if c.HandoffSigningSecret != "" {
		if _, err := webhook.DecodeSecret(c.HandoffSigningSecret); err != nil {
			errs = append(errs, fmt.Errorf("HANDOFF_SIGNING_SECRET (value hidden): %v", err))
		}
	}
	if c.PresenceCheckInterval > 0 { // else refused above; the file is read against that default
		if _, err := c.PresenceBots(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// IDSources parses SESSION_ID_FROM and BOT_ID_FROM.
func (c Config) IDSources() (session, bot proxy.Sources, err error) {
	session, errSession := proxy.ParseSources("SESSION_ID_FROM", c.SessionIDFrom)
	bot, errBot := proxy.ParseSources("BOT_ID_FROM", c.BotIDFrom)
	return session, bot, errors.Join(errSession, errBot)
}

// Rules are the parsed PRESENCE_IGNORE, HANDOFF_START_MATCH and
// HANDOFF_END_MATCH.
type Rules struct{ Ignore, HandoffStart, HandoffEnd rules.Set }

// PresenceRules parses PRESENCE_IGNORE, HANDOFF_START_MATCH and
// HANDOFF_END_MATCH (a rule without a direction looks at the client's frames).
func (c Config) PresenceRules() (Rules, error) {
	var r Rules
	var errs []error
	for _, v := range []struct {
		name, value string
		dst         *rules.Set
	}{
		{"PRESENCE_IGNORE", c.PresenceIgnore, &r.Ignore},
		{"HANDOFF_START_MATCH", c.HandoffStartMatch, &r.HandoffStart},
		{"HANDOFF_END_MATCH", c.HandoffEndMatch, &r.HandoffEnd},
	} {
		s, err := rules.Parse(v.value, event.FromClient)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", v.name, v.value, err))
			continue
		}
		*v.dst = s
	}
	return r, errors.Join(errs...)
}

// PresenceBots reads PRESENCE_BOTS_FILE (nil when it is not set).
func (c Config) PresenceBots() (map[string]store.BotSettings, error) {
	if c.PresenceBotsFile == "" {
		return nil, nil
	}
	bots, err := presence.LoadBotsFile(c.PresenceBotsFile, c.PresenceDefaults(), c.PresenceAllowAny)
	if err != nil {
		return nil, fmt.Errorf("PRESENCE_BOTS_FILE=%q: %w", c.PresenceBotsFile, err)
	}
	return bots, nil
}

// PresenceDefaults are the presence settings the environment gives every bot.
func (c Config) PresenceDefaults() presence.Settings {
	return presence.Settings{
		Enabled:       true,
		CheckInterval: c.PresenceCheckInterval,
		ReturnMessage: c.PresenceReturnMessage,
		Mode:          presence.Mode(c.PresenceMode),
	}
}

// HandoffDetection parses HANDOFF_DETECT.
func (c Config) HandoffDetection() (presence.Detect, error) {
	d, err := presence.ParseDetect(c.HandoffDetect)
	if err != nil {
		return d, bad("HANDOFF_DETECT", c.HandoffDetect, err.Error())
	}
	return d, nil
}

func oneOf(v string, allowed ...string) bool { return slices.Contains(allowed, v) }
