package store

import (
	"os"
	"time"

	"go.uber.org/zap"
)

// Knobs for the external tests (package store_test, which the conformance
// suite's import of store forces).

// TestBoltOptions are boltOptions with exported names.
type TestBoltOptions struct {
	LockTimeout time.Duration
	NoSync      bool
	DeadLimit   int
}

func OpenBoltWith(dir string, log *zap.Logger, o TestBoltOptions) (*Bolt, error) {
	opts := defaultBoltOptions()
	if o.LockTimeout != 0 {
		opts.lockTimeout = o.LockTimeout
	}
	if o.DeadLimit != 0 {
		opts.deadLimit = o.DeadLimit
	}
	opts.noSync = o.NoSync
	return openBolt(dir, log, opts)
}

func (m *Memory) SetDeadLimit(n int) { m.deadLimit = n }

const SchemaVersion = schemaVersion

// WritesPerTx is the average group-commit size so far.
func (b *Bolt) WritesPerTx() float64 {
	return float64(b.grouped.Load()) / float64(max(b.groups.Load(), 1))
}

// HighWater is the end of the pages in use in the store file at path, as its
// header says: a finer measure of growth than the file size, which bbolt
// grows in steps.
func HighWater(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer f.Close()
	var hw int64
	head := make([]byte, pageHeaderSize+metaSize)
	for _, off := range []int64{0, 4096} {
		if _, err := f.ReadAt(head, off); err == nil {
			if m, ok := parseMeta(head); ok {
				hw = max(hw, int64(m.pgid)*int64(m.pageSize))
			}
		}
	}
	return hw
}
