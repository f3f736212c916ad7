// Package redisstate is the state of cluster mode in Redis: several sidecar
// replicas share one truth in Redis (a single instance, a Redis Cluster, or
// a primary watched by Sentinel), and every decision is made inside Redis by
// a Lua script that checks and changes a session's state atomically, with
// Redis's own clock (docs/ARCHITECTURE.md, "Cluster mode").
//
// It is the bottom layer both stages of cluster mode use: the presence
// engine (presence/cluster) states connections and sweeps deadlines through
// it, the deliverer (handoff) leases and acknowledges queue heads.
//
// State is the typed face of those scripts (lua/*.lua, each prefixed with
// lua/prelude.lua). Key layout, for prefix P and shard N (a hash of the
// session id; every key of a shard shares the hash tag {N}, so each script
// stays in one Cluster slot):
//
//	P{N}:s:SID       hash   one session: state, episode, hand-over, deadline, connections per replica
//	P{N}:due         zset   SID → deadline (ms)
//	P{N}:r:REPLICA   set    sessions of the shard with connections on REPLICA
//	P{N}:q:SID       list   the session's notifications still to deliver, oldest first
//	P{N}:ready       zset   SID → when its queue's head is due (ms)
//	P{N}:lease:SID   string the deliverer leasing the head: OWNER/TOKEN, with a TTL
//	P{N}:held        hash   SID → owner of the last lease of its head not yet acked (takeovers)
//	P{N}:fence       int    fencing tokens of the shard's leases
//	P{N}:depth       int    notifications queued in the shard's queues (the outbox depth)
//	P{N}:dead        list   dead letters; P{N}:deadep hash: episodes whose /expire died
//	P{N}:recent      list   the last delivered or dead notifications
//	P{N}:tl:SID      list   the session's timeline, newest first, capped (timeline.go)
//
// Outside the shards: P + "{registry}:replicas" and P + "{registry}:hosts"
// (registry.go), and P + "bots".
package redisstate

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/presence-sidecar/presence-sidecar/store"
)

// CallTimeout bounds one call to Redis (a script, a sweep of the shards) by
// either stage: a Redis that hangs then shows as an error, the caller keeps
// what it must say and retries, instead of waiting forever.
const CallTimeout = 2 * time.Second

// Shards is how many hash tags the sessions are spread over: enough for a
// Redis Cluster's masters to share the load, few enough that a sweep of
// every shard stays cheap.
const Shards = 64

//go:embed lua/*.lua
var luaFiles embed.FS

// luaScript is a script and the name Options.Observe reports its runs by.
type luaScript struct {
	name string
	lua  *rueidis.Lua
}

func script(name string) luaScript {
	prelude, err := luaFiles.ReadFile("lua/prelude.lua")
	if err != nil {
		panic(err)
	}
	body, err := luaFiles.ReadFile("lua/" + name + ".lua")
	if err != nil {
		panic(err)
	}
	return luaScript{name: name, lua: rueidis.NewLuaScript(string(prelude) + "\n" + string(body))}
}

var (
	connsScript    = script("conns")
	activityScript = script("activity")
	handoffScript  = script("handoff")
	fireScript     = script("fire")
	reapScript     = script("reap")
	claimScript    = script("claim")
	ackScript      = script("ack")
	replayScript   = script("replay")
)

// Options configure a State.
type Options struct {
	Prefix      string        // REDIS_KEY_PREFIX, e.g. "presence-sidecar:"
	ForgetAfter time.Duration // a session without connections is dropped this long after it was last written
	DeadLetters int           // dead letters kept per shard (default 1000)
	Recent      int           // delivered or dead notifications kept per shard for operators (default 50)

	// Observe, if set, is called after every script run and every other
	// round trip to Redis, with the script's name ("conns", "fire", "claim",
	// "ack", "renew"...) or the call's ("session", "scan", "depth"...), how
	// long it took and its error (nil for success, a nil reply included):
	// the caller's metrics and traces of Redis. It must not block.
	Observe func(call string, took time.Duration, err error)
	// Host is written beside this replica's id in the registry (Replicas),
	// so operators can tell which pod a short replica id is.
	Host string
}

