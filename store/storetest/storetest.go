// Package storetest is the conformance suite every store.Store must pass:
// the in-memory and embedded (bbolt) stores, and any shared store to come,
// run the same table, so the presence engine and the deliverer can rely on
// one behaviour.
package storetest

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/store"
)

// Open returns a new, empty store; the suite closes it.
type Open func(t *testing.T) store.Store

// RecentLimit is how many delivered/dead notifications Recent keeps.
const RecentLimit = 200

// Run runs every conformance case against stores made by open.
func Run(t *testing.T, open Open) {
	for _, c := range Cases {
		t.Run(c.Name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { _ = s.Close() })
			c.Fn(t, s)
		})
	}
}

// Case is one behaviour every store must have.
type Case struct {
	Name string
	Fn   func(t *testing.T, s store.Store)
}

// Cases is the table.
var Cases = []Case{
	{"Empty", testEmpty},
	{"CommitAssignsSeqInOrder", testCommitSeq},
	{"CommitPutForget", testCommitPutForget},
	{"CommitAtomicOnError", testCommitAtomic},
	{"CommitRefusesOverlongIDsNamingThem", testOverlongIDs},
	{"CommitRoundTripsEveryField", testRoundTrip},
	{"PendingOrderAcrossCommits", testPendingOrder},
	{"PendingAfterReturnsWhatFollowsASeq", testPendingAfter},
	{"PendingAfterMissesNoConcurrentCommit", testPendingAfterConcurrent},
	{"AttemptedPersistsFields", testAttempted},
	{"DeliveredMovesToRecent", testDelivered},
	{"DeadLetter", testDeadLetter},
	{"Replay", testReplay},
	{"RecentNewestFirstAndBounded", testRecent},
	{"SeqNeverReused", testSeqNeverReused},
	{"Bots", testBots},
	{"ReturnsCopies", testCopies},
	{"ConcurrentCommits", testConcurrent},
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)

// Note returns a filled-in notification with the given id.
func Note(id, session string) store.Notification {
	return store.Notification{
		ID: id, Kind: store.KindOffline, SessionID: session, BotID: "bot-1", Episode: 3,
		Reason: "disconnected", LastSeenAt: t0.Add(-2 * time.Minute), DetectedAt: t0,
		TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", CreatedAt: t0,
	}
}

// Sess returns a filled-in session with the given id.
func Sess(id string) store.Session {
	return store.Session{
		ID: id, BotID: "bot-1", State: store.Absent, HandedOver: true, Episode: 3, ExpireSent: true,
		Conns: 2, LastSeenAt: t0.Add(-2 * time.Minute), AbsentAt: t0, Deadline: t0.Add(time.Minute),
		Reason: "inactive", UpdatedAt: t0,
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func pending(t *testing.T, s store.Store) []store.Notification {
	t.Helper()
	p, err := s.Pending()
	must(t, err)
	return p
}

func sessions(t *testing.T, s store.Store) map[string]store.Session {
	t.Helper()
	ss, err := s.Sessions()
	must(t, err)
	out := map[string]store.Session{}
	for _, x := range ss {
		out[x.ID] = NormS(x)
	}
	return out
}

func ids(ns []store.Notification) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.ID
	}
	return out
}

func seqs(ns []store.Notification) []uint64 {
	out := make([]uint64, len(ns))
	for i, n := range ns {
		out[i] = n.Seq
	}
	return out
}

func nt(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.Round(0).UTC()
}

// NormN makes a notification comparable with reflect.DeepEqual after a trip
// through a store that serialises times (location and monotonic reading go).
func NormN(n store.Notification) store.Notification {
	n.LastSeenAt, n.OfflineSince, n.DetectedAt, n.CreatedAt = nt(n.LastSeenAt), nt(n.OfflineSince), nt(n.DetectedAt), nt(n.CreatedAt)
	n.NextAttemptAt, n.DeliveredAt, n.DeadAt, n.ReplayedAt = nt(n.NextAttemptAt), nt(n.DeliveredAt), nt(n.DeadAt), nt(n.ReplayedAt)
	return n
}

// NormS is NormN for sessions.
func NormS(s store.Session) store.Session {
	s.LastSeenAt, s.AbsentAt, s.Deadline, s.UpdatedAt = nt(s.LastSeenAt), nt(s.AbsentAt), nt(s.Deadline), nt(s.UpdatedAt)
	return s
}

