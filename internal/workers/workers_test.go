package workers

import (
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ctibroker/ctibroker/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var eventually = testutil.Eventually

// Workers are reused while fresh, stopped once idle too long, and all
// stopped by Close (goleak checks that none is left).
func TestPoolReusesAndReapsWorkers(t *testing.T) {
	var p Pool
	var ran atomic.Int32
	task := func() { ran.Add(1) }
	p.Go(task)
	eventually(t, "the worker parked", func() bool { return p.Idle() == 1 })
	for range 10 {
		p.Go(task)
		eventually(t, "the worker parked again", func() bool { return p.Idle() == 1 })
	}
	if ran.Load() != 11 {
		t.Fatalf("ran %d tasks, want 11", ran.Load())
	}
	p.Reap(time.Hour)
	if p.Idle() != 1 {
		t.Fatal("a fresh worker was stopped")
	}
	time.Sleep(10 * time.Millisecond)
	p.Reap(5 * time.Millisecond)
	if p.Idle() != 0 {
		t.Fatal("an idle worker was kept")
	}
	block := make(chan struct{})
	p.Go(func() { <-block })
	p.Go(task)
	eventually(t, "one worker parked, one busy", func() bool { return p.Idle() == 1 })
	close(block)
	p.Close() // waits for the busy one too
	if ran.Load() != 12 {
		t.Fatalf("ran %d tasks, want 12", ran.Load())
	}
}
