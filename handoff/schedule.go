package handoff

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/store"
)

const (
	// pollInterval bounds the time between reads of the whole outbox: a
	// safety net for notes committed by someone who did not wake us (another
	// replica, a bug) and for any drift between Run's view and the store.
	pollInterval = 30 * time.Second
	// timerSlack treats heads due this soon as due now, so that retries
	// scheduled a few milliseconds apart share one timer firing.
	timerSlack = 5 * time.Millisecond
	// Between reads Run works from its own view of the outbox, which it keeps
	// up to date with the reports of its own attempts. Reads are spaced:
	// after a Wake at least wakeReadGap after the previous read, on a timer
	// at least timerReadGap, so a burst of commits or a dead platform costs
	// at most ~10 reads/s. And a read is incremental (Store.PendingAfter the
	// highest Seq seen: only what was committed or replayed since), so it
	// costs what it returns, not the depth of the outbox; the whole outbox
	// is read only at start, after a failed store write and every
	// pollInterval (docs/ARCHITECTURE.md, "Delivery").
	wakeReadGap  = 100 * time.Millisecond
	timerReadGap = time.Second
)

// Run delivers the outbox until ctx ends, then waits for the attempts it
// started (each bounded by Timeout, so what came of it is recorded) and
// returns nil.
//
// Only Run's goroutine decides what to send; attempts report back to it, and a
// session stays "in flight" until its attempt's store write has completed, so
// a stale read can never resend what was just delivered (docs/ARCHITECTURE.md,
// "Concurrency" and "Delivery").
func (d *Deliverer) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("handoff: Run is already running")
	}
	defer d.running.Store(false)
	if err := d.dead.load(d.o.Store); err != nil {
		// Degraded, not stopped: only a return message whose /expire died
		// before this start could then slip through.
		d.log.Error("handoff: reading the dead letters failed", zap.Error(err))
	}
	if d.ownClient {
		defer d.client.CloseIdleConnections()
	}

	s := newScheduler(d)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if time.Since(s.lastFull) >= pollInterval {
			s.reload, s.full = true, true
		}
		next := s.read()
		if ctx.Err() == nil {
			next = earliest(next, s.dispatch())
		}
		if !s.reload { // else read has said when to look again
			next = earliest(next, d.now().Add(pollInterval-time.Since(s.lastFull)))
		}
		timer.Reset(max(0, next.Sub(d.now())))

		select {
		case <-ctx.Done():
			s.attempts.Wait()
			return nil
		case r := <-s.reports:
			s.apply(r)
			// Take every report already waiting, so a burst of ended attempts
			// costs one dispatch, not one each.
			for drained := false; !drained; {
				select {
				case r := <-s.reports:
					s.apply(r)
				default:
					drained = true
				}
			}
			d.depth.Store(int64(s.view.count))
		case <-d.wake:
			s.reload = true
		case <-timer.C:
			// Due retries are in the view; read what is new too unless we
			// just did (the poll is checked at the top of the loop).
			if time.Since(s.lastRead) >= timerReadGap {
				s.reload = true
			}
		}
	}
}

// earliest is the earlier of a and b, where zero means "none".
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// scheduler is Run's state: its view of the outbox and the attempts it
// started. Only Run's goroutine touches it, except reports and attempts,
// through which the attempts' goroutines hand back what came of them.
type scheduler struct {
	d        *Deliverer
	reports  chan attemptReport   // never blocks: at most Concurrency attempts run
	attempts sync.WaitGroup       // the attempts started and not yet reported
	view     outboxView           // the outbox as read, kept up to date with the reports
	inflight map[string]struct{}  // session ids with an attempt running
	hold     map[string]time.Time // notification id -> not before (after a failed store write)
	reload   bool                 // the store must be read again (start, Wake, timer, failed write, poll)
	full     bool                 // that read must be of the whole outbox (start, failed write, poll)
	lastRead time.Time            // when the last read completed (monotonic)
	lastFull time.Time            // when the last read of the whole outbox completed (monotonic)
	readBO   time.Duration        // backoff between failing outbox reads
}

func newScheduler(d *Deliverer) *scheduler {
	return &scheduler{
		d:        d,
		reports:  make(chan attemptReport, d.o.Concurrency),
		view:     newOutboxView(),
		inflight: map[string]struct{}{},
		hold:     map[string]time.Time{},
		reload:   true,
		full:     true,
		lastFull: time.Now(), // the first read is full anyway; the poll counts from here
	}
}

