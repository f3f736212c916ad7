package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// FileName is the store's file inside DATA_DIR.
const FileName = "presence-sidecar.db"

// schemaVersion is the layout of the buckets below. Bump it on any
// incompatible change; an older build refuses a newer file.
const schemaVersion = 1

// Buckets. Keys are UTF-8 ids or 8-byte big-endian numbers, so that bbolt's
// byte order is numeric order.
var (
	bucketMeta      = []byte("meta")       // schema version, dead-letter count
	bucketSessions  = []byte("sessions")   // session id → Session JSON
	bucketOutbox    = []byte("outbox")     // Seq → Notification JSON; its NextSequence assigns Seq
	bucketOutboxIDs = []byte("outbox_ids") // notification id → Seq
	bucketDead      = []byte("dead")       // dead-letter order → Notification JSON, oldest first
	bucketDeadIDs   = []byte("dead_ids")   // notification id → dead-letter order key
	bucketRecent    = []byte("recent")     // ring of the last recentLimit delivered/dead, by insertion order
	bucketBots      = []byte("bots")       // bot id → BotSettings JSON

	allBuckets = [][]byte{bucketMeta, bucketSessions, bucketOutbox, bucketOutboxIDs,
		bucketDead, bucketDeadIDs, bucketRecent, bucketBots}

	keySchema    = []byte("schema")
	keyDeadCount = []byte("deadCount")
)

// maxGroup bounds how many writes share one transaction (one fsync).
const maxGroup = 128

// Bolt is the embedded Store: one bbolt file under DATA_DIR. Every write is a
// transaction that is fsynced before the call returns, so a decision the
// caller has seen committed survives kill -9 and power loss. Concurrent
// writers are group-committed: whoever queues while a transaction is being
// written shares the next one (and its fsync), so throughput grows with the
// number of writers while a lone writer never waits for a timer.
type Bolt struct {
	db     *bbolt.DB
	path   string
	log    *zap.Logger
	opts   boltOptions
	opened os.FileInfo // the file as opened, to notice it being replaced

	mu         sync.RWMutex // guards closed against sends on ops
	closed     bool
	ops        chan writeOp // unbuffered: the writer drains blocked senders into one group
	writerDone chan struct{}
	closeOnce  sync.Once
	closeErr   error

	groups, grouped atomic.Int64 // transactions run by the writer, and the writes in them

	writeErr atomic.Pointer[error] // the last write transaction's own failure (disk full, read-only, I/O); nil once one succeeds; for Check
}

type writeOp struct {
	// fn must return ErrNotFound only before it has written anything, so the
	// group it shares a transaction with can still commit.
	fn   func(*bbolt.Tx) error
	done chan error
}

// boltOptions are knobs for tests; OpenBolt uses defaultBoltOptions.
type boltOptions struct {
	lockTimeout time.Duration // waiting for another process's lock on the file
	noSync      bool          // tests only: skip fsync
	deadLimit   int
}

func defaultBoltOptions() boltOptions {
	// 10s: long enough to outwait a previous process that is still exiting on
	// the same volume, short enough to fail visibly when two sidecars share it.
	return boltOptions{lockTimeout: 10 * time.Second, deadLimit: deadLimit}
}

// OpenBolt opens (or, when dir holds no store yet, creates) dir/presence-sidecar.db.
// It refuses a file that is locked by another process, unreadable, corrupt,
// truncated or written by a newer version, with an error that names the file
// and says what to do; it never silently starts empty over a bad file.
func OpenBolt(dir string, log *zap.Logger) (*Bolt, error) {
	return openBolt(dir, log, defaultBoltOptions())
}

func openBolt(dir string, log *zap.Logger, opts boltOptions) (*Bolt, error) {
	if log == nil {
		log = zap.NewNop()
	}
	start := time.Now()
	db, path, err := openFile(dir, log, opts)
	if err != nil {
		return nil, err
	}
	b := &Bolt{db: db, path: path, log: log, opts: opts, ops: make(chan writeOp), writerDone: make(chan struct{})}
	counts, err := b.verify()
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	// Remember which file we hold, for Check. bbolt.Open has just opened this
	// path, so this is that file.
	b.opened, err = os.Stat(path)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: %s: %w", path, err)
	}
	size := b.opened.Size()
	go b.writer()
	log.Info("store: opened", zap.String("path", path), zap.Int64("bytes", size),
		zap.Int("sessions", counts.sessions), zap.Int("outbox", counts.outbox), zap.Int("dead_letters", counts.dead),
		zap.Int("bots", counts.bots), zap.Duration("took", time.Since(start)))
	return b, nil
}

