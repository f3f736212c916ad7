// Package status renders the operator's status page, served at / on the
// admin listener: live sessions and their presence, hand-over and
// connections; the last hour in charts; recent notifications and how their
// delivery went; each bot's settings, editable; the effective configuration.
// It is server-rendered HTML. A small script from the binary (Assets,
// /assets/status.js) fetches the page again every 2 s by default (?refresh=N
// changes it, ?refresh=0 stops it) and patches the live sections in place, so
// an open section or a half-edited form stays as it is; without JavaScript
// the page reloads itself instead, and only saving settings needs the script.
//
// When ADMIN_TOKEN is set the page shows live session ids, so it asks for the
// token like /v1/ does: "Authorization: Bearer TOKEN", or HTTP Basic
// authentication with the token as the password (any user name) so that a
// browser can open it. Without ADMIN_TOKEN the page is open: keep ADMIN_ADDR
// on loopback or a private network.
package status

import (
	"cmp"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"maps"
	"math"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/presence-sidecar/presence-sidecar/internal/admin"
	"github.com/presence-sidecar/presence-sidecar/internal/config"
	"github.com/presence-sidecar/presence-sidecar/internal/history"
	"github.com/presence-sidecar/presence-sidecar/presence"
	"github.com/presence-sidecar/presence-sidecar/store"
)

//go:embed page.html
var pageHTML string

// Presence is what the page reads of presence (admin.Presence has it).
type Presence interface {
	Sessions() []presence.View
	Stats() presence.Stats
	BotSettings(botID string) presence.Settings
	BotIDs() []string
}

// Outbox is what the page reads of the notifications (admin.Outbox has it).
type Outbox interface {
	Pending(limit int) ([]store.Notification, int, error)
	Recent(limit int) ([]store.Notification, error)
	DeadLetters() ([]store.Notification, error)
}

// Options are the page's sources. Presence and Outbox are nil when presence
// monitoring is off.
type Options struct {
	Config   config.Config
	Presence Presence
	Outbox   Outbox
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Refresh is the default reload period (default 2s).
	Refresh time.Duration
	// MaxSessions and MaxNotifications bound the tables (defaults 200 and 25).
	MaxSessions      int
	MaxNotifications int
	// History is the last hour for the charts (history.Recorder.Last); nil:
	// no charts.
	History func() []history.Minute
}

// New builds the page handler from o.
func New(o Options) http.Handler {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Refresh <= 0 {
		o.Refresh = 2 * time.Second
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 200
	}
	if o.MaxNotifications <= 0 {
		o.MaxNotifications = 25
	}
	return &page{o: o, tpl: template.Must(template.New("status").Funcs(funcs).Parse(pageHTML)), started: o.Now()}
}

type page struct {
	o       Options
	tpl     *template.Template
	started time.Time
}

var funcs = template.FuncMap{
	"stamp": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Local().Format("15:04:05")
	},
	"full": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Format(time.RFC3339Nano)
	},
	"pathEscape": url.PathEscape,
}

func (p *page) authorized(r *http.Request) bool {
	tok := p.o.Config.AdminToken
	if tok == "" {
		return true
	}
	return admin.HasToken(r, tok)
}

func (p *page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", csp)
	if !p.authorized(r) {
		h.Set("WWW-Authenticate", `Basic realm="presence-sidecar status (password: ADMIN_TOKEN)", charset="UTF-8"`)
		http.Error(w, "the status page needs ADMIN_TOKEN: Authorization: Bearer TOKEN, or Basic authentication with the token as the password", http.StatusUnauthorized)
		return
	}
	refresh := p.o.Refresh
	if v := r.URL.Query().Get("refresh"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= 3600 {
			refresh = time.Duration(n) * time.Second
		}
	}
	d := p.data(refresh)
	h.Set("Content-Type", "text/html; charset=utf-8")
	if r.Method == http.MethodHead {
		return
	}
	if err := p.tpl.Execute(w, d); err != nil {
		// Headers are gone; the page is cut short, which the reader sees.
		fmt.Fprintf(w, "\n<!-- template error: %s -->\n", template.HTMLEscapeString(err.Error()))
	}
}

