package handoff

import (
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/store"
)

// The view schedules one head per session, due heads waiting longest first
// (ties in Seq order), holds and retries by their time, and keeps its count,
// through whole and incremental reads and reports (docs/ARCHITECTURE.md,
// "Delivery").
func TestViewSchedulesOneHeadPerSessionOldestFirst(t *testing.T) {
	now := t0.Add(time.Hour)
	note := func(seq uint64, session string, created time.Time) store.Notification {
		n := offline(session, session+"-"+string(rune('0'+seq)))
		n.Seq, n.CreatedAt = seq, created
		return n
	}
	a1, b1, a2, c1, d1 := note(1, "A", t0.Add(2*time.Second)), note(2, "B", t0.Add(time.Second)),
		note(3, "A", t0), note(4, "C", t0), note(5, "D", t0.Add(3*time.Second))
	c1.NextAttemptAt = now.Add(time.Minute) // retrying: not due yet
	hold := map[string]time.Time{d1.ID: now.Add(30 * time.Second)}
	inflight := map[string]struct{}{}
	v := newOutboxView()
	v.reset([]store.Notification{a1, b1, a2, c1, d1}, inflight, hold, now)

	popAll := func() []string {
		var ids []string
		for q := v.popDue(); q != nil; q = v.popDue() {
			ids = append(ids, q.notes[0].ID)
			inflight[q.id] = struct{}{}
		}
		return ids
	}
	if got := popAll(); len(got) != 2 || got[0] != b1.ID || got[1] != a1.ID {
		t.Fatalf("due heads %v, want [%s %s]: A2 waits for A1, C1 for its retry, D1 for its hold", got, b1.ID, a1.ID)
	}
	if got := v.nextDue(); !got.Equal(hold[d1.ID]) {
		t.Fatalf("nextDue = %v, want the hold %v", got, hold[d1.ID])
	}
	if v.count != 5 || v.lastSeq != 5 {
		t.Fatalf("count %d, lastSeq %d, want 5 and 5", v.count, v.lastSeq)
	}

	// A1 delivered: A2 becomes A's head. A note read for B (in flight) waits;
	// one for a new session E is scheduled at once.
	delete(inflight, "A")
	if q := v.sessions["A"]; !v.record(q, a1, true) {
		t.Fatal("session A has nothing left after A1")
	} else {
		v.place(q, hold)
	}
	b2, e1 := note(6, "B", t0), note(7, "E", t0.Add(4*time.Second))
	v.add([]store.Notification{b1, b2, e1}, inflight, hold) // b1 again: already in the view
	v.promote(now)
	if got := popAll(); len(got) != 2 || got[0] != a2.ID || got[1] != e1.ID {
		t.Fatalf("due heads %v, want [%s %s]", got, a2.ID, e1.ID)
	}
	if v.count != 6 || v.lastSeq != 7 {
		t.Fatalf("count %d, lastSeq %d, want 6 and 7", v.count, v.lastSeq)
	}

	// B1 retried: B's head stays B1, due at its retry; B2 still waits.
	delete(inflight, "B")
	b1.Attempts, b1.NextAttemptAt = 1, now.Add(10*time.Second)
	q := v.sessions["B"]
	v.record(q, b1, false)
	v.place(q, hold)
	if got := v.nextDue(); !got.Equal(b1.NextAttemptAt) {
		t.Fatalf("nextDue = %v, want B1's retry %v", got, b1.NextAttemptAt)
	}
	v.promote(now.Add(time.Minute))
	// Waiting since: D1 its creation (the hold does not count), B1 and C1
	// their retry times.
	if got := popAll(); len(got) != 3 || got[0] != d1.ID || got[1] != b1.ID || got[2] != c1.ID {
		t.Fatalf("due heads a minute later %v, want [%s %s %s]", got, d1.ID, b1.ID, c1.ID)
	}

	// A whole read while B, C, D are in flight keeps them out of the heaps.
	delete(inflight, "A")
	delete(inflight, "E")
	v.reset([]store.Notification{b1, c1, d1, b2}, inflight, hold, now.Add(time.Minute))
	if got := popAll(); len(got) != 0 || v.count != 4 || v.lastSeq != 7 {
		t.Fatalf("after a whole read: due %v, count %d, lastSeq %d; want none, 4, 7", got, v.count, v.lastSeq)
	}
}
