package presence

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/store"
)

// Each bot's settings at run time. Three layers, field by field: the
// environment (Options.Defaults), PRESENCE_BOTS_FILE (Options.Bots), and the
// changes made through the admin API (Put, kept in a BotStore), which win.
// The file's and the API's are kept apart, so an edit of the file still
// shows for every field the API did not set.

// BotStore keeps the run-time changes of bots' settings: the embedded
// store, or in cluster mode Redis, shared by every replica.
type BotStore interface {
	Bots() (map[string]store.BotSettings, error)
	PutBot(botID string, s store.BotSettings) error
}

// Bots is each bot's effective settings. It is safe for concurrent use;
// the presence engines of both modes read it on every decision.
type Bots struct {
	defaults         Settings // the environment's, for bots without their own. Read-only.
	allowAnyInterval bool     // Read-only.
	file             map[string]store.BotSettings
	saved            BotStore
	log              *zap.Logger
	// mu serialises writers of byID. Readers load byID without a lock: the
	// map is replaced on every change, never changed in place.
	mu   sync.Mutex
	byID atomic.Pointer[map[string]*botEntry]
}

type botEntry struct {
	id   string            // canonical copy, shared by sessions (interning)
	file store.BotSettings // from PRESENCE_BOTS_FILE
	api  store.BotSettings // changed through the admin API (stored); wins field by field
	set  Settings          // the effective settings: api over file over the defaults
}

// NewBots validates file (PRESENCE_BOTS_FILE's entries) against defaults.
// The changes saved holds are read by Reload.
func NewBots(defaults Settings, allowAny bool, file map[string]store.BotSettings, saved BotStore, log *zap.Logger) (*Bots, error) {
	if log == nil {
		log = zap.NewNop()
	}
	t := &Bots{defaults: defaults, allowAnyInterval: allowAny, file: file, saved: saved, log: log}
	bots := make(map[string]*botEntry, len(file))
	for id, ov := range file {
		set, err := Resolve(defaults, ov, allowAny)
		if err != nil {
			return nil, fmt.Errorf("presence: bot %q: %w", id, err)
		}
		bots[id] = &botEntry{id: id, file: ov, set: set}
	}
	t.byID.Store(&bots)
	return t, nil
}

// Reload reads the saved changes (again: in cluster mode another replica
// may have made some). A bad saved entry is logged and skipped, since
// refusing it would also lock out the admin API that can fix it. Interned
// ids of known bots are kept.
func (t *Bots) Reload() error {
	t.mu.Lock() // held across the read, so a Put meanwhile is not undone
	defer t.mu.Unlock()
	stored, err := t.saved.Bots()
	if err != nil {
		return fmt.Errorf("presence: reading bot settings: %w", err)
	}
	cur := *t.byID.Load()
	bots := make(map[string]*botEntry, len(t.file)+len(stored))
	entry := func(id string, api store.BotSettings) (*botEntry, error) {
		e := &botEntry{id: id, file: t.file[id], api: api}
		if old, ok := cur[id]; ok {
			e.id = old.id
		}
		set, err := Resolve(t.defaults, mergeOverrides(e.file, api), t.allowAnyInterval)
		e.set = set
		return e, err
	}
	for id := range t.file {
		bots[id], _ = entry(id, store.BotSettings{}) // validated by NewBots
	}
	for id, api := range stored {
		e, err := entry(id, api)
		if err != nil {
			if old, ok := cur[id]; !ok || !reflect.DeepEqual(old.api, api) { // once, not at every reload
				t.log.Warn("presence: ignoring stored bot settings", zap.String("bot", id), zap.Error(err))
			}
			continue
		}
		bots[id] = e
	}
	t.byID.Store(&bots)
	return nil
}

// settings are bot's effective settings (the defaults for an unknown or
// empty id).
func (t *Bots) settings(bot string) *Settings {
	if bot != "" {
		if b, ok := (*t.byID.Load())[bot]; ok {
			return &b.set
		}
	}
	return &t.defaults
}

// Settings returns the effective settings of botID (the defaults for an
// unknown or empty id).
func (t *Bots) Settings(botID string) Settings { return *t.settings(botID) }

// intern returns the table's copy of a known bot id, or a private copy:
// strings handed in may point into larger buffers we must not keep alive,
// and every session of a known bot shares one copy of its id.
func (t *Bots) intern(bot string) string {
	if bot == "" {
		return ""
	}
	if b, ok := (*t.byID.Load())[bot]; ok {
		return b.id
	}
	return strings.Clone(bot)
}

// Put changes a bot's settings at run time. The set fields of o are laid
// over the bot's earlier run-time changes; the fields named in clear are
// dropped from them, so the bot falls back to PRESENCE_BOTS_FILE and then
// the environment for those. The result is validated, persisted with
// BotStore.PutBot (the run-time changes only) and used for later decisions.
// Deadlines already armed keep their time. ParseBotSettingsChange reads o
// and clear from the admin API's body.
func (t *Bots) Put(botID string, o store.BotSettings, clear ...string) (Settings, error) {
	if botID == "" {
		return Settings{}, errors.New("presence: empty bot id")
	}
	if len(botID) > store.MaxIDBytes {
		return Settings{}, ErrIDTooLong
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := *t.byID.Load()
	var file, api store.BotSettings
	id := strings.Clone(botID)
	if b, ok := cur[botID]; ok {
		file, api, id = b.file, b.api, b.id
	}
	api = mergeOverrides(api, o)
	for _, name := range clear {
		field, ok := botSetting(&api, name)
		if !ok {
			return Settings{}, fmt.Errorf("bot %q: unknown setting %q", botID, name)
		}
		field.SetZero()
	}
	set, err := Resolve(t.defaults, mergeOverrides(file, api), t.allowAnyInterval)
	if err != nil {
		return Settings{}, fmt.Errorf("bot %q: %w", botID, err)
	}
	if err := t.saved.PutBot(botID, api); err != nil {
		return Settings{}, fmt.Errorf("presence: saving settings of bot %q: %w", botID, err)
	}
	next := maps.Clone(cur)
	next[botID] = &botEntry{id: id, file: file, api: api, set: set}
	t.byID.Store(&next)
	t.log.Info("presence: bot settings changed", zap.String("bot", botID),
		zap.String("mode", string(set.Mode)), zap.Duration("check_interval", set.CheckInterval), zap.Bool("enabled", set.Enabled))
	return set, nil
}

// IDs lists the bots with settings of their own (the file's and the API's),
// sorted.
func (t *Bots) IDs() []string { return slices.Sorted(maps.Keys(*t.byID.Load())) }

// BotSettings returns the effective settings of botID (the defaults for an
// unknown or empty id).
func (e *Engine) BotSettings(botID string) Settings { return e.bots.Settings(botID) }

// PutBotSettings changes a bot's settings at run time (Bots.Put).
func (e *Engine) PutBotSettings(botID string, o store.BotSettings, clear ...string) (Settings, error) {
	return e.bots.Put(botID, o, clear...)
}

// LoadBotsFile reads PRESENCE_BOTS_FILE, a JSON object mapping a bot id to
// its settings (the fields of store.BotSettings), and validates every
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
			return nil, fmt.Errorf("bot %q: %v (allowed fields: %s)", id, err, allowedBotSettings)
		}
		if _, err := Resolve(def, o, allowAny); err != nil {
			return nil, fmt.Errorf("bot %q: %w", id, err)
		}
		out[id] = o
	}
	return out, nil
}

// BotIDs lists the bots with settings of their own (file or API), sorted.
func (e *Engine) BotIDs() []string { return e.bots.IDs() }