func eqN(t *testing.T, what string, got, want store.Notification) {
	t.Helper()
	if g, w := NormN(got), NormN(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("%s:\n got  %+v\n want %+v", what, g, w)
	}
}

func commit(t *testing.T, s store.Store, notes ...store.Notification) []store.Notification {
	t.Helper()
	must(t, s.Commit(nil, nil, notes))
	return notes
}

func testEmpty(t *testing.T, s store.Store) {
	if ss, err := s.Sessions(); err != nil || len(ss) != 0 {
		t.Fatalf("Sessions = %v, %v", ss, err)
	}
	if p := pending(t, s); len(p) != 0 {
		t.Fatalf("Pending = %v", p)
	}
	if d, err := s.DeadLetters(); err != nil || len(d) != 0 {
		t.Fatalf("DeadLetters = %v, %v", d, err)
	}
	if r, err := s.Recent(10); err != nil || len(r) != 0 {
		t.Fatalf("Recent = %v, %v", r, err)
	}
	if b, err := s.Bots(); err != nil || len(b) != 0 {
		t.Fatalf("Bots = %v, %v", b, err)
	}
	if _, err := s.Replay("nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Replay(unknown) = %v, want ErrNotFound", err)
	}
	for name, f := range map[string]func(store.Notification) error{
		"Attempted": s.Attempted, "Delivered": s.Delivered, "DeadLetter": s.DeadLetter,
	} {
		if err := f(Note("nope", "s")); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s(unknown) = %v, want ErrNotFound", name, err)
		}
	}
}

func testCommitSeq(t *testing.T, s store.Store) {
	notes := []store.Notification{Note("a", "s1"), Note("b", "s2"), Note("c", "s1")}
	must(t, s.Commit([]store.Session{Sess("s1")}, nil, notes))
	for i := range notes {
		if notes[i].Seq == 0 || (i > 0 && notes[i].Seq <= notes[i-1].Seq) {
			t.Fatalf("Commit assigned Seqs %v: want increasing from 1 or more", seqs(notes))
		}
	}
	more := commit(t, s, Note("d", "s3"))
	if more[0].Seq <= notes[2].Seq {
		t.Fatalf("a later Commit got Seq %d, not above %d", more[0].Seq, notes[2].Seq)
	}
	p := pending(t, s)
	if !slices.Equal(ids(p), []string{"a", "b", "c", "d"}) || !slices.Equal(seqs(p), append(seqs(notes), more[0].Seq)) {
		t.Fatalf("Pending = %v %v", ids(p), seqs(p))
	}
	eqN(t, "pending[0]", p[0], notes[0])
	// A Commit without notes is fine and changes no Seq.
	must(t, s.Commit([]store.Session{Sess("s9")}, nil, nil))
	if got := len(pending(t, s)); got != 4 {
		t.Fatalf("Pending has %d entries, want 4", got)
	}
}

func testCommitPutForget(t *testing.T, s store.Store) {
	must(t, s.Commit([]store.Session{Sess("a"), Sess("b")}, nil, nil))
	b2 := Sess("b")
	b2.State, b2.Conns, b2.Deadline = store.Present, 1, time.Time{}
	// One Commit: forget a, overwrite b, add c, forget something unknown.
	must(t, s.Commit([]store.Session{b2, Sess("c")}, []string{"a", "unknown"}, nil))
	got := sessions(t, s)
	if len(got) != 2 || !reflect.DeepEqual(got["b"], NormS(b2)) || !reflect.DeepEqual(got["c"], NormS(Sess("c"))) {
		t.Fatalf("Sessions = %+v", got)
	}
	// A session both put and forgotten in one Commit is forgotten.
	must(t, s.Commit([]store.Session{Sess("d")}, []string{"d"}, nil))
	if _, ok := sessions(t, s)["d"]; ok {
		t.Fatal("put+forget of one id in one Commit: want it forgotten")
	}
}

