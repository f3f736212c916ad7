// Package runstat summarises a figure measured over several runs: the
// median, and the range when the runs differ (the bench commands report
// medians because this machine is shared and noisy).
package runstat

import "slices"

// Spread is the median of v and its lowest and highest value; ok is false
// for no values.
func Spread(v []float64) (med, lo, hi float64, ok bool) {
	if len(v) == 0 {
		return 0, 0, 0, false
	}
	v = slices.Sorted(slices.Values(v))
	med = v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return med, v[0], v[len(v)-1], true
}

// Of is the spread of figure name over runs (each run's figures by name).
func Of[F ~map[string]float64](runs []F, name string) (med, lo, hi float64, ok bool) {
	var v []float64
	for _, f := range runs {
		if x, has := f[name]; has {
			v = append(v, x)
		}
	}
	return Spread(v)
}

// Cell prints a spread for a table: the median, with the range in brackets
// when more than one run differs at the printed precision; "—" for none.
func Cell(med, lo, hi float64, ok bool, runs int, format func(float64) string, sep string) string {
	if !ok {
		return "—"
	}
	s := format(med)
	if runs > 1 && format(lo) != format(hi) {
		s += " (" + format(lo) + sep + format(hi) + ")"
	}
	return s
}
