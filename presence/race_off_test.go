//go:build !race

package presence

const raceOn = false
