package lazylog_test

import (
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ctibroker/ctibroker/internal/lazylog"
)

func TestFieldsLevelsAndCaller(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	l := lazylog.New(lazylog.Base(zap.New(core, zap.AddCaller())), zap.String("agent", "alice"), zap.String("session", "s1"))
	l.Debug("not written")
	l.Info("attached", zap.Int("n", 1))
	l.Warn("slow")
	l.Error("failed")
	got := logs.All()
	if len(got) != 3 {
		t.Fatalf("%d lines written, want 3 (debug is below the level)", len(got))
	}
	for i, want := range []string{"attached", "slow", "failed"} {
		e := got[i]
		if e.Message != want {
			t.Errorf("line %d: %q, want %q", i, e.Message, want)
		}
		ctx := e.ContextMap()
		if ctx["agent"] != "alice" || ctx["session"] != "s1" {
			t.Errorf("line %d: fields %v, want agent and session", i, ctx)
		}
		// The caller is this test's line, not the package's helpers.
		if !strings.HasSuffix(e.Caller.File, "lazylog_test.go") {
			t.Errorf("line %d: caller %s, want the logging line", i, e.Caller.String())
		}
	}
	if got[0].ContextMap()["n"] != int64(1) {
		t.Errorf("the line's own field is missing: %v", got[0].ContextMap())
	}
}

// A line below the level costs nothing.
func TestDisabledLevelDoesNotAllocate(t *testing.T) {
	core, _ := observer.New(zapcore.WarnLevel)
	l := lazylog.New(lazylog.Base(zap.New(core)), zap.String("agent", "alice"), zap.String("session", "s1"))
	if n := testing.AllocsPerRun(100, func() { l.Info("attached") }); n != 0 {
		t.Fatalf("a disabled line allocated %.0f times", n)
	}
}
