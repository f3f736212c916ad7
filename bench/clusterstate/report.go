package main

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/presence-sidecar/presence-sidecar/bench/runstat"

	"github.com/presence-sidecar/presence-sidecar/store/redisstate"
)

// stat of one figure over the runs.
func (r *Report) stat(name string) (med, lo, hi float64, ok bool) { return runstat.Of(r.Runs, name) }

func (r *Report) med(name string) float64 { m, _, _, _ := r.stat(name); return m }

// cell is the median, with the range over the runs when they differ by
// more than the printed precision.
func (r *Report) cell(name string, format func(float64) string) string {
	m, lo, hi, ok := r.stat(name)
	return runstat.Cell(m, lo, hi, ok, len(r.Runs), format, "–")
}

func bytesf(v float64) string { return fmt.Sprintf("%.0f B", v) }
func ratef(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.1fk/s", v/1000)
	}
	return fmt.Sprintf("%.0f/s", v)
}
func usf(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.2f ms", v/1000)
	}
	return fmt.Sprintf("%.0f µs", v)
}
func coresf(v float64) string { return fmt.Sprintf("%.2f", v) }

func verdict(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// Markdown is the report: memory, then throughput, then latency.
func (r *Report) Markdown() string {
	var b strings.Builder
	c, d := r.Config, r.Detail
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	p("# Cluster-mode state in Redis: memory, throughput, latency")
	p("")
	p("%s; redis-server %s (`--save '' --appendonly no`), one instance on loopback; Go %s, %d CPUs, GOMAXPROCS %d.",
		r.Started.UTC().Format(time.DateOnly), r.Redis, runtime.Version(), runtime.NumCPU(), runtime.GOMAXPROCS(0))
	p("Medians of %d runs (each on a fresh redis-server), range in brackets where runs differ.", len(r.Runs))
	p("Workload: %d sessions (UUID ids, traceparent 55 chars, bot %q, connection mode, interval %v), prefix %q, replica id %q (%d chars), %d shards (≈%d sessions per shard), %d goroutines, rueidis auto-pipelining.",
		c.Sessions, c.Bot, c.Interval, c.Prefix, c.Replica, len(c.Replica), 64, d.PerShard, c.Conc)
	p("")

	p("## Memory per session")
	p("")
	p("`Δ used_memory` is INFO memory's growth over the %d sessions, per session: everything Redis allocated for them (keys, the main and expires dictionaries' entries and buckets, the shard sets). `MEMORY USAGE` is of the keys themselves (`SAMPLES 0`): the session hash (mean of up to 500), and each shard key summed over the 64 shards, per session.", c.Sessions)
	p("")
	p("| state | Δ used_memory / session | MEMORY USAGE session hash | shard keys, per session | goal |")
	p("|---|---|---|---|---|")
	liveGoal := 250.0 + 120.0
	p("| live: 1 connection on 1 replica (hash + member of `r:REPLICA`) | %s | %s | `r:REPLICA` %s (%s) | ≤ %s (250 + 120): %s |",
		r.cell("mem.live", bytesf), r.cell("mu.hash.live", bytesf), r.cell("mu.rset", bytesf), d.Encodings["rset"],
		bytesf(liveGoal), verdict(r.med("mem.live") <= liveGoal))
	p("| **per live connection**: one more, on a 2nd replica (its `c:ID` field + member of that replica's set) | %s | hash grows %s → %s | | ≤ 120 B: %s |",
		r.cell("mem.conn2", bytesf), r.cell("mu.hash.live", bytesf), r.cell("mu.hash.live2", bytesf), verdict(r.med("mem.conn2") <= 120))
	perSession := r.med("mem.live") - r.med("mem.conn2")
	p("| **per session**: live minus its connection | %s | | | ≤ 250 B: %s |", bytesf(perSession), verdict(perSession <= 250))
	p("| live, handed over (Handoff on) | %s | | | |", r.cell("mem.handed", bytesf))
	p("| disconnected, deadline ahead (hash with TTL + member of `due`) | %s | %s | `due` %s (%s) | ≤ 250 B: %s |",
		r.cell("mem.disc", bytesf), r.cell("mu.hash.disc", bytesf), r.cell("mu.due", bytesf), d.Encodings["due"], verdict(r.med("mem.disc") <= 250))
	p("| … the same, `due` kept as a listpack (CONFIG SET zset-max-listpack-entries 1024) | %s | | `due` %s (%s) | ≤ 250 B: %s |",
		r.cell("mem.disclp", bytesf), r.cell("mu.duelp", bytesf), d.Encodings["duelp"], verdict(r.med("mem.disclp") <= 250))
	p("| decided absent, not handed over (hash with TTL) | %s | %s | | |", r.cell("mem.absent", bytesf), r.cell("mu.hash.absent", bytesf))
	p("| decided absent, handed over, /expire queued, undelivered | %s | %s | `q:SID` %s (%s), `ready` %s (%s) | |",
		r.cell("mem.absentq", bytesf), r.cell("mu.hash.absentq", bytesf), r.cell("mu.queue", bytesf), d.Encodings["queue"],
		r.cell("mu.ready", bytesf), d.Encodings["ready"])
	p("")
	p("Encodings: session hash %s; thresholds %s.", d.Encodings["hash.live"], thresholds(d.Thresholds))
	p("")

	p("### A live session's hash, field by field")
	p("")
	p("Listpack bytes of each field and value element (the model in listpack.go: an integer-looking value is stored as an integer, 1–9 bytes; a string as 1 + length; each element + 1 back-length byte). Sample key `%s` (%d chars).", d.SampleKey, len(d.SampleKey))
	p("")
	p("| field | value | bytes |")
	p("|---|---|---|")
	fields := slices.Clone(d.Fields)
	slices.SortStableFunc(fields, func(a, b fieldCost) int { return b.Bytes - a.Bytes })
	sum := 0
	for _, fc := range fields {
		v := fc.Value
		if len(v) > 24 {
			v = v[:21] + "… (" + strconv.Itoa(len(fc.Value)) + " chars)"
		}
		p("| `%s` | `%s` | %d |", fc.Field, v, fc.Bytes)
		sum += fc.Bytes
	}
	keyAlloc := sdsAlloc(len(d.SampleKey))
	p("| listpack header + end | | 7 |")
	p("| **listpack** | %d fields | **%d** → jemalloc %d |", len(fields), sum+7, jemallocSize(sum+7))
	p("| key name (sds) | %d chars | %d |", len(d.SampleKey), keyAlloc)
	p("| robj + dictEntry (as MEMORY USAGE counts them) | | 16 + 24 |")
	p("| **model** vs **MEMORY USAGE** of the sample | | **%d** vs **%d** %s |", d.Model, d.MU, map[bool]string{true: "(agree)", false: "(disagree: the model is off)"}[d.Model == d.MU])
	p("")
	p("Not in MEMORY USAGE but in used_memory: the dictEntry's real allocation (24 → 32 B), the main dictionary's bucket (8 B × table size ÷ keys), an expires entry once the hash has a TTL.")
	p("")

	p("### What would change it (measured: %d hashes written with HSET in each layout)", c.Sessions)
	p("")
	p("| layout of the session hash (live, 1 connection) [encoding] | Δ used_memory / session | MEMORY USAGE | vs control |")
	p("|---|---|---|---|")
	ctl := r.med("whatif.0")
	for i, name := range d.WhatIf {
		k := "whatif." + strconv.Itoa(i)
		diff := r.med(k) - ctl
		p("| %s | %s | %s | %+.0f B |", name, r.cell(k, bytesf), r.cell("whatif.mu."+strconv.Itoa(i), bytesf), diff)
	}
	p("")

	p("## Throughput")
	p("")
	p("| figure | median (range) | goal | met |")
	p("|---|---|---|---|")
	p("| connection events/s: Conns open + close, %d goroutines, closed loop | %s | ≥ 20,000/s | %s |", c.Conc, r.cell("events.rate", ratef), verdict(r.med("events.rate") >= 20000))
	p("| … Redis CPU meanwhile (cores) | %s | | |", r.cell("events.srv.cpu", coresf))
	p("| decisions/s: Fire over 64 shards, limit 500, one sweeper; not handed over | %s | ≥ 5,000/s | %s |", r.cell("fire.rate", ratef), verdict(r.med("fire.rate") >= 5000))
	p("| decisions/s, handed over (each queues its /expire) | %s | ≥ 5,000/s | %s |", r.cell("fireq.rate", ratef), verdict(r.med("fireq.rate") >= 5000))
	p("| decisions/s, handed over, limit %d (redisstate.FireBatch, the engine's) | %s | ≥ 5,000/s | %s |", redisstate.FireBatch, r.cell("fireqb.rate", ratef), verdict(r.med("fireqb.rate") >= 5000))
	p("| … Redis CPU meanwhile (cores) | %s | | |", r.cell("fireq.srv.cpu", coresf))
	p("| notifications delivered/s (Claim ≤ 16 = handoff.DefaultConcurrency, Ack each from 16 goroutines, repeat; webhook itself free) | %s | | |", r.cell("deliver.rate", ratef))
	p("| sessions reaped/s (Reap of a dead replica, 64 shards) | %s | | |", r.cell("reap.rate", ratef))
	p("| Activity calls/s, %d goroutines | %s | | |", c.Conc, r.cell("activity.rate", ratef))
	p("| Handoff calls/s, %d goroutines | %s | | |", c.Conc, r.cell("handoff.rate", ratef))
	p("")

	p("## Latency per script")
	p("")
	p("Client: each call's time in the Go client, exact percentiles of all calls. Redis: INFO commandstats `usec_per_call` and INFO latencystats of `evalsha` over the phase (both scripts of a phase together, e.g. open and close), i.e. the script's own run time without the queueing in front of it. `≥1ms` is LATENCY LATEST's worst `command` event (ms, threshold 1 ms; — none).")
	p("")
	p("In a closed loop the client's latency is mostly the queue in front of Redis (Little's law: goroutines ÷ calls/s, e.g. 64 ÷ 33k/s ≈ 2 ms): the paced and 1-goroutine rows are the latencies a replica sees below saturation; the Redis columns are the scripts' own cost. Client, Go runtime and Redis share 2 cores.")
	p("")
	p("| script | load | calls/s | client p50 | client p99 | Redis µs/call | Redis p50 | Redis p99 | Redis p99.9 | ≥1ms | p99 < 1 ms |")
	p("|---|---|---|---|---|---|---|---|---|---|---|")
	row := func(script, load, ph, calls string, rate string) {
		slow := "—"
		if v := r.med(ph + ".srv.slow"); v > 0 {
			slow = fmt.Sprintf("%.0f ms", v)
		}
		met := r.med(ph+".srv.p99") < 1000
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | Redis %s, client %s |", script, load, rate,
			r.cell(calls+".p50", usf), r.cell(calls+".p99", usf), r.cell(ph+".srv.usec", fmtUsec),
			r.cell(ph+".srv.p50", usf), r.cell(ph+".srv.p99", usf), r.cell(ph+".srv.p999", usf), slow,
			verdict(met), verdict(r.med(calls+".p99") < 1000))
	}
	closed := fmt.Sprintf("%d goroutines, closed loop", c.Conc)
	paced := fmt.Sprintf("%d goroutines, paced %d/s", c.Conc, c.Rate)
	row("Conns (open)", closed, "events", "events.open", r.cell("events.rate", ratef)+" (open+close)")
	row("Conns (close)", closed, "events", "events.close", "")
	row("Conns (open)", paced, "paced", "paced.open", r.cell("paced.rate", ratef))
	row("Conns (close)", paced, "paced", "paced.close", "")
	row("Conns (open)", "1 goroutine", "serial", "serial.open", r.cell("serial.rate", ratef))
	row("Conns (close)", "1 goroutine", "serial", "serial.close", "")
	row("Activity", closed, "activity", "activity.activity", r.cell("activity.rate", ratef))
	row("Activity", "1 goroutine", "activity1", "activity1.activity", r.cell("activity1.rate", ratef))
	row("Handoff", closed, "handoff", "handoff.handoff", r.cell("handoff.rate", ratef))
	row("Handoff", "1 goroutine", "handoff1", "handoff1.handoff", r.cell("handoff1.rate", ratef))
	row("Renew", "1 goroutine", "renew", "renew.renew", r.cell("renew.rate", ratef))
	batch := func(name string) string { return fmt.Sprintf("%.0f", r.med(name+".batch")) }
	row("Fire, limit 500: ≈"+batch("fire")+" decisions a call", "sweep", "fire", "fire.call", "")
	row("Fire, limit 500, handed over (queues /expire): ≈"+batch("fireq")+" a call", "sweep", "fireq", "fireq.call", "")
	row(fmt.Sprintf("Fire, limit %d (the engine's), handed over: ≈", redisstate.FireBatch)+batch("fireqb")+" a call", "sweep", "fireqb", "fireqb.call", "")
	row("Fire, nothing due", "1 goroutine", "fire0", "fire0.fire", r.cell("fire0.rate", ratef))
	row("Claim, 16 leases a call (Redis: Claim and Ack together)", "1 deliverer", "deliver", "deliver.claim", "")
	row("Ack (delivered) (Redis: Claim and Ack together)", "16 at once", "deliver", "deliver.ack", "")
	row(fmt.Sprintf("Reap, ≈%d sessions a call", d.PerShard), "64 shards in turn", "reap", "reap.call", "")
	p("")
	p("Redis's own time per decision (usec_per_call × calls ÷ decisions): %s not handed over, %s handed over (limit 500), %s (limit redisstate.FireBatch, as the engine sweeps). A Fire call blocks Redis for about limit × that; the engine's sweep tick is 250 ms, so at 5,000 decisions/s a call has ≈20 due.",
		r.cell("fire.srv.perdec", fmtUsec), r.cell("fireq.srv.perdec", fmtUsec), r.cell("fireqb.srv.perdec", fmtUsec))
	p("Reap blocks Redis for a whole shard of the dead replica's sessions in one call (≈%d here).", d.PerShard)
	return b.String()
}

func fmtUsec(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.2f ms", v/1000)
	}
	return fmt.Sprintf("%.1f", v)
}

func thresholds(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] != "?" {
			parts = append(parts, "`"+k+" "+m[k]+"`")
		}
	}
	return strings.Join(parts, ", ")
}