// An id over MaxIDBytes (bbolt refuses keys over 32 KiB) is refused before
// anything is written, with a RejectedError that names the session, so that
// the caller can commit the rest without it; an id of MaxIDBytes is stored.
func testOverlongIDs(t *testing.T, s store.Store) {
	long := strings.Repeat("x", 40<<10)
	longBot := Sess("ok-session-long-bot")
	longBot.BotID = long
	for _, c := range []struct {
		name  string
		put   []store.Session
		notes []store.Notification
	}{
		{"session id", []store.Session{Sess("fine"), Sess(long)}, []store.Notification{Note("n-fine", "fine")}},
		{"bot id", []store.Session{Sess("fine"), longBot}, nil},
		{"notification's session id", []store.Session{Sess("fine")}, []store.Notification{Note("n-long", long)}},
	} {
		err := s.Commit(c.put, nil, c.notes)
		var rej *store.RejectedError
		if !errors.As(err, &rej) || len(rej.SessionIDs) != 1 || len(rej.SessionIDs[0]) > store.MaxIDBytes {
			t.Fatalf("%s: Commit = %v, want a RejectedError naming one session", c.name, err)
		}
		if len(sessions(t, s)) != 0 || len(pending(t, s)) != 0 {
			t.Fatalf("%s: a refused Commit wrote something", c.name)
		}
	}
	if err := s.PutBot(long, store.BotSettings{Mode: "activity"}); err == nil {
		t.Fatal("PutBot with a 40 KiB bot id succeeded")
	}
	edge := strings.Repeat("y", store.MaxIDBytes)
	must(t, s.Commit([]store.Session{Sess(edge)}, nil, []store.Notification{Note("n-edge", edge)}))
	if got := sessions(t, s); len(got) != 1 || got[edge].ID != edge {
		t.Fatalf("an id of MaxIDBytes was not stored: %d sessions", len(got))
	}
	must(t, s.PutBot(edge, store.BotSettings{Mode: "activity"}))
}

func testCommitAtomic(t *testing.T, s store.Store) {
	must(t, s.Commit([]store.Session{Sess("keep")}, nil, []store.Notification{Note("n1", "keep")}))
	before, beforeP := sessions(t, s), pending(t, s)

	bad := []struct {
		name   string
		put    []store.Session
		forget []string
		notes  []store.Notification
	}{
		{"note without id", []store.Session{Sess("new")}, []string{"keep"}, []store.Notification{Note("n2", "new"), Note("", "new")}},
		{"session without id", []store.Session{Sess("new"), {}}, nil, []store.Notification{Note("n2", "new")}},
		{"forget without id", []store.Session{Sess("new")}, []string{""}, []store.Notification{Note("n2", "new")}},
	}
	for _, c := range bad {
		notes := slices.Clone(c.notes)
		if err := s.Commit(c.put, c.forget, notes); err == nil {
			t.Fatalf("%s: Commit succeeded, want an error", c.name)
		}
		if !reflect.DeepEqual(sessions(t, s), before) {
			t.Fatalf("%s: a failed Commit changed the sessions: %+v", c.name, sessions(t, s))
		}
		if p := pending(t, s); !slices.Equal(ids(p), ids(beforeP)) {
			t.Fatalf("%s: a failed Commit changed the outbox: %v", c.name, ids(p))
		}
		for _, n := range notes {
			if n.Seq != 0 {
				t.Fatalf("%s: a failed Commit assigned Seq %d", c.name, n.Seq)
			}
		}
	}
	// The store still works, and no Seq was used up by the failures in a way
	// that breaks order.
	next := commit(t, s, Note("n3", "keep"))
	if next[0].Seq <= beforeP[0].Seq {
		t.Fatalf("Seq after failed Commits = %d, want > %d", next[0].Seq, beforeP[0].Seq)
	}
}

func testRoundTrip(t *testing.T, s store.Store) {
	n := Note("full", "s1")
	n.Kind, n.Text, n.OfflineSince, n.Reason = store.KindOnline, "O cliente voltou a ficar online. ✓", t0.Add(-time.Hour), ""
	n.Attempts, n.NextAttemptAt, n.LastError, n.LastStatus = 0, t0.Add(time.Second), "", 0
	notes := commit(t, s, n)
	p := pending(t, s)
	if len(p) != 1 {
		t.Fatalf("Pending = %v", ids(p))
	}
	eqN(t, "round trip", p[0], notes[0])
	must(t, s.Commit([]store.Session{Sess("s1")}, nil, nil))
	if got := sessions(t, s)["s1"]; !reflect.DeepEqual(got, NormS(Sess("s1"))) {
		t.Fatalf("session round trip:\n got  %+v\n want %+v", got, NormS(Sess("s1")))
	}
}

