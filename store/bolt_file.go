package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"
)

// What an operator can do about a bad file; every open error ends with it.
const remedy = "the sidecar will not start over it, to avoid losing undelivered notifications and presence state: " +
	"restore the file from a backup, or move it away to start with an empty store"

// openFile opens dir/FileName, creating it on a first run, after checking
// what can be checked before bbolt maps it.
func openFile(dir string, log *zap.Logger, opts boltOptions) (*bbolt.DB, string, error) {
	if dir == "" {
		return nil, "", errors.New("store: DATA_DIR is empty")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, "", fmt.Errorf("store: cannot create the data directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		log.Info("store: no store file yet, creating an empty one (first run)", zap.String("path", path))
		if err := create(dir, path, opts); err != nil {
			return nil, "", err
		}
	case err != nil:
		return nil, "", fmt.Errorf("store: cannot access %s: %w; check the owner and permissions of the file and of %s", path, err, dir)
	case !fi.Mode().IsRegular():
		return nil, "", fmt.Errorf("store: %s is not a regular file (%s); %s", path, fi.Mode().Type(), remedy)
	}
	if err := precheck(path); err != nil {
		return nil, "", err
	}
	var db *bbolt.DB
	err = guard(func() (err error) {
		db, err = bbolt.Open(path, 0o600, &bbolt.Options{Timeout: opts.lockTimeout, NoSync: opts.noSync})
		return err
	})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, "", fmt.Errorf("store: %s is locked by another process (waited %s): another presence-sidecar may be running on the same DATA_DIR (%s); "+
			"stop it, or give each sidecar its own DATA_DIR", path, opts.lockTimeout, dir)
	case errors.Is(err, fs.ErrPermission):
		return nil, "", fmt.Errorf("store: cannot open %s for reading and writing: %w; check the owner and permissions of the file and of %s", path, err, dir)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch),
		errors.As(err, new(panicError)):
		return nil, "", fmt.Errorf("store: cannot open %s: %v; the file is corrupt or not a presence-sidecar store; %s", path, err, remedy)
	case err != nil: // the system refused: read-only file system, no space, I/O error...
		return nil, "", fmt.Errorf("store: cannot open %s for reading and writing: %w", path, err)
	}
	return db, path, nil
}

// create makes a new store atomically: it is built under a temporary name and
// linked into place complete, so a file at path is always a store that was
// once whole, and an empty or short one means damage, never "first run".
func create(dir, path string, opts boltOptions) error {
	f, err := os.CreateTemp(dir, FileName+".new-*")
	if err != nil {
		return fmt.Errorf("store: cannot create a file in %s: %w; check the owner and permissions of the directory", dir, err)
	}
	tmp := f.Name()
	_ = f.Close()
	defer os.Remove(tmp) // after the link, this only removes the temporary name
	db, err := bbolt.Open(tmp, 0o600, &bbolt.Options{Timeout: opts.lockTimeout, NoSync: opts.noSync})
	if err != nil {
		return fmt.Errorf("store: cannot create %s: %w", tmp, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		if err := createBuckets(tx); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keySchema, u64(schemaVersion))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("store: cannot initialise %s: %w", tmp, err)
	}
	// Link, unlike rename, never replaces a store another process made meanwhile.
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		if err := os.Rename(tmp, path); err != nil { // file systems without hard links
			return fmt.Errorf("store: cannot create %s: %w", path, err)
		}
	}
	return syncDir(dir)
}

// syncDir makes a new directory entry durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: cannot open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("store: cannot sync %s: %w", dir, err)
	}
	return nil
}

// bbolt's on-disk header (go.etcd.io/bbolt/internal/common, format version 2):
// each of the first two pages holds a 16-byte page header and then the meta.
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	pageHeaderSize = 16
	metaSumOffset  = 56 // magic, version, pageSize, flags (4 each), root (16), freelist, pgid, txid (8 each)
	metaSize       = metaSumOffset + 8
)

type boltMeta struct {
	pageSize uint32
	pgid     uint64 // high-water mark: pages [0, pgid) are in use
	txid     uint64
}

// parseMeta reads a meta page as bbolt does; ok is false when it is not valid.
func parseMeta(b []byte) (m boltMeta, ok bool) {
	if len(b) < pageHeaderSize+metaSize {
		return m, false
	}
	b = b[pageHeaderSize : pageHeaderSize+metaSize]
	le := binary.NativeEndian // bbolt writes its structs in the machine's byte order
	h := fnv.New64a()
	h.Write(b[:metaSumOffset])
	if le.Uint32(b[0:]) != boltMagic || le.Uint32(b[4:]) != boltVersion || h.Sum64() != le.Uint64(b[metaSumOffset:]) {
		return m, false
	}
	return boltMeta{pageSize: le.Uint32(b[8:]), pgid: le.Uint64(b[40:]), txid: le.Uint64(b[48:])}, true
}