// Path is the store's file.
func (b *Bolt) Path() string { return b.path }

// Check is a cheap liveness test for /readyz: the store is open, a read
// transaction works, and the file on disk is still the one we write to (a
// file deleted or replaced under us would lose every later write at restart).
func (b *Bolt) Check() error {
	b.mu.RLock()
	closed := b.closed
	b.mu.RUnlock()
	if closed {
		return fmt.Errorf("store %s is closed", b.path)
	}
	if err := b.db.View(func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketMeta) == nil {
			return errors.New("meta bucket missing")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("store %s: read failed: %w", b.path, err)
	}
	onDisk, err := os.Stat(b.path)
	if err != nil {
		return fmt.Errorf("store %s: %w (the file was removed while the sidecar runs; its writes will not survive a restart)", b.path, err)
	}
	if !os.SameFile(onDisk, b.opened) {
		return fmt.Errorf("store %s was replaced while the sidecar runs; its writes go to the old file and will not survive a restart", b.path)
	}
	if werr := b.writeErr.Load(); werr != nil {
		return fmt.Errorf("store %s: writes fail (decisions are kept in memory and retried): %w", b.path, *werr)
	}
	return nil
}

// Close writes what is queued, then closes the file. Calls after Close fail.
func (b *Bolt) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		close(b.ops)
		b.mu.Unlock()
		<-b.writerDone
		b.closeErr = b.db.Close()
	})
	return b.closeErr
}

// ---- writes ----

func (b *Bolt) Commit(put []Session, forget []string, notes []Notification) error {
	if err := validateCommit(put, forget, notes); err != nil {
		return err
	}
	// Sessions do not depend on the transaction: encode them here, off the
	// single writer's path.
	enc := make([][]byte, len(put))
	for i, s := range put {
		v, err := json.Marshal(s)
		if err != nil {
			return fmt.Errorf("store: encode session %q: %w", short(s.ID), err)
		}
		enc[i] = v
	}
	// Seqs are handed back only once the transaction is durable, so a failed
	// Commit leaves notes as they were.
	seqs := make([]uint64, len(notes))
	err := b.update(func(tx *bbolt.Tx) error {
		ss := tx.Bucket(bucketSessions)
		for i, s := range put {
			if err := ss.Put([]byte(s.ID), enc[i]); err != nil {
				return fmt.Errorf("store: put session %q: %w", short(s.ID), err)
			}
		}
		for _, id := range forget {
			if err := ss.Delete([]byte(id)); err != nil {
				return fmt.Errorf("store: forget session %q: %w", short(id), err)
			}
		}
		for i := range notes {
			seq, err := tx.Bucket(bucketOutbox).NextSequence()
			if err != nil {
				return err
			}
			n := notes[i]
			n.Seq = seq
			if err := putOutbox(tx, n); err != nil {
				return err
			}
			seqs[i] = seq
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := range notes {
		notes[i].Seq = seqs[i]
	}
	return nil
}

func (b *Bolt) Attempted(n Notification) error {
	return b.update(func(tx *bbolt.Tx) error {
		m, err := findOutbox(tx, n)
		if err != nil {
			return err
		}
		return putOutbox(tx, m)
	})
}

func (b *Bolt) Delivered(n Notification) error {
	n = stampDelivered(n)
	return b.update(func(tx *bbolt.Tx) error {
		m, err := findOutbox(tx, n)
		if err != nil {
			return err
		}
		if err := deleteOutbox(tx, m); err != nil {
			return err
		}
		return pushRecent(tx, m)
	})
}

func (b *Bolt) DeadLetter(n Notification) error {
	n = stampDead(n)
	var dropped []Notification // reset on every run of fn: a group may run it twice
	err := b.update(func(tx *bbolt.Tx) error {
		dropped = nil
		m, err := findOutbox(tx, n)
		if err != nil {
			return err
		}
		if err := deleteOutbox(tx, m); err != nil {
			return err
		}
		if dropped, err = pushDead(tx, m, b.opts.deadLimit); err != nil {
			return err
		}
		return pushRecent(tx, m)
	})
	if err == nil {
		for _, d := range dropped {
			b.log.Warn("store: dead-letter list full, dropped the oldest dead letter",
				zap.Int("limit", b.opts.deadLimit), zap.String("webhook_id", d.ID),
				zap.String("session", d.SessionID), zap.String("bot", d.BotID), zap.String("kind", string(d.Kind)),
				zap.Time("dead_at", d.DeadAt))
		}
	}
	return err
}

func (b *Bolt) Replay(id string) (Notification, error) {
	var out Notification
	err := b.update(func(tx *bbolt.Tx) error {
		ids := tx.Bucket(bucketDeadIDs)
		key := ids.Get([]byte(id))
		if key == nil {
			return ErrNotFound
		}
		key = append([]byte(nil), key...) // bbolt's bytes are only valid until the next write
		var n Notification
		if err := decode(tx.Bucket(bucketDead).Get(key), &n, "dead", key); err != nil {
			return err
		}
		if err := tx.Bucket(bucketDead).Delete(key); err != nil {
			return err
		}
		if err := ids.Delete([]byte(id)); err != nil {
			return err
		}
		if err := addDeadCount(tx, -1); err != nil {
			return err
		}
		seq, err := tx.Bucket(bucketOutbox).NextSequence()
		if err != nil {
			return err
		}
		n = ResetForReplay(n, seq)
		if err := putOutbox(tx, n); err != nil {
			return err
		}
		out = n
		return nil
	})
	if err != nil {
		return Notification{}, err
	}
	return out, nil
}

func (b *Bolt) PutBot(botID string, s BotSettings) error {
	if err := validateBotID(botID); err != nil {
		return err
	}
	v, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("store: encode bot %q: %w", short(botID), err)
	}
	return b.update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketBots).Put([]byte(botID), v)
	})
}