// csp lets the page run only its own script (Assets) and fetch only from
// the admin listener: itself, and /v1/ to save settings.
const csp = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; frame-ancestors 'none'"

// data is everything the template shows.
type data struct {
	Now        time.Time
	Since      time.Time
	Refresh    int // seconds; 0: no reload
	PresenceOn bool
	Stats      presence.Stats
	Pending    int
	DeadCount  int

	Sessions      []sessionRow
	MoreSessions  int
	PendingNotes  []noteRow
	RecentNotes   []noteRow
	DeadNotes     []noteRow
	Bots          []botRow
	CanEdit       bool // ADMIN_TOKEN is set: the /v1/ API takes changes
	AllowAny      bool // PRESENCE_ALLOW_ANY_INTERVAL: no 1–10 minute range
	Charts        []chart
	Settings      []settingRow
	Errors        []string
	Default       presence.Settings
	DefaultReturn string
	Probe         string // "every 25s, answer within 20s" or "off"
	Redis         string // cluster mode: REDIS_URL, redacted; "" in the embedded mode
	HandoffURL    string // redacted
	Detect        string
}

type sessionRow struct {
	ID, Bot      string
	Absent       bool
	HandedOver   bool
	Connections  int
	LastSeen     time.Time
	LastSeenAgo  string
	ReturnedAt   time.Time
	ReturnedAgo  string // set while present after a return
	AbsentSince  time.Time
	AbsentFor    string
	Reason       string
	Episode      uint64
	DeadlineIn   string // "absent in 4s unless seen" while a deadline is armed
	Mode         string
	Interval     string
	Monitored    bool
	ExpireQueued bool
	Replicas     string // cluster mode: "replica-a ×1, replica-b ×2"
}

type noteRow struct {
	ID, Kind, Route, Session, Bot string
	Episode                       uint64
	Outcome                       string // delivered | dead-lettered | pending | retrying
	Class                         string // css class
	Attempts                      int
	Status                        int
	Error                         string
	Created, Done                 time.Time
	Latency                       string
	Next                          string
	Text, Reason                  string
}

type botRow struct {
	ID        string
	Anchor    string // for element ids: the id in hex, stable across updates
	Settings  presence.Settings
	Interval  string // the interval as a duration, for the script
	Minutes   string // the interval in minutes, as the form shows it
	OwnReturn string // the bot's own return message; "" when it is the default's
}

type settingRow struct {
	Name, Value, Desc string
	Default           bool
}