func testPendingOrder(t *testing.T, s store.Store) {
	var want []string
	for i := range 5 {
		batch := []store.Notification{Note(fmt.Sprintf("n%d-a", i), "s"), Note(fmt.Sprintf("n%d-b", i), "t")}
		must(t, s.Commit(nil, nil, batch))
		want = append(want, batch[0].ID, batch[1].ID)
	}
	// Removing from the middle keeps the order of the rest.
	p := pending(t, s)
	must(t, s.Delivered(p[3]))
	must(t, s.DeadLetter(p[6]))
	want = slices.Delete(want, 6, 7)
	want = slices.Delete(want, 3, 4)
	p = pending(t, s)
	if !slices.Equal(ids(p), want) || !slices.IsSorted(seqs(p)) {
		t.Fatalf("Pending = %v %v, want %v in Seq order", ids(p), seqs(p), want)
	}
}

func pendingAfter(t *testing.T, s store.Store, seq uint64) []store.Notification {
	t.Helper()
	p, err := s.PendingAfter(seq)
	must(t, err)
	return p
}

func testPendingAfter(t *testing.T, s store.Store) {
	if p := pendingAfter(t, s, 0); len(p) != 0 {
		t.Fatalf("PendingAfter(0) of an empty outbox = %v", ids(p))
	}
	notes := commit(t, s, Note("a", "s"), Note("b", "t"), Note("c", "s"), Note("d", "u"))
	a, b, c, d := notes[0], notes[1], notes[2], notes[3]
	for _, tc := range []struct {
		after uint64
		want  []string
	}{
		{0, []string{"a", "b", "c", "d"}},
		{a.Seq, []string{"b", "c", "d"}},
		{c.Seq, []string{"d"}},
		{d.Seq, nil},
		{d.Seq + 1000, nil},
		{math.MaxUint64, nil},
	} {
		if p := pendingAfter(t, s, tc.after); !slices.Equal(ids(p), tc.want) {
			t.Fatalf("PendingAfter(%d) = %v, want %v", tc.after, ids(p), tc.want)
		}
	}
	// It returns what Pending returns for the same entries, as they are now.
	eqN(t, "PendingAfter(0)[0]", pendingAfter(t, s, 0)[0], pending(t, s)[0])
	c.Attempts, c.NextAttemptAt, c.LastError, c.LastStatus = 2, t0.Add(3*time.Second), "503 Service Unavailable", 503
	must(t, s.Attempted(c))
	must(t, s.Delivered(b))
	must(t, s.DeadLetter(d))
	p := pendingAfter(t, s, a.Seq)
	if !slices.Equal(ids(p), []string{"c"}) {
		t.Fatalf("PendingAfter(%d) after Delivered(b), DeadLetter(d) = %v, want [c]", a.Seq, ids(p))
	}
	eqN(t, "attempted entry", p[0], c)
	// A seq that is no longer in the outbox still marks the place.
	if p := pendingAfter(t, s, b.Seq); !slices.Equal(ids(p), []string{"c"}) {
		t.Fatalf("PendingAfter(%d) of a delivered Seq = %v, want [c]", b.Seq, ids(p))
	}
	// A replay and a later commit follow every Seq handed out before.
	r, err := s.Replay("d")
	must(t, err)
	e := commit(t, s, Note("e", "v"))[0]
	p = pendingAfter(t, s, d.Seq)
	if !slices.Equal(ids(p), []string{"d", "e"}) || !slices.Equal(seqs(p), []uint64{r.Seq, e.Seq}) {
		t.Fatalf("PendingAfter(%d) after Replay(d) and a commit = %v %v, want [d e] [%d %d]", d.Seq, ids(p), seqs(p), r.Seq, e.Seq)
	}
	// The result is a copy.
	p[0].ID, p[0].Attempts = "changed", 99
	if q := pendingAfter(t, s, d.Seq); q[0].ID != "d" || q[0].Attempts != 0 {
		t.Fatalf("changing PendingAfter's result changed the store: %+v", q[0])
	}
}