// State runs the scripts. It is safe for concurrent use.
type State struct {
	c      rueidis.Client
	o      Options
	closer rueidis.Client // Dial's client, closed by Close; nil for New's
}

// New returns a State over c.
func New(c rueidis.Client, o Options) *State {
	if o.ForgetAfter <= 0 {
		o.ForgetAfter = 24 * time.Hour
	}
	if o.DeadLetters <= 0 {
		o.DeadLetters = 1000
	}
	if o.Recent <= 0 {
		o.Recent = 50
	}
	return &State{c: c, o: o}
}

// ShardOf is the shard of a session id.
func ShardOf(sid string) int {
	h := fnv.New32a()
	h.Write([]byte(sid))
	return int(h.Sum32() % Shards)
}

// shardPrefix is the prefix of every key of shard n: "P{n}:".
func (s *State) shardPrefix(n int) string { return s.o.Prefix + "{" + strconv.Itoa(n) + "}:" }

func (s *State) sessionKey(sid string) (prefix, key string) {
	p := s.shardPrefix(ShardOf(sid))
	return p, p + "s:" + sid
}

func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Mode and interval of a session, as the replica that reports an event
// resolved them from the bot's settings.
type Mode struct {
	Activity bool // activity mode; else connection mode
	Interval time.Duration
}

func (m Mode) name() string {
	if m.Activity {
		return "activity"
	}
	return "connection"
}

// Sign is what the session's state says after an open or an activity.
type Sign struct {
	Returned bool   // it was absent and is present again
	Episode  uint64 // the session's latest absence episode
	Queued   bool   // a return message was queued
}

func sign(v []int64, err error) (Sign, error) {
	if err != nil {
		return Sign{}, err
	}
	if len(v) != 3 {
		return Sign{}, fmt.Errorf("redisstate: unexpected script reply %v", v)
	}
	return Sign{Returned: v[0] == 1, Episode: uint64(v[1]), Queued: v[2] == 1}, nil
}

// Event is what the replica knows of the session beyond its id.
type Event struct {
	Bot         string
	Mode        Mode
	HandedOver  bool   // the default hand-over state of a new session (HANDOFF_DETECT=always)
	Muted       bool   // presence is off for the bot: absences are decided, nothing is notified
	Opened      bool   // Conns: a connection opened since the last count, even if the count did not grow
	ReturnText  string // the bot's return message, queued if the session returns
	TraceParent string
}

// Conns states that replica holds count live connections of session sid
// (an absolute count: retrying it, or replaying it after Redis was away,
// is harmless). A count above the last one stated is a connection that
// opened: presence in connection mode, and a return if the session was
// absent. It returns the sign and the session's connections on all replicas.
func (s *State) Conns(ctx context.Context, sid, replica string, count int, e Event) (Sign, int64, error) {
	p, key := s.sessionKey(sid)
	v, err := s.exec(ctx, connsScript, []string{key},
		[]string{p, sid, replica, strconv.Itoa(count), e.Bot, e.Mode.name(), ms(e.Mode.Interval), flag(e.HandedOver),
			e.ReturnText, e.TraceParent, ms(s.o.ForgetAfter), flag(e.Muted), flag(e.Opened)}).AsIntSlice()
	if err != nil {
		return Sign{}, 0, err
	}
	if len(v) != 4 {
		return Sign{}, 0, fmt.Errorf("redisstate: unexpected script reply %v", v)
	}
	sg, _ := sign(v[:3], nil)
	return sg, v[3], nil
}

