package presence

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/presence-sidecar/presence-sidecar/store"
)

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

type settingsJSON struct {
	Enabled       bool   `json:"enabled"`
	CheckInterval string `json:"checkInterval"`
	ReturnMessage string `json:"returnMessage"`
	Mode          Mode   `json:"mode"`
}

// MarshalJSON uses the PRESENCE_BOTS_FILE names, with the interval as a Go
// duration string ("2m0s") rather than nanoseconds.
func (s Settings) MarshalJSON() ([]byte, error) {
	return json.Marshal(settingsJSON{s.Enabled, s.CheckInterval.String(), s.ReturnMessage, s.Mode.normal()})
}

// UnmarshalJSON reads what MarshalJSON writes (no validation).
func (s *Settings) UnmarshalJSON(b []byte) error {
	var j settingsJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	var d time.Duration
	if j.CheckInterval != "" {
		var err error
		if d, err = time.ParseDuration(j.CheckInterval); err != nil {
			return fmt.Errorf("checkInterval %q is not a duration (e.g. \"2m\")", j.CheckInterval)
		}
	}
	*s = Settings{Enabled: j.Enabled, CheckInterval: d, ReturnMessage: j.ReturnMessage, Mode: j.Mode}
	return nil
}

func (m Mode) normal() Mode {
	if m == "" {
		return ModeConnection
	}
	return m
}

// ValidateSettings checks the interval range (1m–10m unless allowAny, and
// always positive) and the mode. Errors name the field, the value and what
// is allowed.
func ValidateSettings(s Settings, allowAny bool) error {
	switch {
	case s.CheckInterval <= 0:
		return fmt.Errorf("checkInterval %q must be a positive duration", s.CheckInterval)
	case !allowAny && (s.CheckInterval < MinCheckInterval || s.CheckInterval > MaxCheckInterval):
		return fmt.Errorf("checkInterval %q is outside %v–%v", s.CheckInterval, MinCheckInterval, MaxCheckInterval)
	}
	switch s.Mode {
	case "", ModeConnection, ModeActivity:
	default:
		return fmt.Errorf("mode %q is not one of %s, %s", string(s.Mode), ModeConnection, ModeActivity)
	}
	return nil
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
			return Settings{}, fmt.Errorf("checkInterval %q is not a duration (e.g. \"2m\")", o.CheckInterval)
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

// LoadBotsFile reads PRESENCE_BOTS_FILE, a JSON object mapping a bot id to
// {"enabled","checkInterval","returnMessage","mode"}, and validates every
// entry against def. An empty path means no file. Errors name the bot and
// the field; the caller adds the variable and the path.
func LoadBotsFile(path string, def Settings, allowAny bool) (map[string]store.BotSettings, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err // *fs.PathError: names the path
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("not a JSON object of bot id to settings: %w", err)
	}
	out := make(map[string]store.BotSettings, len(raw))
	// In order, so that the same file always reports the same first error.
	for _, id := range slices.Sorted(maps.Keys(raw)) {
		if strings.TrimSpace(id) == "" {
			return nil, errors.New("a bot id is empty")
		}
		var o store.BotSettings
		dec := json.NewDecoder(bytes.NewReader(raw[id]))
		dec.DisallowUnknownFields() // a misspelt field would otherwise be silently ignored
		if err := dec.Decode(&o); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				err = fmt.Errorf("%s has the wrong type (%s, want %s)", te.Field, te.Value, te.Type)
			}
			return nil, fmt.Errorf("bot %q: %v (allowed fields: enabled, checkInterval, returnMessage, mode)", id, err)
		}
		if _, err := Resolve(def, o, allowAny); err != nil {
			return nil, fmt.Errorf("bot %q: %w", id, err)
		}
		out[id] = o
	}
	return out, nil
}
