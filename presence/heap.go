package presence

// due is one heap entry: look at s at time at. An entry is live only while
// s.armedAt == at; others are stale and skipped when popped, which lets a
// deadline move without touching the heap (lazy deadlines).
type due struct {
	at int64
	s  *sess
}

// dueHeap is a binary min-heap on at. Hand-written so that no interface
// boxing or allocation happens per push.
type dueHeap []due

func (h *dueHeap) push(d due) {
	*h = append(*h, d)
	a := *h
	i := len(a) - 1
	for i > 0 {
		p := (i - 1) / 2
		if a[p].at <= a[i].at {
			break
		}
		a[p], a[i] = a[i], a[p]
		i = p
	}
}

func (h *dueHeap) pop() due {
	a := *h
	top := a[0]
	n := len(a) - 1
	a[0] = a[n]
	a[n] = due{} // drop the pointer so a forgotten session can be collected
	a = a[:n]
	a.down(0)
	*h = a
	// Give memory back after a burst (e.g. many sessions forgotten at once).
	if c := cap(a); c > 1024 && len(a) < c/4 {
		*h = append(dueHeap(nil), a...)
	}
	return top
}

// down moves a[i] down to its place.
func (a dueHeap) down(i int) {
	n := len(a)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && a[r].at < a[l].at {
			m = r
		}
		if a[i].at <= a[m].at {
			break
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
}

// dropStale removes the entries that can no longer fire (their session was
// forgotten, or an earlier entry superseded them) and restores the heap
// order, in O(len). Shedding calls it: a shed session's entry could
// otherwise keep its memory until ForgetAfter.
func (h *dueHeap) dropStale() {
	a := *h
	keep := a[:0]
	for _, d := range a {
		if !d.s.forgotten && d.at == d.s.armedAt {
			keep = append(keep, d)
		}
	}
	clear(a[len(keep):])
	for i := len(keep)/2 - 1; i >= 0; i-- {
		keep.down(i)
	}
	if c := cap(keep); c > 1024 && len(keep) < c/4 {
		keep = append(dueHeap(nil), keep...)
	}
	*h = keep
}