// ---- reads ----

func (b *Bolt) Sessions() ([]Session, error) {
	var out []Session
	err := readAll(b, bucketSessions, func(_ []byte, s Session) { out = append(out, s) })
	return out, err
}

func (b *Bolt) Pending() ([]Notification, error) {
	return b.list(bucketOutbox)
}

// PendingAfter seeks to seq+1 in the outbox bucket (keyed by Seq) and decodes
// only what follows. Seqs are visible in order: they are assigned inside the
// single writer's transactions (NextSequence), which readers see whole.
func (b *Bolt) PendingAfter(seq uint64) ([]Notification, error) {
	var out []Notification
	if seq == math.MaxUint64 {
		return out, nil
	}
	err := b.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketOutbox).Cursor()
		for k, v := c.Seek(u64(seq + 1)); k != nil; k, v = c.Next() {
			var n Notification
			if err := decode(v, &n, string(bucketOutbox), k); err != nil {
				return err
			}
			out = append(out, n)
		}
		return nil
	})
	return out, b.wrapRead(err)
}

func (b *Bolt) DeadLetters() ([]Notification, error) {
	return b.list(bucketDead)
}

// Recent returns up to limit entries, newest first; limit <= 0 returns none.
func (b *Bolt) Recent(limit int) ([]Notification, error) {
	out := make([]Notification, 0, max(0, min(limit, recentLimit)))
	if limit <= 0 {
		return out, nil
	}
	err := b.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketRecent).Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			var n Notification
			if err := decode(v, &n, "recent", k); err != nil {
				return err
			}
			out = append(out, n)
		}
		return nil
	})
	return out, b.wrapRead(err)
}

func (b *Bolt) Bots() (map[string]BotSettings, error) {
	out := map[string]BotSettings{}
	err := readAll(b, bucketBots, func(k []byte, s BotSettings) { out[string(k)] = s })
	return out, err
}

// list decodes a bucket of notifications in key order.
func (b *Bolt) list(bucket []byte) ([]Notification, error) {
	var out []Notification
	err := readAll(b, bucket, func(_ []byte, n Notification) { out = append(out, n) })
	return out, err
}

