package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
)

// Figures are one run's numbers by name; the report takes the median of
// each name over the runs.
type Figures map[string]float64

// Detail is what does not vary between runs (encodings, the cost of each
// field), kept from the last run.
type Detail struct {
	Encodings  map[string]string // what → OBJECT ENCODING
	Fields     []fieldCost       // a live session's hash, field by field
	Sample     map[string]string // that hash
	SampleKey  string
	Model, MU  int // keyModel of the sample vs its MEMORY USAGE
	LPBytes    int // the sample's listpack, bytes
	Thresholds map[string]string
	WhatIf     []string // names of the what-if variants, in order
	PerShard   int      // sessions per shard
}

type fieldCost struct {
	Field, Value string
	Bytes        int // listpack bytes of the field and its value elements
}

// memory measures what each state of a session costs Redis, two ways: the
// growth of INFO used_memory over n sessions (everything: keys, dictionary
// entries and buckets, expires), and MEMORY USAGE of the keys themselves.
func (c *Config) memory(ctx context.Context, srv *server, st *redisstate.State, ss []session, f Figures, det *Detail) error {
	n := len(ss)
	det.PerShard = n / redisstate.Shards
	det.Encodings = map[string]string{}
	det.Thresholds = map[string]string{}
	for _, k := range []string{"hash-max-listpack-entries", "hash-max-listpack-value", "zset-max-listpack-entries",
		"zset-max-listpack-value", "set-max-intset-entries", "set-max-listpack-entries", "list-max-listpack-size"} {
		det.Thresholds[k] = srv.config(ctx, k)
	}
	short := 5 * time.Millisecond // a deadline that is due by the time we sweep
	other := "0a1b2c3d"

	// fresh empties Redis and returns used_memory at rest. The scripts stay
	// loaded (FLUSHALL keeps them), so their cache is in the baseline.
	fresh := func() (int64, error) {
		if err := srv.do(ctx, "FLUSHALL", "SYNC").Error(); err != nil {
			return 0, err
		}
		return srv.settledMemory(ctx)
	}
	delta := func(name string, base int64) (int64, error) {
		m, err := srv.settledMemory(ctx)
		if err != nil {
			return 0, err
		}
		f["mem."+name] = float64(m-base) / float64(n)
		return m, nil
	}
	// perMember is MEMORY USAGE of the shard keys named suffix, summed,
	// per session.
	perMember := func(name, suffix string) error {
		var sum int64
		for sh := range redisstate.Shards {
			k := c.Prefix + "{" + strconv.Itoa(sh) + "}:" + suffix
			v, err := srv.memoryUsage(ctx, k)
			if err != nil && !rueidis.IsRedisNil(err) {
				return err
			}
			sum += v
			if sh == 0 {
				det.Encodings[name], _ = srv.do(ctx, "OBJECT", "ENCODING", k).ToString()
			}
		}
		f["mu."+name] = float64(sum) / float64(n)
		return nil
	}
	// perKey is the mean MEMORY USAGE of up to 500 of the sessions' keys
	// named kind ("s" the hash, "q" the queue).
	perKey := func(name, kind string) error {
		var sum, cnt int64
		for i := 0; i < n && cnt < 500; i += max(1, n/500) {
			k := c.Prefix + "{" + strconv.Itoa(redisstate.ShardOf(ss[i].ID)) + "}:" + kind + ":" + ss[i].ID
			v, err := srv.memoryUsage(ctx, k)
			if err != nil {
				return fmt.Errorf("MEMORY USAGE %s: %w", k, err)
			}
			sum += v
			cnt++
			if cnt == 1 {
				det.Encodings[name], _ = srv.do(ctx, "OBJECT", "ENCODING", k).ToString()
			}
		}
		f["mu."+name] = float64(sum) / float64(cnt)
		return nil
	}
	all := func(fn func(s session) error) error {
		return parallel(n, c.Conc, func(i int) error { return fn(ss[i]) })
	}

	// 1. Live: one connection on one replica; then a second live connection
	// of each session, on another replica: its c:REPLICA field and its
	// membership in that replica's set are what one more live connection
	// costs. (A second connection on the same replica costs nothing: the
	// count is absolute.)
	c.logf("memory: %d live sessions", n)
	base, err := fresh()
	if err != nil {
		return err
	}
	if err := all(func(s session) error { return c.open(ctx, st, s, c.Replica, c.Interval, false) }); err != nil {
		return err
	}
	m1, err := delta("live", base)
	if err != nil {
		return err
	}
	if err := perKey("hash.live", "s"); err != nil {
		return err
	}
	if err := perMember("rset", "r:"+c.Replica); err != nil {
		return err
	}
	det.SampleKey = c.Prefix + "{" + strconv.Itoa(redisstate.ShardOf(ss[0].ID)) + "}:s:" + ss[0].ID
	if det.Sample, err = srv.c.Do(ctx, srv.c.B().Hgetall().Key(det.SampleKey).Build()).AsStrMap(); err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(det.Sample)) {
		det.Fields = append(det.Fields, fieldCost{Field: k, Value: det.Sample[k], Bytes: lpEntry(k) + lpEntry(det.Sample[k])})
	}
	det.LPBytes = lpBytes(det.Sample)
	det.Model = keyModel(det.SampleKey, det.Sample)
	mu, err := srv.memoryUsage(ctx, det.SampleKey)
	if err != nil {
		return err
	}
	det.MU = int(mu)
	if err := all(func(s session) error { return c.open(ctx, st, s, other, c.Interval, false) }); err != nil {
		return err
	}
	if _, err := delta("conn2", m1); err != nil {
		return err
	}
	if err := perKey("hash.live2", "s"); err != nil {
		return err
	}

	// 2. Live and handed over to a human (Handoff on).
	c.logf("memory: %d handed-over live sessions", n)
	if base, err = fresh(); err != nil {
		return err
	}
	if err := all(func(s session) error {
		if err := c.open(ctx, st, s, c.Replica, c.Interval, false); err != nil {
			return err
		}
		_, err := st.Handoff(ctx, s.ID, c.Bot, true, s.Trace)
		return err
	}); err != nil {
		return err
	}
	if _, err := delta("handed", base); err != nil {
		return err
	}

	// 3. Disconnected, its deadline ahead: the hash (now with a TTL: an
	// entry in the expires dictionary) and its member in the due set.
	c.logf("memory: %d disconnected sessions awaiting their deadline", n)
	if base, err = fresh(); err != nil {
		return err
	}
	if err := all(func(s session) error {
		if err := c.open(ctx, st, s, c.Replica, c.Interval, false); err != nil {
			return err
		}
		return c.closeAll(ctx, st, s, c.Replica, c.Interval)
	}); err != nil {
		return err
	}
	if _, err := delta("disc", base); err != nil {
		return err
	}
	if err := perKey("hash.disc", "s"); err != nil {
		return err
	}
	if err := perMember("due", "due"); err != nil {
		return err
	}

	// 3b. The same with the due sets kept as listpacks: a config of
	// Redis, not of the scripts. With ≈N/64 members a shard's set passes
	// zset-max-listpack-entries (128 by default) from ≈8,000 disconnected
	// sessions on, and each member then costs a skiplist node and a
	// dictionary entry besides its string.
	old := srv.config(ctx, "zset-max-listpack-entries")
	if err := srv.do(ctx, "CONFIG", "SET", "zset-max-listpack-entries", "1024").Error(); err != nil {
		return err
	}
	c.logf("memory: %d disconnected sessions, zset-max-listpack-entries 1024", n)
	if base, err = fresh(); err != nil {
		return err
	}
	if err := all(func(s session) error {
		if err := c.open(ctx, st, s, c.Replica, c.Interval, false); err != nil {
			return err
		}
		return c.closeAll(ctx, st, s, c.Replica, c.Interval)
	}); err != nil {
		return err
	}
	if _, err := delta("disclp", base); err != nil {
		return err
	}
	if err := perMember("duelp", "due"); err != nil {
		return err
	}
	if err := srv.do(ctx, "CONFIG", "SET", "zset-max-listpack-entries", old).Error(); err != nil {
		return err
	}

	// 4. Decided absent: not handed over (the hash alone, forgotten after
	// ForgetAfter), and handed over, its /expire queued and not yet
	// delivered (the queue list and the ready set's member).
	for _, handed := range []bool{false, true} {
		name := "absent"
		if handed {
			name = "absentq"
		}
		c.logf("memory: %d sessions decided absent (handed over %v)", n, handed)
		if base, err = fresh(); err != nil {
			return err
		}
		if err := all(func(s session) error {
			if err := c.open(ctx, st, s, c.Replica, short, handed); err != nil {
				return err
			}
			return c.closeAll(ctx, st, s, c.Replica, short)
		}); err != nil {
			return err
		}
		time.Sleep(2 * short)
		if d, _, _, err := sweep(ctx, st, 500); err != nil || d != n {
			return fmt.Errorf("sweep decided %d of %d: %v", d, n, err)
		}
		if _, err := delta(name, base); err != nil {
			return err
		}
		if err := perKey("hash."+name, "s"); err != nil {
			return err
		}
		if handed {
			if err := perKey("queue", "q"); err != nil {
				return err
			}
			if err := perMember("ready", "ready"); err != nil {
				return err
			}
		}
	}
	return c.whatIf(ctx, srv, ss, f, det)
}

