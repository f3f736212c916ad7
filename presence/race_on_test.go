//go:build race

package presence

// raceOn: the race detector inflates memory and time, so measurements skip.
const raceOn = true