// readAll decodes every value of bucket in key order and hands it to add with
// its key (valid only during the call).
func readAll[T any](b *Bolt, bucket []byte, add func(k []byte, v T)) error {
	err := b.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var x T
			if err := decode(v, &x, string(bucket), k); err != nil {
				return err
			}
			add(k, x)
			return nil
		})
	})
	return b.wrapRead(err)
}

func (b *Bolt) wrapRead(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("store %s: %w", b.path, err)
}

// ---- the single writer ----

// update runs fn in a durable write transaction, possibly shared with other
// callers' fn (group commit), and returns fn's outcome.
func (b *Bolt) update(fn func(*bbolt.Tx) error) error {
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return fmt.Errorf("store %s is closed", b.path)
	}
	op := writeOp{fn: fn, done: make(chan error, 1)}
	b.ops <- op // the writer runs until closed is set, which needs our read lock released
	b.mu.RUnlock()
	return <-op.done
}

func (b *Bolt) writer() {
	defer close(b.writerDone)
	group := make([]writeOp, 0, maxGroup)
	for op := range b.ops {
		group = append(group[:0], op)
		// Let writers just woken by the previous commit queue up, so that
		// they share this transaction instead of waiting for the next.
		runtime.Gosched()
	drain:
		for len(group) < maxGroup {
			select {
			case o, ok := <-b.ops:
				if !ok {
					break drain
				}
				group = append(group, o)
			default:
				break drain
			}
		}
		b.run(group)
	}
}

func (b *Bolt) run(group []writeOp) {
	b.groups.Add(1)
	b.grouped.Add(int64(len(group)))
	if len(group) == 1 {
		group[0].done <- b.tx(group[0].fn)
		return
	}
	results := make([]error, len(group))
	err := b.tx(func(tx *bbolt.Tx) error {
		for i, op := range group {
			err := op.fn(tx)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			results[i] = err
		}
		return nil
	})
	if err == nil {
		for i, op := range group {
			op.done <- results[i]
		}
		return
	}
	// The transaction was rolled back: give every write its own, so that one
	// bad write cannot fail the others.
	b.log.Warn("store: group commit failed, retrying its writes one by one",
		zap.Int("writes", len(group)), zap.Error(err))
	for _, op := range group {
		op.done <- b.tx(op.fn)
	}
}

// tx runs one durable write transaction. A panic inside bbolt (a corrupt
// page found at run time) fails the write instead of killing the proxy;
// bbolt rolls the transaction back before the panic reaches us.
//
// A failure of the transaction itself, not an error fn returned (such as
// ErrNotFound), is the file failing: Check reports it until a write succeeds.
func (b *Bolt) tx(fn func(*bbolt.Tx) error) (err error) {
	var fnErr error
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("store %s: write panicked (is the file corrupt?): %v", b.path, r)
			b.log.Error("store: write panicked", zap.String("path", b.path), zap.Any("panic", r))
		}
		switch {
		case err == nil:
			b.writeErr.Store(nil)
		case fnErr == nil: // bbolt returns fn's error as it is, so this one is its own
			b.writeErr.Store(&err)
		}
	}()
	return b.db.Update(func(tx *bbolt.Tx) error { fnErr = fn(tx); return fnErr })
}

// ---- helpers inside transactions ----

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func decode(v []byte, into any, bucket string, key []byte) error {
	if v == nil {
		return fmt.Errorf("bucket %s: key %q: missing value", bucket, short(string(key)))
	}
	if err := json.Unmarshal(v, into); err != nil {
		return fmt.Errorf("bucket %s: key %q: undecodable value: %w", bucket, short(string(key)), err)
	}
	return nil
}

func putOutbox(tx *bbolt.Tx, n Notification) error {
	v, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("store: encode notification %q: %w", short(n.ID), err)
	}
	if err := tx.Bucket(bucketOutbox).Put(u64(n.Seq), v); err != nil {
		return fmt.Errorf("store: put notification %q: %w", short(n.ID), err)
	}
	return tx.Bucket(bucketOutboxIDs).Put([]byte(n.ID), u64(n.Seq))
}

