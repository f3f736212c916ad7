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
	i := 0
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
	*h = a
	// Give memory back after a burst (e.g. many sessions forgotten at once).
	if c := cap(a); c > 1024 && len(a) < c/4 {
		*h = append(dueHeap(nil), a...)
	}
	return top
}