func (p *page) data(refresh time.Duration) data {
	now := p.o.Now()
	c := p.o.Config
	d := data{Now: now, Since: p.started, Refresh: int(refresh / time.Second), PresenceOn: p.o.Presence != nil,
		CanEdit: c.AdminToken != "", AllowAny: c.PresenceAllowAny}
	if p.o.History != nil {
		d.Charts = charts(p.o.History())
	}
	d.Settings = settings(c)
	d.Probe = "off"
	if c.ProbeInterval > 0 {
		d.Probe = "every " + c.ProbeInterval.String() + ", answer within " + c.ProbeTimeout.String()
	}
	d.HandoffURL = config.RedactURL(c.HandoffURL)
	if c.RedisURL != "" {
		d.Redis = config.RedactURL(c.RedisURL)
	}
	d.Detect = c.HandoffDetect
	if p.o.Presence == nil {
		return d
	}
	d.Stats = p.o.Presence.Stats()
	d.Default = p.o.Presence.BotSettings("")
	d.DefaultReturn = d.Default.ReturnText()

	views := p.o.Presence.Sessions()
	// The cards count the listed sessions: the same as Stats in the embedded
	// mode, and in cluster mode the cluster's (Redis's) rather than this
	// replica's share.
	d.Stats.Sessions, d.Stats.Present, d.Stats.Absent, d.Stats.HandedOver, d.Stats.Connections = len(views), 0, 0, 0, 0
	for _, v := range views {
		if v.State == store.Absent {
			d.Stats.Absent++
		} else {
			d.Stats.Present++
		}
		if v.HandedOver {
			d.Stats.HandedOver++
		}
		d.Stats.Connections += v.Connections
	}
	// Hand-overs first (what notifications are about), then the most recently seen.
	slices.SortStableFunc(views, func(a, b presence.View) int {
		if a.HandedOver != b.HandedOver {
			if a.HandedOver {
				return -1
			}
			return 1
		}
		return b.LastSeenAt.Compare(a.LastSeenAt)
	})
	bots := map[string]bool{}
	for i, v := range views {
		if v.BotID != "" {
			bots[v.BotID] = true
		}
		if i >= p.o.MaxSessions {
			d.MoreSessions++
			continue
		}
		var reps []string
		for _, r := range slices.Sorted(maps.Keys(v.Replicas)) {
			reps = append(reps, r+" ×"+strconv.FormatInt(v.Replicas[r], 10))
		}
		row := sessionRow{
			Replicas: strings.Join(reps, ", "),
			ID:       v.ID, Bot: v.BotID, Absent: v.State == store.Absent, HandedOver: v.HandedOver,
			Connections: v.Connections, LastSeen: v.LastSeenAt, Reason: v.Reason, Episode: v.Episode,
			Mode: string(cmp.Or(v.Settings.Mode, presence.ModeConnection)), Interval: v.Settings.CheckInterval.String(),
			Monitored: v.Settings.Enabled, ExpireQueued: v.ExpireSent,
		}
		if !v.LastSeenAt.IsZero() {
			row.LastSeenAgo = ago(now.Sub(v.LastSeenAt))
		}
		if !row.Absent && !v.ReturnedAt.IsZero() {
			row.ReturnedAt, row.ReturnedAgo = v.ReturnedAt, ago(now.Sub(v.ReturnedAt))
		}
		if row.Absent {
			row.AbsentSince = v.AbsentAt
			if !v.AbsentAt.IsZero() {
				row.AbsentFor = ago(now.Sub(v.AbsentAt))
			}
		} else if !v.Deadline.IsZero() {
			row.DeadlineIn = "absent in " + short(v.Deadline.Sub(now)) + " unless seen"
		}
		d.Sessions = append(d.Sessions, row)
	}

	if p.o.Outbox != nil {
		if pend, total, err := p.o.Outbox.Pending(p.o.MaxNotifications); err != nil {
			d.Errors = append(d.Errors, "outbox: "+err.Error())
		} else {
			d.Pending = total
			for _, n := range pend {
				d.PendingNotes = append(d.PendingNotes, p.note(n, now))
			}
		}
		if rec, err := p.o.Outbox.Recent(p.o.MaxNotifications); err != nil {
			d.Errors = append(d.Errors, "recent notifications: "+err.Error())
		} else {
			for _, n := range rec {
				d.RecentNotes = append(d.RecentNotes, p.note(n, now))
			}
		}
		if dead, err := p.o.Outbox.DeadLetters(); err != nil {
			d.Errors = append(d.Errors, "dead letters: "+err.Error())
		} else {
			d.DeadCount = len(dead)
			// Newest first, like the recent list.
			for i := len(dead) - 1; i >= 0 && len(d.DeadNotes) < p.o.MaxNotifications; i-- {
				d.DeadNotes = append(d.DeadNotes, p.note(dead[i], now))
			}
		}
	}
	for _, id := range p.o.Presence.BotIDs() {
		bots[id] = true
	}
	for _, id := range slices.Sorted(maps.Keys(bots)) {
		s := p.o.Presence.BotSettings(id)
		own := s.ReturnMessage
		if own == d.Default.ReturnMessage {
			own = "" // inherited: blank, the placeholder shows it
		}
		d.Bots = append(d.Bots, botRow{ID: id, Anchor: hex.EncodeToString([]byte(id)), Settings: s,
			Interval: s.CheckInterval.String(), Minutes: strconv.FormatFloat(math.Round(s.CheckInterval.Minutes()*1000)/1000, 'f', -1, 64),
			OwnReturn: own})
	}
	return d
}

