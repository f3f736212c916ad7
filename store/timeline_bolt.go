package store

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"

	"github.com/presence-sidecar/presence-sidecar/timeline"
)

// TimelineFileName is the embedded mode's file of session histories, beside
// FileName in DATA_DIR. A file of its own: its writes never wait for, nor
// hold up, the state store's commits (package timeline: "never in the way"),
// and losing it loses no decision.
const TimelineFileName = "timeline.db"

var timelineBucket = []byte("timeline")

// TimelineFile keeps each session's recent events in a bbolt file: one key
// per session, its value the JSON list of at most perSession events, oldest
// first. It implements timeline.Backend.
type TimelineFile struct {
	db         *bbolt.DB
	perSession int
	ttl        time.Duration
}

// OpenTimeline opens (or creates) dir/TimelineFileName. Histories whose
// newest event is older than ttl are dropped at open.
func OpenTimeline(dir string, perSession int, ttl time.Duration) (*TimelineFile, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("timeline: cannot create the data directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, TimelineFileName)
	var db *bbolt.DB
	err := guard(func() (err error) {
		db, err = bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("timeline: cannot open %s: %v", path, err)
	}
	f := &TimelineFile{db: db, perSession: max(perSession, 1), ttl: ttl}
	if err := f.prune(time.Now()); err != nil {
		db.Close()
		return nil, fmt.Errorf("timeline: %s: %v", path, err)
	}
	return f, nil
}

// Name implements timeline.Backend.
func (f *TimelineFile) Name() string { return "bbolt" }

// Close closes the file.
func (f *TimelineFile) Close() error { return f.db.Close() }

// Save implements timeline.Backend: one transaction for the batch.
func (f *TimelineFile) Save(_ context.Context, batch map[string][]timeline.Event) error {
	return guard(func() error {
		return f.db.Update(func(tx *bbolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(timelineBucket)
			if err != nil {
				return err
			}
			for sid, evs := range batch {
				if sid == "" || len(sid) > MaxIDBytes {
					continue
				}
				var old []timeline.Event
				if v := b.Get([]byte(sid)); v != nil {
					_ = json.Unmarshal(v, &old) // a damaged entry is replaced
				}
				v, err := json.Marshal(timeline.Merge(f.perSession, old, evs))
				if err != nil {
					return err
				}
				if err := b.Put([]byte(sid), v); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// Load implements timeline.Backend.
func (f *TimelineFile) Load(_ context.Context, sid string) ([]timeline.Event, error) {
	var out []timeline.Event
	err := guard(func() error {
		return f.db.View(func(tx *bbolt.Tx) error {
			b := tx.Bucket(timelineBucket)
			if b == nil {
				return nil
			}
			if v := b.Get([]byte(sid)); v != nil {
				return json.Unmarshal(v, &out)
			}
			return nil
		})
	})
	return out, err
}

// prune drops the histories whose newest event is older than ttl.
func (f *TimelineFile) prune(now time.Time) error {
	if f.ttl <= 0 {
		return nil
	}
	return guard(func() error {
		return f.db.Update(func(tx *bbolt.Tx) error {
			b := tx.Bucket(timelineBucket)
			if b == nil {
				return nil
			}
			var old [][]byte
			_ = b.ForEach(func(k, v []byte) error {
				var evs []timeline.Event
				if json.Unmarshal(v, &evs) != nil || len(evs) == 0 || now.Sub(evs[len(evs)-1].At) > f.ttl {
					old = append(old, append([]byte(nil), k...))
				}
				return nil
			})
			for _, k := range old {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
	})
}