// A reader that follows the outbox with PendingAfter from the highest Seq
// it has seen misses nothing that concurrent writers commit: Seqs become
// visible in order, which is what lets the deliverer skip reading the whole
// outbox after each Wake.
func testPendingAfterConcurrent(t *testing.T, s store.Store) {
	const writers, each = 4, 40
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				batch := []store.Notification{Note(fmt.Sprintf("w%d-%d-a", w, i), "s"), Note(fmt.Sprintf("w%d-%d-b", w, i), "s")}
				if err := s.Commit(nil, nil, batch); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	seen := map[string]bool{}
	var last uint64
	follow := func() {
		p, err := s.PendingAfter(last)
		must(t, err)
		for _, n := range p {
			if n.Seq <= last {
				t.Fatalf("PendingAfter(%d) returned Seq %d", last, n.Seq)
			}
			last, seen[n.ID] = n.Seq, true
		}
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		follow()
	}
	follow()
	all := pending(t, s)
	if len(all) != 2*writers*each {
		t.Fatalf("Pending has %d entries, want %d", len(all), 2*writers*each)
	}
	for _, n := range all {
		if !seen[n.ID] {
			t.Fatalf("%s (Seq %d) was never returned by PendingAfter while following the outbox", n.ID, n.Seq)
		}
	}
}

func testAttempted(t *testing.T, s store.Store) {
	notes := commit(t, s, Note("a", "s"), Note("b", "s"))
	n := notes[0]
	n.Attempts, n.NextAttemptAt, n.LastError, n.LastStatus = 3, t0.Add(4*time.Second), "503 Service Unavailable: busy", 503
	must(t, s.Attempted(n))
	p := pending(t, s)
	if len(p) != 2 {
		t.Fatalf("Pending = %v", ids(p))
	}
	eqN(t, "after Attempted", p[0], n)
	eqN(t, "the other entry", p[1], notes[1])

	// The outbox position belongs to the store: a caller's wrong Seq neither
	// loses the entry nor reorders it.
	n.Attempts, n.Seq = 4, 0
	must(t, s.Attempted(n))
	p = pending(t, s)
	if p[0].ID != "a" || p[0].Attempts != 4 || p[0].Seq != notes[0].Seq {
		t.Fatalf("Attempted with Seq 0: pending[0] = %+v", p[0])
	}
	// An id that is not pending is not found, even with a Seq that is.
	ghost := Note("ghost", "s")
	ghost.Seq = notes[1].Seq
	if err := s.Attempted(ghost); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Attempted(ghost) = %v, want ErrNotFound", err)
	}
	eqN(t, "entry whose Seq the ghost used", pending(t, s)[1], notes[1])
}

func testDelivered(t *testing.T, s store.Store) {
	notes := commit(t, s, Note("a", "s"), Note("b", "s"))
	d := notes[0]
	d.Attempts, d.LastStatus, d.DeliveredAt = 1, 204, t0.Add(time.Second)
	must(t, s.Delivered(d))
	if p := pending(t, s); !slices.Equal(ids(p), []string{"b"}) {
		t.Fatalf("Pending after Delivered = %v", ids(p))
	}
	r, err := s.Recent(10)
	must(t, err)
	if len(r) != 1 {
		t.Fatalf("Recent = %v", ids(r))
	}
	eqN(t, "recent[0]", r[0], d)
	if err := s.Delivered(d); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second Delivered = %v, want ErrNotFound", err)
	}
	if err := s.Attempted(d); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Attempted after Delivered = %v, want ErrNotFound", err)
	}
	// DeliveredAt is filled in when the caller leaves it zero.
	before := time.Now()
	must(t, s.Delivered(notes[1]))
	r, err = s.Recent(1)
	must(t, err)
	if r[0].ID != "b" || r[0].DeliveredAt.Before(before.Add(-time.Second)) {
		t.Fatalf("Recent(1) = %+v, want b with DeliveredAt set", r[0])
	}
	if d, err := s.DeadLetters(); err != nil || len(d) != 0 {
		t.Fatalf("DeadLetters = %v, %v", ids(d), err)
	}
}