// precheck catches what bbolt would not report as an error: a file cut
// short makes bbolt touch pages past its end, which is a SIGBUS, not an error.
func precheck(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("store: cannot read %s: %w; check the owner and permissions of the file", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("store: cannot read %s: %w", path, err)
	}
	size := fi.Size()
	if size == 0 {
		return fmt.Errorf("store: %s is empty (0 bytes): it was truncated, since a new store is never left empty; %s", path, remedy)
	}
	head := make([]byte, pageHeaderSize+metaSize)
	var metas []boltMeta
	if n, _ := f.ReadAt(head, 0); n == len(head) {
		if m, ok := parseMeta(head); ok {
			metas = append(metas, m)
		}
	}
	// The second meta page sits one page in; guess the usual sizes when the
	// first page does not tell.
	offsets := []int64{4096, 8192, 16384, 65536}
	if len(metas) == 1 {
		offsets = []int64{int64(metas[0].pageSize)}
	}
	for _, off := range offsets {
		if n, _ := f.ReadAt(head, off); n == len(head) {
			if m, ok := parseMeta(head); ok {
				metas = append(metas, m)
				break
			}
		}
	}
	if len(metas) == 0 {
		return fmt.Errorf("store: %s (%d bytes) is corrupt or not a presence-sidecar store: neither of its two header pages is valid; %s", path, size, remedy)
	}
	for _, m := range metas {
		if want := int64(m.pgid) * int64(m.pageSize); size < want {
			return fmt.Errorf("store: %s is truncated: it has %d bytes, its header says %d; %s", path, size, want, remedy)
		}
	}
	return nil
}

// guard turns a panic or a memory fault (a bad page in the mapped file) in fn
// into an error.
func guard(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = panicError{r}
		}
	}()
	return fn()
}

// panicError is a panic inside bbolt: what it does on a page it cannot make
// sense of.
type panicError struct{ v any }

func (p panicError) Error() string { return fmt.Sprintf("panic: %v", p.v) }

type storeCounts struct{ sessions, outbox, dead, bots int }

// verify checks the schema version, adds buckets a newer schema-compatible
// build may lack, runs bbolt's consistency check and decodes every record,
// so that damage stops start-up instead of surfacing later as lost state.
func (b *Bolt) verify() (counts storeCounts, err error) {
	var version uint64
	err = guard(func() error {
		return b.db.View(func(tx *bbolt.Tx) error {
			meta := tx.Bucket(bucketMeta)
			if meta == nil {
				return errors.New("no meta bucket")
			}
			v := meta.Get(keySchema)
			if len(v) != 8 {
				return errors.New("no schema version")
			}
			version = binary.BigEndian.Uint64(v)
			return nil
		})
	})
	if err != nil {
		return counts, fmt.Errorf("store: %s is corrupt or not a presence-sidecar store (%v); %s", b.path, err, remedy)
	}
	if version > schemaVersion {
		return counts, fmt.Errorf("store: %s was written by a newer presence-sidecar (schema version %d; this build reads up to %d): "+
			"run that version or newer, or restore a backup made by this one", b.path, version, schemaVersion)
	}
	if version == 0 {
		return counts, fmt.Errorf("store: %s has an invalid schema version 0; %s", b.path, remedy)
	}
	// Read-only until the file has passed: a refused file is left untouched.
	//
	// First every page reachable from the root is read here, where a wild
	// page pointer is a recoverable fault (guard); only then bbolt's own
	// check, which runs on a goroutine of its own, looks at the rest (the
	// free list, pages neither used nor free).
	decoders := map[string]func() any{
		string(bucketSessions): func() any { return new(Session) },
		string(bucketOutbox):   func() any { return new(Notification) },
		string(bucketDead):     func() any { return new(Notification) },
		string(bucketRecent):   func() any { return new(Notification) },
		string(bucketBots):     func() any { return new(BotSettings) },
	}
	perBucket := map[string]int{}
	var deadCounted uint64
	err = guard(func() error {
		return b.db.View(func(tx *bbolt.Tx) error {
			if err := tx.ForEach(func(name []byte, bk *bbolt.Bucket) error {
				into := decoders[string(name)]
				return walk(bk, func(k, v []byte) error {
					perBucket[string(name)]++
					if into == nil {
						return nil
					}
					return decode(v, into(), string(name), k)
				})
			}); err != nil {
				return err
			}
			deadCounted = deadCount(tx)
			return nil
		})
	})
	if err != nil {
		return counts, fmt.Errorf("store: %s is corrupt: %v; %s", b.path, err, remedy)
	}
	counts = storeCounts{sessions: perBucket[string(bucketSessions)], outbox: perBucket[string(bucketOutbox)],
		dead: perBucket[string(bucketDead)], bots: perBucket[string(bucketBots)]}

	var problems []string
	err = guard(func() error {
		return b.db.View(func(tx *bbolt.Tx) error {
			for cerr := range tx.Check() {
				if len(problems) < 5 {
					problems = append(problems, cerr.Error())
				}
			}
			return nil
		})
	})
	if err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return counts, fmt.Errorf("store: %s is corrupt (%s); %s", b.path, strings.Join(problems, "; "), remedy)
	}

	// Buckets a later schema-compatible build added, and the dead-letter
	// count (only the cap depends on it: repair it, don't refuse the file).
	if err := b.db.Update(func(tx *bbolt.Tx) error {
		if err := createBuckets(tx); err != nil {
			return err
		}
		if deadCounted != uint64(counts.dead) {
			return setDeadCount(tx, uint64(counts.dead))
		}
		return nil
	}); err != nil {
		return counts, fmt.Errorf("store: %s: %w", b.path, err)
	}
	return counts, nil
}

// createBuckets adds every bucket of the schema that tx lacks.
func createBuckets(tx *bbolt.Tx) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return nil
}

// walk calls fn for every key of bk and of the buckets nested in it.
func walk(bk *bbolt.Bucket, fn func(k, v []byte) error) error {
	return bk.ForEach(func(k, v []byte) error {
		if v == nil {
			if nested := bk.Bucket(k); nested != nil {
				return walk(nested, fn)
			}
		}
		return fn(k, v)
	})
}
