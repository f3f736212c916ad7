package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// verdict is what the receiver got against what the sessions did.
type verdict struct {
	reconnects, ambiguous, ambiguousDecided int
	unseenReturns                           int // returns the kill cut before they reached Redis
	unseenFirsts                            int // first connections the kill cut before they reached Redis
	absences, returns, finals, killedAway   int

	wantOff, wantOn, gotOff, gotOn int
	missingOff, missingOn          int
	dupOff, dupOn                  int // decisions beyond one per absence (distinct webhook-ids)
	early                          int // return messages before their /expire
	unexpected                     int // notifications of reconnects, or of no time away
	premature                      int // an /expire more than a second before its interval could have elapsed

	lags      []time.Duration // /expire received − (went away + interval), not killed, during the churn
	endLags   []time.Duration // the same, for the sessions connected when the churn ended (all away at once)
	takeovers []time.Duration // a killed connection's /expire received − the kill
	backLags  []time.Duration // return message received − the client began to come back
	examples  []string
	failing   []*session // the sessions with a failure
	unclear   []*session // sessions with an ambiguous reconnect (the first 100)
}

// timeline describes a session's aways and notifications, in time order.
func timeline(s *session) string {
	type ev struct {
		at   time.Time
		text string
	}
	var evs []ev
	names := [...]string{kReconnect: "reconnect", kAbsence: "absence", kAmbiguous: "ambiguous"}
	for i, a := range s.aways {
		evs = append(evs, ev{a.start, fmt.Sprintf("away %d (%s%s) begins", i, names[a.kind], killedNote(a))})
		if !a.end.IsZero() {
			evs = append(evs, ev{a.end, fmt.Sprintf("away %d ends (linked after %v)", i, a.gap.Round(time.Millisecond))})
		}
	}
	s.mu.Lock()
	for _, n := range s.notes {
		evs = append(evs, ev{n.at, fmt.Sprintf("received %s %s", kindName(n.offline), n.id)})
	}
	s.mu.Unlock()
	slices.SortStableFunc(evs, func(a, b ev) int { return a.at.Compare(b.at) })
	var b strings.Builder
	fmt.Fprintf(&b, "%s:", s.id)
	for _, e := range evs {
		fmt.Fprintf(&b, "\n  %s %s", e.at.Format("15:04:05.000"), e.text)
	}
	return b.String()
}

func (v *verdict) example(format string, args ...any) {
	if len(v.examples) < 12 {
		v.examples = append(v.examples, fmt.Sprintf(format, args...))
	}
}

func (v *verdict) failures() int {
	return v.missingOff + v.missingOn + v.dupOff + v.dupOn + v.early + v.unexpected
}