func testDeadLetter(t *testing.T, s store.Store) {
	notes := commit(t, s, Note("a", "s"), Note("b", "s"), Note("c", "s"))
	var dead []store.Notification
	for _, i := range []int{1, 0} { // dead-letter out of Seq order: the list is by time of death
		n := notes[i]
		n.Attempts, n.LastStatus, n.LastError, n.DeadAt = 1, 400, "400 Bad Request", t0.Add(time.Duration(i)*time.Second)
		must(t, s.DeadLetter(n))
		dead = append(dead, n)
	}
	if p := pending(t, s); !slices.Equal(ids(p), []string{"c"}) {
		t.Fatalf("Pending = %v", ids(p))
	}
	got, err := s.DeadLetters()
	must(t, err)
	if len(got) != 2 {
		t.Fatalf("DeadLetters = %v", ids(got))
	}
	eqN(t, "dead[0]", got[0], dead[0])
	eqN(t, "dead[1]", got[1], dead[1])
	r, err := s.Recent(10)
	must(t, err)
	if !slices.Equal(ids(r), []string{"a", "b"}) {
		t.Fatalf("Recent = %v, want [a b]", ids(r))
	}
	if err := s.DeadLetter(dead[0]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second DeadLetter = %v, want ErrNotFound", err)
	}
	if err := s.Delivered(dead[0]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Delivered of a dead letter = %v, want ErrNotFound", err)
	}
	// DeadAt is filled in when the caller leaves it zero.
	must(t, s.DeadLetter(notes[2]))
	got, err = s.DeadLetters()
	must(t, err)
	if got[2].ID != "c" || got[2].DeadAt.IsZero() {
		t.Fatalf("DeadLetters[2] = %+v, want c with DeadAt set", got[2])
	}
}

func testReplay(t *testing.T, s store.Store) {
	notes := commit(t, s, Note("a", "s"), Note("b", "s"))
	n := notes[0]
	n.Attempts, n.NextAttemptAt, n.LastStatus, n.LastError, n.DeadAt = 7, t0.Add(time.Hour), 410, "410 Gone", t0.Add(time.Minute)
	must(t, s.DeadLetter(n))
	later := commit(t, s, Note("c", "s"))

	before := time.Now()
	r, err := s.Replay("a")
	must(t, err)
	if r.ID != "a" || r.Seq <= later[0].Seq {
		t.Fatalf("Replay = id %q Seq %d, want id a and a Seq above %d", r.ID, r.Seq, later[0].Seq)
	}
	if r.Attempts != 0 || r.LastError != "" || r.LastStatus != 0 || !r.NextAttemptAt.IsZero() || !r.DeadAt.IsZero() || !r.DeliveredAt.IsZero() {
		t.Fatalf("Replay did not reset delivery state: %+v", r)
	}
	if r.ReplayedAt.Before(before.Add(-time.Second)) || r.ReplayedAt.After(time.Now().Add(time.Second)) {
		t.Fatalf("ReplayedAt = %v, want about now", r.ReplayedAt)
	}
	// Everything else is the original notification.
	want := store.ResetForReplay(notes[0], r.Seq)
	want.ReplayedAt = r.ReplayedAt
	eqN(t, "replayed", r, want)

	p := pending(t, s)
	if !slices.Equal(ids(p), []string{"b", "c", "a"}) {
		t.Fatalf("Pending after Replay = %v, want [b c a]", ids(p))
	}
	eqN(t, "pending replayed", p[2], r)
	if d, err := s.DeadLetters(); err != nil || len(d) != 0 {
		t.Fatalf("DeadLetters after Replay = %v, %v", ids(d), err)
	}
	if _, err := s.Replay("a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second Replay = %v, want ErrNotFound", err)
	}
	if _, err := s.Replay("b"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Replay of a pending entry = %v, want ErrNotFound", err)
	}
	// The replayed entry is an ordinary outbox entry again.
	r.Attempts = 1
	must(t, s.Attempted(r))
	must(t, s.Delivered(r))
	if p := pending(t, s); !slices.Equal(ids(p), []string{"b", "c"}) {
		t.Fatalf("Pending = %v", ids(p))
	}
	rec, err := s.Recent(1)
	must(t, err)
	if rec[0].ID != "a" || rec[0].ReplayedAt.IsZero() {
		t.Fatalf("Recent(1) = %+v", rec[0])
	}
}

