package store_test

import (
	"fmt"
	"slices"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/presence-sidecar/presence-sidecar/store"
	"github.com/presence-sidecar/presence-sidecar/store/storetest"
)

// The same table of behaviours runs against every store.

func TestConformanceMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return store.NewMemory() })
}

func TestConformanceBolt(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openBolt(t, t.TempDir()) })
}

// openBolt opens a real (fsynced) store in dir.
func openBolt(t testing.TB, dir string) *store.Bolt {
	t.Helper()
	b, err := store.OpenBolt(dir, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The dead-letter list is capped, dropping the oldest; Replay still finds
// what is kept and not what was dropped.
func TestDeadLetterCap(t *testing.T) {
	const limit = 5
	for name, open := range map[string]func(t *testing.T) store.Store{
		"Memory": func(t *testing.T) store.Store { m := store.NewMemory(); m.SetDeadLimit(limit); return m },
		"Bolt": func(t *testing.T) store.Store {
			b, err := store.OpenBoltWith(t.TempDir(), zaptest.NewLogger(t), store.TestBoltOptions{DeadLimit: limit})
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			defer s.Close()
			for i := range limit + 3 {
				notes := []store.Notification{storetest.Note(fmt.Sprintf("d%d", i), "s")}
				if err := s.Commit(nil, nil, notes); err != nil {
					t.Fatal(err)
				}
				if err := s.DeadLetter(notes[0]); err != nil {
					t.Fatal(err)
				}
			}
			dead, err := s.DeadLetters()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range dead {
				got = append(got, d.ID)
			}
			if want := []string{"d3", "d4", "d5", "d6", "d7"}; !slices.Equal(got, want) {
				t.Fatalf("DeadLetters = %v, want the newest %v", got, want)
			}
			if _, err := s.Replay("d0"); err != store.ErrNotFound {
				t.Fatalf("Replay of a dropped dead letter = %v, want ErrNotFound", err)
			}
			if _, err := s.Replay("d3"); err != nil {
				t.Fatal(err)
			}
			// Room again: one more dead letter drops nothing.
			notes := []store.Notification{storetest.Note("d8", "s")}
			if err := s.Commit(nil, nil, notes); err != nil {
				t.Fatal(err)
			}
			if err := s.DeadLetter(notes[0]); err != nil {
				t.Fatal(err)
			}
			if dead, _ := s.DeadLetters(); len(dead) != limit || dead[0].ID != "d4" {
				t.Fatalf("DeadLetters after a replay and one more = %d entries from %s", len(dead), dead[0].ID)
			}
		})
	}
}