func (p *page) note(n store.Notification, now time.Time) noteRow {
	r := noteRow{
		ID: n.ID, Kind: string(n.Kind), Session: n.SessionID, Bot: n.BotID, Episode: n.Episode,
		Attempts: n.Attempts, Status: n.LastStatus, Error: n.LastError, Created: n.CreatedAt,
		Text: n.Text, Reason: n.Reason,
	}
	switch n.Kind {
	case store.KindOffline:
		r.Route = p.o.Config.HandoffExpirePath
	case store.KindOnline:
		r.Route = p.o.Config.HandoffMessagePath
	}
	switch {
	case !n.DeliveredAt.IsZero():
		r.Outcome, r.Class, r.Done = "delivered", "ok", n.DeliveredAt
		if !n.CreatedAt.IsZero() {
			r.Latency = short(n.DeliveredAt.Sub(n.CreatedAt))
		}
	case !n.DeadAt.IsZero():
		r.Outcome, r.Class, r.Done = "dead-lettered", "bad", n.DeadAt
	case n.Attempts > 0:
		r.Outcome, r.Class = "retrying", "warn"
		if !n.NextAttemptAt.IsZero() {
			r.Next = "next attempt in " + short(n.NextAttemptAt.Sub(now))
		}
	default:
		r.Outcome, r.Class = "pending", "warn"
	}
	return r
}

// ago is a short "3s ago".
func ago(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return short(d) + " ago"
}

// short rounds a duration for reading: 850ms, 4s, 1m20s, 2h5m.
func short(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		s := d.Round(time.Second).String() // 2m0s, 1m20s
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		return s
	default:
		s := strings.TrimSuffix(d.Round(time.Minute).String(), "0s") // 2h5m, 2h0m
		if strings.HasSuffix(s, "h0m") {
			s = strings.TrimSuffix(s, "0m")
		}
		return s
	}
}

// settings lists every variable with its effective value; secrets are
// shown only as set or not set, and passwords in URLs are hidden.
func settings(c config.Config) []settingRow {
	v := reflect.ValueOf(c)
	t := v.Type()
	desc := map[string]config.Var{}
	for _, x := range config.Vars() {
		desc[x.Name] = x
	}
	var out []settingRow
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("env"), ",")
		if name == "" {
			continue
		}
		var val string
		switch f := v.Field(i).Interface().(type) {
		case time.Duration:
			val = f.String()
		default:
			val = fmt.Sprint(f)
		}
		row := settingRow{Name: name, Desc: desc[name].Desc}
		row.Default = val == desc[name].Default || (desc[name].Default != "" && sameDuration(val, desc[name].Default))
		switch {
		case config.Secret(name):
			row.Value = "(not set)"
			if val != "" {
				row.Value = "(set, hidden)"
			}
		case strings.HasSuffix(name, "_URL"):
			row.Value = config.RedactURL(val)
		default:
			row.Value = val
		}
		if row.Value == "" {
			row.Value = "(not set)"
		}
		if name == "PRESENCE_RETURN_MESSAGE" && strings.TrimSpace(val) == "" {
			row.Value = "(not set: " + presence.DefaultReturnMessage + ")"
		}
		out = append(out, row)
	}
	return out
}

func sameDuration(a, b string) bool {
	x, err1 := time.ParseDuration(a)
	y, err2 := time.ParseDuration(b)
	return err1 == nil && err2 == nil && x == y
}

//go:embed assets
var assets embed.FS

// Assets serves the page's script under /assets/: code only, no data, so
// it needs no token.
func Assets() http.Handler {
	files := http.FileServerFS(assets)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-cache") // revalidated: a new binary's script is used at once
		files.ServeHTTP(w, r)
	})
}