// Activity records a sign of presence that is not a connection: an HTTP
// request of the session, or a client message in activity mode.
func (s *State) Activity(ctx context.Context, sid string, e Event) (Sign, error) {
	p, key := s.sessionKey(sid)
	return sign(s.exec(ctx, activityScript, []string{key},
		[]string{p, sid, e.Bot, e.Mode.name(), ms(e.Mode.Interval), flag(e.HandedOver), e.ReturnText, e.TraceParent,
			ms(s.o.ForgetAfter), flag(e.Muted)}).AsIntSlice())
}

// Handoff starts or ends the session's hand-over to a human; it reports
// whether that changed anything.
func (s *State) Handoff(ctx context.Context, sid, bot string, on bool, traceparent string) (bool, error) {
	p, key := s.sessionKey(sid)
	v, err := s.exec(ctx, handoffScript, []string{key}, []string{p, sid, flag(on), bot, ms(s.o.ForgetAfter), traceparent}).AsInt64()
	return v == 1, err
}

// FireBatch is the limit a sweeper should give Fire: a script holds Redis
// while it runs, and a decision that queues its /expire takes about 20 µs
// of Redis's time (bench/clusterstate), so 24 of them keep every other
// client's wait behind one run under a millisecond, even in a burst. A full
// batch means more may be due: the sweeper calls again.
const FireBatch = 24

// Decision is one absence decided by Fire.
type Decision struct {
	SessionID string
	Episode   uint64
	Reason    string // disconnected or inactive
	Queued    bool   // its /expire was queued (the session is handed over)
	// Due is the deadline that fired and At when the sweep decided it, both
	// by Redis's clock: At - Due is the decision's lag, how late the sweep
	// was.
	Due, At time.Time
}

// Fire decides up to limit of shard's sessions whose deadline is due.
func (s *State) Fire(ctx context.Context, shard, limit int) ([]Decision, error) {
	p := s.shardPrefix(shard)
	v, err := s.exec(ctx, fireScript, []string{p + "due"}, []string{p, strconv.Itoa(limit), ms(s.o.ForgetAfter)}).ToArray()
	if err != nil {
		return nil, err
	}
	const fields = 6 // per decision, as fire.lua returns them
	out := make([]Decision, 0, len(v)/fields)
	for i := 0; i+fields-1 < len(v); i += fields {
		sid, _ := v[i].ToString()
		ep, _ := v[i+1].AsInt64()
		reason, _ := v[i+2].ToString()
		queued, _ := v[i+3].AsInt64()
		due, _ := v[i+4].AsInt64()
		at, _ := v[i+5].AsInt64()
		out = append(out, Decision{SessionID: sid, Episode: uint64(ep), Reason: reason, Queued: queued == 1,
			Due: msTime(due), At: msTime(at)})
	}
	return out, nil
}

// reapBatch bounds one reap script run: some 10 µs of Redis's time a
// session (bench/clusterstate), so about a third of a millisecond a run.
const reapBatch = 32

// Reap removes a dead replica's connections from shard's sessions; those
// left without connections start their interval at lapse. It runs the
// script in batches (reapBatch) until the shard holds none of the replica's.
func (s *State) Reap(ctx context.Context, shard int, replica string, lapse time.Time) (int64, error) {
	p := s.shardPrefix(shard)
	var total int64
	for {
		n, err := s.exec(ctx, reapScript, []string{p + "r:" + replica},
			[]string{p, replica, strconv.FormatInt(lapse.UnixMilli(), 10), ms(s.o.ForgetAfter), strconv.Itoa(reapBatch)}).AsInt64()
		total += n
		if err != nil || n < reapBatch {
			return total, err
		}
	}
}

