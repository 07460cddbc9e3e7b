// Package testutil holds helpers shared by the packages' tests.
package testutil

import (
	"testing"
	"time"
)

// Eventually polls cond until it holds, failing tb after 5 s: tests wait
// for asynchronous effects this way instead of sleeping.
func Eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
