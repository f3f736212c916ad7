package presence

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/presence-sidecar/presence-sidecar/store"
)

// What a bot's presence settings are: their values, validation, names and
// JSON. Where each bot's settings come from at run time is bots.go.

// Mode says what counts as presence.
type Mode string

const (
	// ModeConnection: present while the session has at least one live connection.
	ModeConnection Mode = "connection"
	// ModeActivity: present while the session shows activity (client data
	// messages not matched by PRESENCE_IGNORE, HTTP requests), connected or not.
	ModeActivity Mode = "activity"
)

// DefaultReturnMessage is sent when a bot's return message is unset or blank.
const DefaultReturnMessage = "O cliente voltou a ficar online."

// The seed's allowed range for the inactivity check interval.
const (
	MinCheckInterval = time.Minute
	MaxCheckInterval = 10 * time.Minute
)

// Settings are one bot's effective presence settings.
type Settings struct {
	Enabled       bool
	CheckInterval time.Duration
	ReturnMessage string // as configured; may be blank (see ReturnText)
	Mode          Mode   // "" means ModeConnection
}

// ReturnText is the text of the return message: ReturnMessage, or
// DefaultReturnMessage when that is blank.
func (s Settings) ReturnText() string {
	if strings.TrimSpace(s.ReturnMessage) == "" {
		return DefaultReturnMessage
	}
	return s.ReturnMessage
}

func (m Mode) normal() Mode {
	if m == "" {
		return ModeConnection
	}
	return m
}

// botSettingNames are the names of the per-bot settings, in order. They are
// spelt once, as the JSON tags of store.BotSettings (PRESENCE_BOTS_FILE, the
// store and the admin API all use them); the JSON of Settings, the parsing
// of a change and the clearing of a field all read them from there.
var botSettingNames = func() []string {
	t := reflect.TypeFor[store.BotSettings]()
	names := make([]string, t.NumField())
	for i := range names {
		names[i], _, _ = strings.Cut(t.Field(i).Tag.Get("json"), ",")
	}
	return names
}()

// allowedBotSettings lists botSettingNames for error messages:
// "enabled, checkInterval, returnMessage, mode".
var allowedBotSettings = strings.Join(botSettingNames, ", ")

// botSetting is the field of o named name, settable; false for an unknown name.
func botSetting(o *store.BotSettings, name string) (reflect.Value, bool) {
	i := slices.Index(botSettingNames, name)
	if i < 0 {
		return reflect.Value{}, false
	}
	return reflect.ValueOf(o).Elem().Field(i), true
}

// MarshalJSON writes every field under its PRESENCE_BOTS_FILE name, in
// order, with the interval as a Go duration string ("2m0s") rather than
// nanoseconds.
func (s Settings) MarshalJSON() ([]byte, error) {
	enabled := s.Enabled
	o := reflect.ValueOf(store.BotSettings{
		Enabled: &enabled, CheckInterval: s.CheckInterval.String(), ReturnMessage: s.ReturnMessage, Mode: string(s.Mode.normal()),
	})
	// Field by field: json.Marshal(store.BotSettings) would omit the empty ones.
	b := []byte{'{'}
	for i, name := range botSettingNames {
		if i > 0 {
			b = append(b, ',')
		}
		k, _ := json.Marshal(name)
		v, err := json.Marshal(o.Field(i).Interface())
		if err != nil {
			return nil, err
		}
		b = append(append(append(b, k...), ':'), v...)
	}
	return append(b, '}'), nil
}

// UnmarshalJSON reads what MarshalJSON writes (no validation).
func (s *Settings) UnmarshalJSON(b []byte) error {
	var o store.BotSettings
	if err := json.Unmarshal(b, &o); err != nil {
		return err
	}
	var d time.Duration
	if o.CheckInterval != "" {
		var err error
		if d, err = time.ParseDuration(o.CheckInterval); err != nil {
			return notADuration(o.CheckInterval)
		}
	}
	*s = Settings{Enabled: o.Enabled != nil && *o.Enabled, CheckInterval: d, ReturnMessage: o.ReturnMessage, Mode: Mode(o.Mode)}
	return nil
}

func notADuration(checkInterval string) error {
	return fmt.Errorf("checkInterval %q is not a duration (e.g. \"2m\")", checkInterval)
}