// read reads the outbox into the view when a reload is wanted and the
// wakeReadGap since the last read has passed: the whole outbox when full is
// set, else only what follows the highest Seq seen. It returns when to look
// again for the read's sake (zero: no need): when the gap will have passed, or
// when a failed read is retried.
func (s *scheduler) read() time.Time {
	d := s.d
	if !s.reload {
		return time.Time{}
	}
	if wait := wakeReadGap - time.Since(s.lastRead); wait > 0 {
		return d.now().Add(wait) // read when the gap has passed; until then use the view
	}
	// This read covers every Wake so far: drop a pending one, so that
	// wakes arriving before the read cost no second read.
	select {
	case <-d.wake:
	default:
	}
	var p []store.Notification
	var err error
	if s.full {
		p, err = d.o.Store.Pending()
	} else {
		// Seqs become visible in order (store.Store.PendingAfter), so this
		// misses nothing committed or replayed since the last read.
		p, err = d.o.Store.PendingAfter(s.view.lastSeq)
	}
	s.lastRead = time.Now()
	if err != nil {
		s.readBO = min(max(2*s.readBO, d.o.FirstRetry), min(d.o.RetryMaxDelay, 30*time.Second))
		next := d.now().Add(max(s.readBO, wakeReadGap))
		d.log.Error("handoff: reading the outbox failed", zap.Error(err), zap.Duration("retry_in", s.readBO))
		return next
	}
	if s.full {
		s.pruneHold(p, d.now())
		s.view.reset(p, s.inflight, s.hold, d.now().Add(timerSlack))
		s.full, s.lastFull = false, s.lastRead
	} else {
		s.view.add(p, s.inflight, s.hold)
	}
	s.reload, s.readBO = false, 0
	d.depth.Store(int64(s.view.count))
	return time.Time{}
}

// pruneHold drops holds that have passed or whose notification is not in p,
// a read of the whole outbox.
func (s *scheduler) pruneHold(p []store.Notification, now time.Time) {
	if len(s.hold) == 0 {
		return
	}
	live := make(map[string]struct{}, len(s.hold))
	for _, n := range p {
		if _, ok := s.hold[n.ID]; ok {
			live[n.ID] = struct{}{}
		}
	}
	for id, t := range s.hold {
		if _, ok := live[id]; !ok || !t.After(now) {
			delete(s.hold, id)
		}
	}
}

// apply folds one attempt's report into the view of the outbox and
// reschedules the session's head.
func (s *scheduler) apply(r attemptReport) {
	delete(s.inflight, r.n.SessionID)
	q := s.view.sessions[r.n.SessionID]
	if r.storeFailed {
		// The view keeps n as it was; the hold keeps it from being resent
		// at once, and a whole read sets the view straight.
		s.hold[r.n.ID] = r.holdUntil
		s.reload, s.full = true, true
	} else if q != nil && !s.view.record(q, r.n, r.removed) {
		return // the session has nothing left
	}
	if q != nil {
		s.view.place(q, s.hold)
	}
}

// dispatch starts an attempt for each session whose head (lowest Seq) is due
// and not in flight, up to Concurrency, and returns when the earliest head
// not yet due will be (zero: none). Later notes of a session wait for its head.
// When more heads are due than slots are free, those waiting longest go
// first, so that notes retrying early in the outbox cannot starve later ones.
// Its cost grows with the attempts it starts, not with the outbox.
func (s *scheduler) dispatch() time.Time {
	d := s.d
	s.view.promote(d.now().Add(timerSlack))
	for free := d.o.Concurrency - len(s.inflight); free > 0; free-- {
		q := s.view.popDue()
		if q == nil {
			break
		}
		n := q.notes[0]
		s.inflight[q.id] = struct{}{}
		s.attempts.Go(func() { s.reports <- d.attempt(n) })
	}
	return s.view.nextDue()
}

// waitingSince is when n became due: its retry time, or its creation.
func waitingSince(n store.Notification) time.Time {
	if !n.NextAttemptAt.IsZero() {
		return n.NextAttemptAt
	}
	return horizonStart(n)
}