func testRecent(t *testing.T, s store.Store) {
	const n = RecentLimit + 25
	for i := range n {
		notes := commit(t, s, Note(fmt.Sprintf("n%03d", i), "s"))
		if i%2 == 0 {
			must(t, s.Delivered(notes[0]))
		} else {
			must(t, s.DeadLetter(notes[0]))
		}
	}
	all, err := s.Recent(10 * n)
	must(t, err)
	if len(all) != RecentLimit {
		t.Fatalf("Recent(%d) has %d entries, want the limit %d", 10*n, len(all), RecentLimit)
	}
	for i, r := range all {
		if want := fmt.Sprintf("n%03d", n-1-i); r.ID != want {
			t.Fatalf("Recent[%d] = %s, want %s (newest first)", i, r.ID, want)
		}
	}
	three, err := s.Recent(3)
	must(t, err)
	if !slices.Equal(ids(three), ids(all[:3])) {
		t.Fatalf("Recent(3) = %v", ids(three))
	}
	for _, l := range []int{0, -1} {
		if r, err := s.Recent(l); err != nil || len(r) != 0 {
			t.Fatalf("Recent(%d) = %v, %v; want none", l, ids(r), err)
		}
	}
}

func testSeqNeverReused(t *testing.T, s store.Store) {
	notes := commit(t, s, Note("a", "s"), Note("b", "s"))
	must(t, s.Delivered(notes[0]))
	must(t, s.Delivered(notes[1]))
	next := commit(t, s, Note("c", "s"))
	if next[0].Seq <= notes[1].Seq {
		t.Fatalf("Seq %d after an emptied outbox, want above %d", next[0].Seq, notes[1].Seq)
	}
}

func testBots(t *testing.T, s store.Store) {
	on, off := true, false
	must(t, s.PutBot("b1", store.BotSettings{Enabled: &on, CheckInterval: "3m", ReturnMessage: "voltou", Mode: "activity"}))
	must(t, s.PutBot("b2", store.BotSettings{Enabled: &off}))
	must(t, s.PutBot("b1", store.BotSettings{Enabled: &on, CheckInterval: "5m"})) // replaces, not merges
	on = false                                                                    // the caller's pointer is not the store's
	got, err := s.Bots()
	must(t, err)
	if len(got) != 2 || got["b1"].Enabled == nil || !*got["b1"].Enabled || got["b1"].CheckInterval != "5m" ||
		got["b1"].ReturnMessage != "" || got["b2"].Enabled == nil || *got["b2"].Enabled {
		t.Fatalf("Bots = %+v", got)
	}
	*got["b1"].Enabled = false
	got2, err := s.Bots()
	must(t, err)
	if !*got2["b1"].Enabled {
		t.Fatal("writing through a returned Enabled changed the store")
	}
	if err := s.PutBot("", store.BotSettings{}); err == nil {
		t.Fatal("PutBot with an empty id succeeded")
	}
	must(t, s.PutBot("b3", store.BotSettings{}))
	if got, _ := s.Bots(); got["b3"].Enabled != nil {
		t.Fatalf("zero settings = %+v", got["b3"])
	}
}

func testCopies(t *testing.T, s store.Store) {
	must(t, s.Commit([]store.Session{Sess("s")}, nil, []store.Notification{Note("a", "s"), Note("b", "s")}))
	p := pending(t, s)
	p[0].Attempts, p[0].ID = 99, "changed"
	if q := pending(t, s); q[0].ID != "a" || q[0].Attempts != 0 {
		t.Fatalf("changing Pending's result changed the store: %+v", q[0])
	}
	ss, err := s.Sessions()
	must(t, err)
	ss[0].Conns = 99
	if sessions(t, s)["s"].Conns == 99 {
		t.Fatal("changing Sessions' result changed the store")
	}
}

func testConcurrent(t *testing.T, s store.Store) {
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				notes := []store.Notification{Note(id, id)}
				if err := s.Commit([]store.Session{Sess(id)}, nil, notes); err != nil {
					errs <- err
					return
				}
				if i%3 == 0 {
					if err := s.Delivered(notes[0]); err != nil {
						errs <- err
						return
					}
				}
				if _, err := s.Pending(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	p := pending(t, s)
	delivered := writers * ((each + 2) / 3)
	if len(p) != writers*each-delivered || !slices.IsSorted(seqs(p)) {
		t.Fatalf("Pending has %d entries (sorted: %v), want %d in Seq order", len(p), slices.IsSorted(seqs(p)), writers*each-delivered)
	}
	seen := map[uint64]bool{}
	for _, n := range p {
		if seen[n.Seq] {
			t.Fatalf("Seq %d assigned twice", n.Seq)
		}
		seen[n.Seq] = true
	}
	if got := len(sessions(t, s)); got != writers*each {
		t.Fatalf("%d sessions, want %d", got, writers*each)
	}
}
