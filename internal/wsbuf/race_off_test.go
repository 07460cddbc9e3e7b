//go:build !race

package wsbuf

const raceEnabled = false