// variant is a what-if layout of the live session's hash: the same
// session written as another layout would store it, to measure what a
// change to the scripts would save before anyone makes it.
type variant struct {
	name string
	key  func(prefix, sid string, shard int) string
	hash func(h map[string]string, replica string) map[string]string
	conf [2]string // a CONFIG SET for the variant, reverted after
}

func sessionKey(prefix, sid string, shard int) string {
	return prefix + "{" + strconv.Itoa(shard) + "}:s:" + sid
}

func without(h map[string]string, fields ...string) map[string]string {
	out := maps.Clone(h)
	for _, f := range fields {
		delete(out, f)
	}
	return out
}

func variants() []variant {
	same := func(h map[string]string, _ string) map[string]string { return h }
	noTP := func(h map[string]string, _ string) map[string]string { return without(h, "tp") }
	shortVals := func(h map[string]string, replica string) map[string]string {
		out := maps.Clone(h)
		if out["mode"] == "connection" {
			out["mode"] = "c" // or 'a': one byte
		}
		// Unix seconds fit an int32 element (5 bytes), ms need 9; or ms
		// relative to the session's creation ("inc").
		for _, k := range []string{"seen", "inc"} {
			if v, ok := lpInt(out[k]); ok && v > 1e11 {
				out[k] = strconv.FormatInt(v/1000, 10)
			}
		}
		return out
	}
	shortReplica := func(h map[string]string, replica string) map[string]string {
		out := maps.Clone(h)
		if v, ok := out["c:"+replica]; ok {
			delete(out, "c:"+replica)
			out["c:r7"] = v // a short replica number instead of its pod name
		}
		return out
	}
	return []variant{
		{name: "as stored (control)", key: sessionKey, hash: same},
		{name: "without tp (traceparent)", key: sessionKey, hash: noTP},
		{name: "mode 1 byte, seen/inc in s", key: sessionKey, hash: shortVals},
		{name: "replica id 2 chars in c:ID", key: sessionKey, hash: shortReplica},
		{name: "all three above", key: sessionKey, hash: func(h map[string]string, r string) map[string]string {
			return shortReplica(shortVals(noTP(h, r), r), r)
		}},
		{name: "prefix \"ps:\" (14 chars shorter key)", key: func(_, sid string, shard int) string {
			return sessionKey("ps:", sid, shard)
		}, hash: same},
		{name: "hashtable (a value over hash-max-listpack-value)", key: sessionKey, hash: same,
			conf: [2]string{"hash-max-listpack-value", "32"}},
	}
}

