package handoff

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/presence-sidecar/presence-sidecar/store"
)

const (
	// pollInterval re-reads the outbox even without a Wake: a safety net for
	// notes committed by someone who did not wake us (another replica, a bug).
	pollInterval = 30 * time.Second
	// timerSlack treats heads due this soon as due now, so that retries
	// scheduled a few milliseconds apart share one timer firing.
	timerSlack = 5 * time.Millisecond
	// Between reads Run works from its own view of the outbox, which it keeps
	// up to date with the reports of its own attempts; reading the whole
	// outbox is what costs (a file or Redis), so reads are spaced: after a
	// Wake at least wakeReadGap after the previous read, on a timer at least
	// timerReadGap. A burst of commits or a dead platform thus costs at most
	// ~10 reads/s.
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
		next := s.read()
		if ctx.Err() == nil {
			next = earliest(next, s.dispatch())
		}
		next = earliest(next, d.now().Add(pollInterval))
		timer.Reset(max(0, next.Sub(d.now())))

		select {
		case <-ctx.Done():
			s.attempts.Wait()
			return nil
		case r := <-s.reports:
			s.apply(r)
			// Take every report already waiting, so a burst of ended attempts
			// costs one pass over the outbox, not one each.
			for drained := false; !drained; {
				select {
				case r := <-s.reports:
					s.apply(r)
				default:
					drained = true
				}
			}
			d.depth.Store(int64(len(s.view)))
		case <-d.wake:
			s.reload = true
		case <-timer.C:
			// Due retries are in the view; re-read too unless we just did.
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
	view     []store.Notification // the outbox as last read, kept up to date with the reports
	inflight map[string]struct{}  // session ids with an attempt running
	hold     map[string]time.Time // notification id -> not before (after a failed store write)
	seen     map[string]struct{}  // scratch for dispatch: sessions whose head was looked at
	reload   bool                 // the store must be read again (start, Wake, timer, failed write)
	lastRead time.Time            // when the last read completed (monotonic)
	readBO   time.Duration        // backoff between failing outbox reads
}

func newScheduler(d *Deliverer) *scheduler {
	return &scheduler{
		d:        d,
		reports:  make(chan attemptReport, d.o.Concurrency),
		inflight: map[string]struct{}{},
		hold:     map[string]time.Time{},
		seen:     map[string]struct{}{},
		reload:   true,
	}
}

// read reads the outbox into the view when a reload is wanted and the
// wakeReadGap since the last read has passed. It returns when to look again
// for the read's sake (zero: no need): when the gap will have passed, or when
// a failed read is retried.
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
	p, err := d.o.Store.Pending()
	s.lastRead = time.Now()
	if err != nil {
		s.readBO = min(max(2*s.readBO, d.o.FirstRetry), min(d.o.RetryMaxDelay, 30*time.Second))
		next := d.now().Add(max(s.readBO, wakeReadGap))
		d.log.Error("handoff: reading the outbox failed", zap.Error(err), zap.Duration("retry_in", s.readBO))
		return next
	}
	s.view, s.reload, s.readBO = p, false, 0
	d.depth.Store(int64(len(s.view)))
	s.pruneHold(d.now())
	return time.Time{}
}

// pruneHold drops holds that have passed or whose notification left the outbox.
func (s *scheduler) pruneHold(now time.Time) {
	if len(s.hold) == 0 {
		return
	}
	live := make(map[string]struct{}, len(s.hold))
	for _, n := range s.view {
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

// apply folds one attempt's report into the view of the outbox.
func (s *scheduler) apply(r attemptReport) {
	delete(s.inflight, r.n.SessionID)
	if r.storeFailed {
		s.hold[r.n.ID] = r.holdUntil
		s.reload = true
		return
	}
	for i := range s.view {
		if s.view[i].ID == r.n.ID {
			if r.removed {
				s.view = append(s.view[:i], s.view[i+1:]...)
			} else {
				s.view[i] = r.n
			}
			return
		}
	}
}

// dispatch starts an attempt for each session whose head (lowest Seq) is due
// and not in flight, up to Concurrency, and returns when the earliest head
// not yet due will be (zero: none). Later notes of a session wait for its head.
// When more heads are due than slots are free, those waiting longest go
// first, so that notes retrying early in the outbox cannot starve later ones.
func (s *scheduler) dispatch() time.Time {
	d := s.d
	clear(s.seen)
	now := d.now()
	free := d.o.Concurrency - len(s.inflight)
	var next time.Time
	var ready []store.Notification
	for _, n := range s.view {
		if _, ok := s.seen[n.SessionID]; ok {
			continue
		}
		s.seen[n.SessionID] = struct{}{}
		if _, busy := s.inflight[n.SessionID]; busy {
			continue
		}
		due := n.NextAttemptAt
		if h, ok := s.hold[n.ID]; ok && h.After(due) {
			due = h
		}
		if due.After(now.Add(timerSlack)) {
			next = earliest(next, due)
			continue
		}
		if free > 0 { // else an attempt's report wakes Run, which looks again then
			ready = append(ready, n)
		}
	}
	if len(ready) > free {
		slices.SortStableFunc(ready, func(a, b store.Notification) int { return waitingSince(a).Compare(waitingSince(b)) })
		ready = ready[:free]
	}
	for _, n := range ready {
		s.inflight[n.SessionID] = struct{}{}
		s.attempts.Go(func() { s.reports <- d.attempt(n) })
	}
	return next
}

// waitingSince is when n became due: its retry time, or its creation.
func waitingSince(n store.Notification) time.Time {
	if !n.NextAttemptAt.IsZero() {
		return n.NextAttemptAt
	}
	return horizonStart(n)
}
