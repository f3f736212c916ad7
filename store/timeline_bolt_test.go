package store

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/presence-sidecar/presence-sidecar/timeline"
)

func TestTimelineFileKeepsTheNewestAndReplacesByID(t *testing.T) {
	dir := t.TempDir()
	f, err := OpenTimeline(dir, 3, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	at := time.Now().UTC()
	ev := func(id string, n int) timeline.Event {
		return timeline.Event{ID: id, At: at.Add(time.Duration(n) * time.Second), Kind: timeline.Activity, Messages: n}
	}
	if err := f.Save(ctx, map[string][]timeline.Event{"s": {ev("a-1", 1), ev("a-2", 2)}}); err != nil {
		t.Fatal(err)
	}
	if err := f.Save(ctx, map[string][]timeline.Event{"s": {ev("a-3", 3), ev("a-4", 4)}, "": {ev("x", 1)}}); err != nil {
		t.Fatal(err)
	}
	grown := ev("a-4", 4)
	grown.Messages = 40
	if err := f.Save(ctx, map[string][]timeline.Event{"s": {grown}}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	f, err = OpenTimeline(dir, 3, time.Hour) // what a restart reads
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := f.Load(ctx, "s")
	if err != nil || len(got) != 3 || got[0].ID != "a-2" || got[2].Messages != 40 {
		t.Fatalf("loaded %+v, %v: want a-2..a-4, the last grown to 40", got, err)
	}
}

func TestTimelineFileDropsOldHistoriesAtOpen(t *testing.T) {
	dir := t.TempDir()
	f, err := OpenTimeline(dir, 3, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	old := timeline.Event{ID: "a-1", At: time.Now().Add(-2 * time.Hour), Kind: timeline.ConnOpened}
	if err := f.Save(context.Background(), map[string][]timeline.Event{"old": {old}}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	f, err = OpenTimeline(dir, 3, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, _ := f.Load(context.Background(), "old"); len(got) != 0 {
		t.Fatalf("a history idle past the TTL was kept: %+v", got)
	}
}

func TestTimelineFileCorruptIsAClearError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, TimelineFileName)
	if err := os.WriteFile(path, []byte(strings.Repeat("not a bbolt file ", 512)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := OpenTimeline(dir, 3, time.Hour)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("a corrupt timeline file: %v, want an error naming %s", err, path)
	}
	if b, _ := os.ReadFile(path); !strings.HasPrefix(string(b), "not a bbolt") {
		t.Fatal("the corrupt file was changed")
	}
}
