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
	EventuallyWithin(tb, 5*time.Second, what, cond)
}

// EventuallyWithin is Eventually with a deadline of its own, for what
// takes longer by nature (a burst of thousands of messages).
func EventuallyWithin(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