// Note is a notification as the scripts queue it (times in Unix ms), plus
// the delivery bookkeeping a deliverer writes back on a retry.
type Note struct {
	ID        string `json:"id"`
	Kind      string `json:"kind"`
	SessionID string `json:"sid"`
	BotID     string `json:"bot"`
	Episode   uint64 `json:"ep"`
	Reason    string `json:"reason,omitempty"`
	Text      string `json:"text,omitempty"`
	LastSeen  int64  `json:"seen,omitempty"`
	Since     int64  `json:"since,omitempty"`
	At        int64  `json:"at"` // when the transition was decided
	Trace     string `json:"tp,omitempty"`

	Attempts   int    `json:"attempts,omitempty"`
	LastError  string `json:"err,omitempty"`
	LastStatus int    `json:"status,omitempty"`
	Replayed   int64  `json:"replayed,omitempty"` // when Replay put it back: its retry horizon starts again here
}

// Lease is a claimed queue head: the deliverer owns it until it acks or the
// lease's TTL passes.
type Lease struct {
	Shard       int
	Token       string // OWNER/TOKEN, the fencing value Ack presents
	Note        Note
	DeadEpisode bool // a return message whose episode's /expire was dead-lettered
	// TakenOver: the head was last leased by another owner, whose lease
	// lapsed without an ack: a dead or stalled replica's work, now this
	// deliverer's (docs/ARCHITECTURE.md, "Outbox takeover without
	// reordering"). It may have been sent already: at least once.
	TakenOver bool
}

// Claim leases up to limit due queue heads of shard for owner.
func (s *State) Claim(ctx context.Context, shard int, owner string, lease time.Duration, limit int) ([]Lease, error) {
	p := s.shardPrefix(shard)
	v, err := s.exec(ctx, claimScript, []string{p + "ready"}, []string{p, owner, ms(lease), strconv.Itoa(limit)}).ToArray()
	if err != nil {
		return nil, err
	}
	const fields = 5 // per lease, as claim.lua returns them
	out := make([]Lease, 0, len(v)/fields)
	for i := 0; i+fields-1 < len(v); i += fields {
		token, _ := v[i+1].AsInt64()
		head, _ := v[i+2].ToString()
		dead, _ := v[i+3].AsInt64()
		taken, _ := v[i+4].AsInt64()
		l := Lease{Shard: shard, Token: owner + "/" + strconv.FormatInt(token, 10), DeadEpisode: dead == 1, TakenOver: taken == 1}
		if err := json.Unmarshal([]byte(head), &l.Note); err != nil {
			return out, fmt.Errorf("redisstate: a queued notification does not decode: %w", err)
		}
		out = append(out, l)
	}
	return out, nil
}

// DeadExpire is the webhook id of the dead-lettered /expire of l's episode,
// for a lease flagged DeadEpisode: the deliverer names it in the return
// message's dead letter, as the embedded deliverer does.
func (s *State) DeadExpire(ctx context.Context, l Lease) (string, error) {
	p := s.shardPrefix(l.Shard)
	return s.do(ctx, "deadep", s.c.B().Hget().Key(p+"deadep").
		Field(l.Note.SessionID+"\n"+strconv.FormatUint(l.Note.Episode, 10)).Build()).ToString()
}

// Outcome of a delivery attempt, as Ack records it.
type Outcome string

const (
	Delivered Outcome = "delivered" // removed from the queue
	Retry     Outcome = "retry"     // the head stays, due again at next
	Dead      Outcome = "dead"      // moved to the dead letters
)

// Ack records what became of l's head (n as it is now, with its attempts);
// false means the lease was no longer l's (it lapsed and another deliverer
// may own the head now): nothing was changed.
func (s *State) Ack(ctx context.Context, l Lease, outcome Outcome, n Note, next time.Time) (bool, error) {
	p := s.shardPrefix(l.Shard)
	head, err := json.Marshal(n)
	if err != nil {
		return false, err
	}
	v, err := s.exec(ctx, ackScript, []string{p + "lease:" + n.SessionID},
		[]string{p, n.SessionID, l.Token, string(outcome), string(head), strconv.FormatInt(next.UnixMilli(), 10),
			strconv.Itoa(s.o.DeadLetters), strconv.Itoa(s.o.Recent)}).AsInt64()
	return v == 1, err
}

