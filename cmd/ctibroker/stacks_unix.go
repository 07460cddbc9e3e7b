//go:build unix

package main

import (
	"os"
	"syscall"
)

// reexecWithSmallStacks re-executes the broker with small initial goroutine
// stacks (see smallStacksEnv). On failure it carries on as it is.
func reexecWithSmallStacks() {
	env, ok := smallStacksEnv(os.Environ())
	if !ok {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	_ = syscall.Exec(exe, os.Args, env) // returns only on failure
}
