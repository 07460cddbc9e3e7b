package main

import "strings"

// An idle connection's only goroutine is its reader, parked waiting for the
// peer (internal/wsbuf/wait.go), which fits the runtime's 2 KiB minimum
// stack. By default the runtime starts every goroutine with the average
// stack size it saw at the last GC (GODEBUG adaptivestackstart=1), and
// shrinks a stack only when less than a quarter of it is in use. While
// many connections are being attached at once, deep goroutines push that
// average up, readers start with 4 or 8 KiB, and a parked reader never
// shrinks back: every idle connection pays 2 to 6 KiB more (measured:
// docs/benchmarks.md). The setting is read once, at start-up, and
// //go:debug does not accept it, so the broker re-executes itself once
// with adaptivestackstart=0, unless the operator chose a value in GODEBUG.

// smallStacksEnv returns the environment to re-execute with, or false when
// GODEBUG already says what to do about adaptivestackstart.
func smallStacksEnv(environ []string) ([]string, bool) {
	out := make([]string, 0, len(environ)+1)
	godebug := ""
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			godebug = v
			continue
		}
		out = append(out, kv)
	}
	for _, setting := range strings.Split(godebug, ",") {
		if strings.HasPrefix(setting, "adaptivestackstart=") {
			return nil, false
		}
	}
	if godebug != "" {
		godebug += ","
	}
	return append(out, "GODEBUG="+godebug+"adaptivestackstart=0"), true
}