// findOutbox finds the outbox entry n refers to and returns n with that
// entry's Seq (the outbox position is the store's, not the caller's): by
// n.Seq when it holds n.ID (callers pass it: one lookup), else by the id index.
func findOutbox(tx *bbolt.Tx, n Notification) (Notification, error) {
	ob := tx.Bucket(bucketOutbox)
	if n.Seq != 0 {
		if v := ob.Get(u64(n.Seq)); v != nil {
			var head struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(v, &head) == nil && head.ID == n.ID {
				return n, nil
			}
		}
	}
	if k := tx.Bucket(bucketOutboxIDs).Get([]byte(n.ID)); len(k) == 8 {
		if seq := binary.BigEndian.Uint64(k); ob.Get(k) != nil {
			n.Seq = seq
			return n, nil
		}
	}
	return Notification{}, ErrNotFound
}

func deleteOutbox(tx *bbolt.Tx, n Notification) error {
	if err := tx.Bucket(bucketOutbox).Delete(u64(n.Seq)); err != nil {
		return err
	}
	// The index keeps the newest entry of an id; leave it if it names another.
	ids := tx.Bucket(bucketOutboxIDs)
	if k := ids.Get([]byte(n.ID)); len(k) == 8 && binary.BigEndian.Uint64(k) == n.Seq {
		return ids.Delete([]byte(n.ID))
	}
	return nil
}

// pushRecent appends n to the ring and trims it to recentLimit. Keys are
// consecutive (only the oldest is ever removed), so the count is last-first+1.
func pushRecent(tx *bbolt.Tx, n Notification) error {
	rb := tx.Bucket(bucketRecent)
	key, err := rb.NextSequence()
	if err != nil {
		return err
	}
	v, err := json.Marshal(n)
	if err != nil {
		return err
	}
	if err := rb.Put(u64(key), v); err != nil {
		return err
	}
	for {
		first, _ := rb.Cursor().First()
		if first == nil || key-binary.BigEndian.Uint64(first)+1 <= recentLimit {
			return nil
		}
		if err := rb.Delete(first); err != nil {
			return err
		}
	}
}

// pushDead appends n to the dead letters and drops the oldest beyond limit,
// returning what it dropped.
func pushDead(tx *bbolt.Tx, n Notification, limit int) ([]Notification, error) {
	db, ids := tx.Bucket(bucketDead), tx.Bucket(bucketDeadIDs)
	key, err := db.NextSequence()
	if err != nil {
		return nil, err
	}
	v, err := json.Marshal(n)
	if err != nil {
		return nil, err
	}
	if err := db.Put(u64(key), v); err != nil {
		return nil, err
	}
	if err := ids.Put([]byte(n.ID), u64(key)); err != nil {
		return nil, err
	}
	count := deadCount(tx) + 1
	var dropped []Notification
	for ; count > uint64(max(limit, 1)); count-- {
		k, v := db.Cursor().First()
		if k == nil {
			break
		}
		k = append([]byte(nil), k...)
		var old Notification
		if json.Unmarshal(v, &old) == nil {
			if ik := ids.Get([]byte(old.ID)); ik != nil && string(ik) == string(k) {
				if err := ids.Delete([]byte(old.ID)); err != nil {
					return nil, err
				}
			}
		}
		if err := db.Delete(k); err != nil {
			return nil, err
		}
		dropped = append(dropped, old)
	}
	return dropped, setDeadCount(tx, count)
}

func deadCount(tx *bbolt.Tx) uint64 {
	if v := tx.Bucket(bucketMeta).Get(keyDeadCount); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func setDeadCount(tx *bbolt.Tx, n uint64) error {
	return tx.Bucket(bucketMeta).Put(keyDeadCount, u64(n))
}

func addDeadCount(tx *bbolt.Tx, d int) error {
	n := int64(deadCount(tx)) + int64(d)
	return setDeadCount(tx, uint64(max(n, 0)))
}

// short keeps error messages readable when an id is not.
func short(id string) string {
	if len(id) <= 64 {
		return id
	}
	return id[:64] + fmt.Sprintf("…(%d bytes)", len(id))
}
