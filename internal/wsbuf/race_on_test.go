//go:build race

package wsbuf

// raceEnabled: the race detector doubles the stack guard, so stack sizes
// are not those of a normal build.
const raceEnabled = true