// SessionState is one session as Redis holds it, for the admin API and the
// status page: the cluster's view, with the replicas holding its
// connections.
type SessionState struct {
	ID         string           `json:"id"`
	BotID      string           `json:"botId,omitempty"`
	Absent     bool             `json:"absent"`
	HandedOver bool             `json:"handedOver"`
	Episode    uint64           `json:"episode"`
	ExpireSent bool             `json:"expireSent"`
	Conns      int64            `json:"conns"`
	Replicas   map[string]int64 `json:"replicas,omitempty"` // replica → its live connections
	LastSeenAt time.Time        `json:"lastSeenAt"`
	AbsentAt   time.Time        `json:"absentAt,omitzero"` // when the current absence was decided
	Deadline   time.Time        `json:"deadline,omitzero"`
	Reason     string           `json:"reason,omitempty"`
	ReturnedAt time.Time        `json:"returnedAt,omitzero"` // the last return from an absence
}

// Session reads sid's state; false when Redis has none.
func (s *State) Session(ctx context.Context, sid string) (SessionState, bool, error) {
	_, key := s.sessionKey(sid)
	m, err := s.do(ctx, "session", s.c.B().Hgetall().Key(key).Build()).AsStrMap()
	if err != nil || len(m) == 0 {
		return SessionState{}, false, err
	}
	return parseSession(sid, m), true, nil
}

// parseSession is session sid from the fields of its hash (conns.lua and
// the prelude's create write them).
func parseSession(sid string, m map[string]string) SessionState {
	i := func(k string) int64 { v, _ := strconv.ParseInt(m[k], 10, 64); return v }
	t := func(k string) time.Time { return msTime(i(k)) }
	out := SessionState{ID: sid, BotID: m["bot"], Absent: m["st"] == "a", HandedOver: m["ho"] == "1",
		Episode: uint64(i("ep")), ExpireSent: m["xs"] == "1", Conns: i("n"), LastSeenAt: t("seen"), AbsentAt: t("ab"),
		Deadline: t("dl"), Reason: m["rs"], ReturnedAt: t("rt")}
	for k, v := range m {
		if r, ok := strings.CutPrefix(k, "c:"); ok {
			if out.Replicas == nil {
				out.Replicas = map[string]int64{}
			}
			out.Replicas[r], _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return out
}

// msTime is Unix ms as a UTC time; 0 (or below, never written) is the zero
// time.
func msTime(v int64) time.Time {
	if v > 0 {
		return time.UnixMilli(v).UTC()
	}
	return time.Time{}
}

// The per-bot settings changed at run time live in one hash, P + "bots"
// (bot id → store.BotSettings as JSON), shared by every replica.
func (s *State) botsKey() string { return s.o.Prefix + "bots" }

// PutBot stores a bot's run-time settings.
func (s *State) PutBot(ctx context.Context, botID string, b store.BotSettings) error {
	v, err := json.Marshal(b)
	if err != nil {
		return err
	}
	return s.do(ctx, "putbot", s.c.B().Hset().Key(s.botsKey()).FieldValue().FieldValue(botID, string(v)).Build()).Error()
}

// Bots reads every bot's run-time settings.
func (s *State) Bots(ctx context.Context) (map[string]store.BotSettings, error) {
	m, err := s.do(ctx, "bots", s.c.B().Hgetall().Key(s.botsKey()).Build()).AsStrMap()
	if err != nil {
		return nil, err
	}
	out := make(map[string]store.BotSettings, len(m))
	for id, v := range m {
		var b store.BotSettings
		if err := json.Unmarshal([]byte(v), &b); err != nil {
			return nil, fmt.Errorf("redisstate: settings of bot %q do not decode: %w", id, err)
		}
		out[id] = b
	}
	return out, nil
}
