package handoff

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/internal/testutil"
	"github.com/presence-sidecar/presence-sidecar/store"
)

// A return message never reaches the platform without its /expire: when the
// offline notification is dead-lettered, the same episode's return message
// follows it into the dead letters, and replaying both in order delivers both
// in order (docs/ARCHITECTURE.md, "Presence invariants" 3).
func TestReturnMessageFollowsItsDeadOfflineNote(t *testing.T) {
	var refuse atomic.Bool
	refuse.Store(true)
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		if refuse.Load() {
			w.WriteHeader(http.StatusUnprocessableEntity)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	st := store.NewMemory()
	obs := &outcomes{}
	d := run(t, baseOptions(st, p.URL, obs))
	commit(t, st, d, offline("s", "msg_off"), online("s", "msg_on"))
	testutil.Eventually(t, 10*time.Second, "two dead letters", func() bool { return len(deadLetters(t, st)) == 2 })
	if p.count() != 1 {
		t.Fatalf("the return message was sent without its /expire: %d requests", p.count())
	}
	if dl := deadLetters(t, st)[1]; dl.ID != "msg_on" || !strings.Contains(dl.LastError, "msg_off") {
		t.Fatalf("return message dead letter: %+v", dl)
	}
	refuse.Store(false)
	for _, id := range []string{"msg_off", "msg_on"} {
		if _, err := d.Replay(id); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, "both delivered", func() bool { return obs.count(Delivered) == 2 })
	reqs := p.requests()
	if len(reqs) != 3 || reqs[1].ID() != "msg_off" || reqs[2].ID() != "msg_on" {
		t.Fatalf("delivery order after replay: %d requests", len(reqs))
	}
}

// The return message of an episode whose /expire died is held back even when
// it is committed later (the client came back after the dead letter), and
// after a restart of the deliverer.
func TestReturnMessageCommittedAfterItsOfflineDied(t *testing.T) {
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		if r.URL.Path == "/expire" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	st := store.NewMemory()
	obs := &outcomes{}
	ctx, cancel := context.WithCancel(context.Background())
	d1, err := New(baseOptions(st, p.URL, obs))
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() { d1.Run(ctx); close(stopped) }()
	commit(t, st, d1, offline("s", "msg_off"))
	testutil.Eventually(t, 10*time.Second, "dead offline", func() bool { return obs.count(Dead) == 1 })
	cancel()
	<-stopped
	// A new deliverer (a restart) on the same store; the client comes back.
	d2 := run(t, baseOptions(st, p.URL, obs))
	commit(t, st, d2, online("s", "msg_on"))
	testutil.Eventually(t, 10*time.Second, "the return message dead-lettered", func() bool { return obs.count(Dead) == 2 })
	for _, r := range p.requests() {
		if r.Path == "/message" {
			t.Fatalf("return message %s sent although its /expire was dead-lettered", r.ID())
		}
	}
	if dl := deadLetters(t, st); len(dl) != 2 || dl[1].ID != "msg_on" || !strings.Contains(dl[1].LastError, "msg_off") {
		t.Fatalf("dead letters %+v", dl)
	}
}

// What deadEpisodes remembers: only dead offline notifications, per session
// and episode, asked about only for return messages, dropped on replay, and
// rebuilt from the store's dead letters.
func TestDeadEpisodesRememberOfflineByEpisode(t *testing.T) {
	var e deadEpisodes // the zero value is ready
	if _, dead := e.offlineOf(online("s", "on1")); dead {
		t.Fatal("empty memory reports a dead episode")
	}
	e.forget(offline("s", "off1")) // nothing to forget: no panic
	e.remember(online("s", "on1")) // a return message is not remembered
	if _, dead := e.offlineOf(online("s", "on1")); dead {
		t.Error("a dead return message was remembered as a dead episode")
	}
	e.remember(offline("s", "off1"))
	if id, dead := e.offlineOf(online("s", "on1")); !dead || id != "off1" {
		t.Errorf("offlineOf = %q, %v; want off1", id, dead)
	}
	if _, dead := e.offlineOf(offline("s", "off2")); dead {
		t.Error("an offline notification was held back by its own episode")
	}
	other := online("s", "on2")
	other.Episode = 2
	if _, dead := e.offlineOf(other); dead {
		t.Error("another episode of the session was held back")
	}
	if _, dead := e.offlineOf(online("t", "on3")); dead {
		t.Error("another session was held back")
	}
	e.forget(offline("s", "off1"))
	if _, dead := e.offlineOf(online("s", "on1")); dead {
		t.Error("the episode is still dead after its offline notification was replayed")
	}

	st := store.NewMemory()
	commit(t, st, nil, offline("s", "off1"), online("s", "on1"))
	for _, n := range pending(t, st) {
		n.DeadAt = time.Now()
		if err := st.DeadLetter(n); err != nil {
			t.Fatal(err)
		}
	}
	e.remember(offline("gone", "off9")) // replaced by what the store holds
	if err := e.load(st); err != nil {
		t.Fatal(err)
	}
	if id, dead := e.offlineOf(online("s", "on1")); !dead || id != "off1" {
		t.Errorf("after load: offlineOf = %q, %v; want off1", id, dead)
	}
	if _, dead := e.offlineOf(online("gone", "on9")); dead {
		t.Error("load kept what the store does not hold")
	}
}

// failDeadLetter fails its first DeadLetter write, as a full disk would.
type failDeadLetter struct {
	*store.Memory
	failed atomic.Bool
}

func (f *failDeadLetter) DeadLetter(n store.Notification) error {
	if f.failed.CompareAndSwap(false, true) {
		return errors.New("disk full")
	}
	return f.Memory.DeadLetter(n)
}

// An /expire whose dead-lettering could not be written stays in the outbox,
// so its episode is not remembered as dead: when it is delivered on a later
// attempt, its return message is delivered after it, not dead-lettered.
func TestDeadLetterWriteFailureKeepsTheEpisodeAlive(t *testing.T) {
	p := newPlatform(t, func(w http.ResponseWriter, r *http.Request, got received, i int) {
		if i == 0 {
			w.WriteHeader(http.StatusUnprocessableEntity)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	st := &failDeadLetter{Memory: store.NewMemory()}
	obs := &outcomes{}
	d := run(t, baseOptions(st, p.URL, obs))
	commit(t, st, d, offline("s", "msg_off"), online("s", "msg_on"))
	testutil.Eventually(t, 10*time.Second, "both delivered", func() bool { return obs.count(Delivered) == 2 })
	reqs := p.requests()
	if len(reqs) != 3 || reqs[1].ID() != "msg_off" || reqs[2].ID() != "msg_on" {
		t.Fatalf("requests: %d, want /expire refused, /expire, /message", len(reqs))
	}
	if dl := deadLetters(t, st); len(dl) != 0 {
		t.Fatalf("dead letters: %+v", dl)
	}
}