// whatIf writes n copies of the sample's layout under each variant with
// HSET (pipelined: this is not a throughput figure) and measures the
// growth of used_memory per session. The control row says how much of the
// live figure is the hash itself.
func (c *Config) whatIf(ctx context.Context, srv *server, ss []session, f Figures, det *Detail) error {
	n := len(ss)
	det.WhatIf = nil
	for vi, v := range variants() {
		det.WhatIf = append(det.WhatIf, v.name)
		if err := srv.do(ctx, "FLUSHALL", "SYNC").Error(); err != nil {
			return err
		}
		var old string
		if v.conf[0] != "" {
			old = srv.config(ctx, v.conf[0])
			if err := srv.do(ctx, "CONFIG", "SET", v.conf[0], v.conf[1]).Error(); err != nil {
				return err
			}
		}
		base, err := srv.settledMemory(ctx)
		if err != nil {
			return err
		}
		h := v.hash(det.Sample, c.Replica)
		cmds := make(rueidis.Commands, 0, 1000)
		var key string
		for i := range ss {
			// Each session's own traceparent, so that no two values are the
			// same object; the rest is the sample's.
			fv := srv.c.B().Hset().Key(v.key(c.Prefix, ss[i].ID, redisstate.ShardOf(ss[i].ID))).FieldValue()
			for _, k := range slices.Sorted(maps.Keys(h)) {
				val := h[k]
				if k == "tp" {
					val = ss[i].Trace
				}
				fv = fv.FieldValue(k, val)
			}
			cmds = append(cmds, fv.Build())
			if len(cmds) == cap(cmds) || i == n-1 {
				for _, r := range srv.c.DoMulti(ctx, cmds...) {
					if err := r.Error(); err != nil {
						return err
					}
				}
				cmds = cmds[:0]
			}
			if i == 0 {
				key = v.key(c.Prefix, ss[i].ID, redisstate.ShardOf(ss[i].ID))
			}
		}
		m, err := srv.settledMemory(ctx)
		if err != nil {
			return err
		}
		f["whatif."+strconv.Itoa(vi)] = float64(m-base) / float64(n)
		if mu, err := srv.memoryUsage(ctx, key); err == nil {
			f["whatif.mu."+strconv.Itoa(vi)] = float64(mu)
		}
		enc, _ := srv.do(ctx, "OBJECT", "ENCODING", key).ToString()
		det.WhatIf[vi] += " [" + enc + "]"
		if v.conf[0] != "" {
			if err := srv.do(ctx, "CONFIG", "SET", v.conf[0], old).Error(); err != nil {
				return err
			}
		}
	}
	return srv.do(ctx, "FLUSHALL", "SYNC").Error()
}

// fieldsLine is the sample as "field=value" pairs, for the report.
func (d *Detail) fieldsLine() string {
	var b strings.Builder
	for i, fc := range d.Fields {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(fc.Field + "=" + fc.Value)
	}
	return b.String()
}