// check compares each session's notifications with its aways.
func check(sessions []*session, interval time.Duration, killAt, churnEnd time.Time) *verdict {
	v := &verdict{}
	for _, s := range sessions {
		before := v.failures()
		s.mu.Lock()
		notes := append([]note(nil), s.notes...)
		s.mu.Unlock()
		offs := make([][]note, len(s.aways))
		ons := make([][]note, len(s.aways))

		// An /expire belongs to the last away that began before it came (the
		// client waits for it before it comes back); a return message to the
		// away of the /expire before it, not yet answered (a session's
		// notifications are delivered one at a time, in order, however late).
		// One with no such /expire is early.
		answering := -1
		for _, n := range notes {
			if !n.offline {
				if answering < 0 {
					v.early++
					v.example("%s: return message %s at %s before its /expire", s.id, n.id, n.at.Format("15:04:05.000"))
					continue
				}
				ons[answering] = append(ons[answering], n)
				answering = -1
				continue
			}
			k := -1
			for i, a := range s.aways {
				if !a.start.After(n.at) {
					k = i
				}
			}
			if k < 0 {
				v.unexpected++
				v.example("%s: /expire at %s with no time away before it", s.id, n.at.Format("15:04:05.000"))
				continue
			}
			offs[k] = append(offs[k], n)
			answering = k
		}

		for i, a := range s.aways {
			nOff, nOn := len(offs[i]), len(ons[i])
			v.gotOff += nOff
			v.gotOn += nOn
			switch a.kind {
			case kReconnect:
				v.reconnects++
				if nOff+nOn > 0 {
					v.unexpected += nOff + nOn
					v.example("%s: a reconnect (away %s, back after %v%s) got %d /expire and %d return messages",
						s.id, a.start.Format("15:04:05.000"), a.gap.Round(time.Millisecond), killedNote(a), nOff, nOn)
				}
			case kAmbiguous:
				v.reconnects++
				v.ambiguous++
				if len(v.unclear) < 100 {
					v.unclear = append(v.unclear, s)
				}
				// Either nothing, or one of each.
				if nOff > 0 {
					v.ambiguousDecided++
					v.wantOff++
					v.wantOn++
				}
				v.tally(s, a, i, nOff, nOn, 1, 1, offs[i])
			case kAbsence:
				if a.unseenReturn && nOff == 0 {
					v.unseenReturns++ // the return was cut by the kill: the absence before goes on
					continue
				}
				if a.unseenFirst && nOff == 0 {
					v.unseenFirsts++ // Redis never had the session: nothing to decide
					continue
				}
				v.absences++
				if a.killed {
					v.killedAway++
				}
				wantOn := 1
				if i+1 < len(s.aways) && s.aways[i+1].unseenReturn && len(offs[i+1]) == 0 {
					wantOn = min(nOn, 1) // its return did not count; a later one may have
					v.returns += wantOn
				} else if a.end.IsZero() {
					v.finals++
					wantOn = 0
				} else {
					v.returns++
				}
				v.wantOff++
				v.wantOn += wantOn
				if nOff == 0 {
					v.missingOff++
					v.example("%s: no /expire for the absence from %s%s", s.id, a.start.Format("15:04:05.000"), killedNote(a))
				}
				v.tally(s, a, i, nOff, nOn, 1, wantOn, offs[i])
				if nOn > 0 && wantOn > 0 {
					v.backLags = append(v.backLags, ons[i][0].at.Sub(a.end))
				}
				if nOff > 0 {
					if a.killed {
						v.takeovers = append(v.takeovers, offs[i][0].at.Sub(killAt))
					} else if a.start.Before(churnEnd) {
						v.lags = append(v.lags, offs[i][0].at.Sub(a.start.Add(interval)))
					} else {
						v.endLags = append(v.endLags, offs[i][0].at.Sub(a.start.Add(interval)))
					}
				}
			}
			if nOff > 0 && offs[i][0].at.Before(a.start.Add(interval-time.Second)) {
				v.premature++
				v.example("%s: /expire at %s for an away from %s", s.id, offs[i][0].at.Format("15:04:05.000"), a.start.Format("15:04:05.000"))
			}
		}
		if v.failures() > before {
			v.failing = append(v.failing, s)
		}
	}
	slices.Sort(v.lags)
	slices.Sort(v.endLags)
	slices.Sort(v.backLags)
	slices.Sort(v.takeovers)
	return v
}

// tally counts one away's duplicates and missing return message. An
// ambiguous away's zero /expire is right (nothing decided); its one
// /expire wants one return message.
func (v *verdict) tally(s *session, a away, i, nOff, nOn, maxOff, wantOn int, offs []note) {
	if nOff > maxOff {
		v.dupOff += nOff - maxOff
		ids := make([]string, len(offs))
		for j, n := range offs {
			ids[j] = n.id
		}
		v.example("%s: %d /expire (webhook-ids %v) for one absence from %s", s.id, nOff, ids, a.start.Format("15:04:05.000"))
	}
	if a.kind == kAmbiguous && nOff == 0 {
		wantOn = 0
	}
	if a.kind == kAbsence && nOff == 0 {
		wantOn = 0 // no decision, no return (the /expire is counted missing)
		if !a.end.IsZero() {
			v.missingOn++
		}
	}
	switch {
	case nOn > wantOn && wantOn == 0:
		v.unexpected += nOn
		v.example("%s: %d return messages for the away from %s with no /expire", s.id, nOn, a.start.Format("15:04:05.000"))
	case nOn > wantOn:
		v.dupOn += nOn - wantOn
		v.example("%s: %d return messages for one return (away from %s)", s.id, nOn, a.start.Format("15:04:05.000"))
	case nOn < wantOn:
		v.missingOn += wantOn - nOn
		v.example("%s: no return message for the return at %s (away from %s%s)", s.id, a.end.Format("15:04:05.000"), a.start.Format("15:04:05.000"), killedNote(a))
	}
}

func kindName(offline bool) string {
	if offline {
		return "/expire"
	}
	return "return message"
}

func killedNote(a away) string {
	if a.killed {
		return fmt.Sprintf(", dropped by the kill %v after its link", a.age.Round(time.Millisecond))
	}
	return ""
}

// pct returns the p-th percentile of sorted ds.
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(p / 100 * float64(len(ds)-1))
	return ds[i]
}