var (
	errIntervalNotPositive = errors.New("want a positive duration")
	errIntervalOutOfRange  = fmt.Errorf("want %v to %v (the seed's 1–10 minutes)", MinCheckInterval, MaxCheckInterval)
)

// CheckInterval checks a check interval: it must be positive and, unless
// allowAny, within MinCheckInterval–MaxCheckInterval. The error says what
// is wanted ("want a positive duration", "want 1m0s to 10m0s (the seed's
// 1–10 minutes)"); the caller names the setting and its value.
func CheckInterval(d time.Duration, allowAny bool) error {
	switch {
	case d <= 0:
		return errIntervalNotPositive
	case !allowAny && (d < MinCheckInterval || d > MaxCheckInterval):
		return errIntervalOutOfRange
	}
	return nil
}

// ValidateSettings checks the interval (CheckInterval) and the mode.
// Errors name the field, the value and what is allowed, in the words
// PRESENCE_CHECK_INTERVAL's are written in.
func ValidateSettings(s Settings, allowAny bool) error {
	if err := CheckInterval(s.CheckInterval, allowAny); err != nil {
		return fmt.Errorf("checkInterval %q: %w", s.CheckInterval, err)
	}
	if err := CheckMode(s.Mode); err != nil {
		return fmt.Errorf("mode %q: %w", string(s.Mode), err)
	}
	return nil
}

// CheckMode checks a mode ("" means ModeConnection).
func CheckMode(m Mode) error {
	switch m {
	case "", ModeConnection, ModeActivity:
		return nil
	}
	return fmt.Errorf("want %s or %s", ModeConnection, ModeActivity)
}

// Resolve merges per-bot overrides over def and validates the result.
// Empty override fields keep def's values.
func Resolve(def Settings, o store.BotSettings, allowAny bool) (Settings, error) {
	s := def
	if o.Enabled != nil {
		s.Enabled = *o.Enabled
	}
	if v := strings.TrimSpace(o.CheckInterval); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return Settings{}, notADuration(o.CheckInterval)
		}
		s.CheckInterval = d
	}
	if o.ReturnMessage != "" {
		s.ReturnMessage = o.ReturnMessage
	}
	if v := strings.TrimSpace(o.Mode); v != "" {
		s.Mode = Mode(strings.ToLower(v))
	}
	s.Mode = s.Mode.normal()
	if err := ValidateSettings(s, allowAny); err != nil {
		return Settings{}, err
	}
	return s, nil
}

// mergeOverrides lays the set fields of o over base.
func mergeOverrides(base, o store.BotSettings) store.BotSettings {
	if o.Enabled != nil {
		v := *o.Enabled
		base.Enabled = &v
	}
	if o.CheckInterval != "" {
		base.CheckInterval = o.CheckInterval
	}
	if o.ReturnMessage != "" {
		base.ReturnMessage = o.ReturnMessage
	}
	if o.Mode != "" {
		base.Mode = o.Mode
	}
	return base
}

// ParseBotSettingsChange reads a change of one bot's settings, as the admin
// API's PUT takes it: a JSON object naming some of the settings (enabled,
// checkInterval, returnMessage, mode). A setting given as null or "" is
// cleared (the bot falls back to PRESENCE_BOTS_FILE, then the environment);
// the others are set. The result is what PutBotSettings takes. Errors name
// the offending field and, for an unknown one, the allowed ones.
func ParseBotSettingsChange(r io.Reader) (set store.BotSettings, clear []string, err error) {
	var fields map[string]json.RawMessage
	if err := json.NewDecoder(r).Decode(&fields); err != nil {
		return store.BotSettings{}, nil, fmt.Errorf("body must be a JSON object with %s: %w", allowedBotSettings, err)
	}
	for name, raw := range fields {
		field, ok := botSetting(&set, name)
		if !ok {
			return store.BotSettings{}, nil, fmt.Errorf("unknown field %q (want %s)", name, allowedBotSettings)
		}
		if string(raw) == "null" || string(raw) == `""` {
			clear = append(clear, name)
			continue
		}
		if err := json.Unmarshal(raw, field.Addr().Interface()); err != nil {
			return store.BotSettings{}, nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return set, clear, nil
}
