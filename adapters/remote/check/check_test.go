package check_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/adapters/remote/check"
	"github.com/ctibroker/ctibroker/adapters/remote/sdk"
	"github.com/ctibroker/ctibroker/adapters/sim"
	"github.com/ctibroker/ctibroker/protocol"
)

// serve serves a over the protocol on a loopback port.
func serve(t *testing.T, a adapters.Adapter) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := sdk.New(a, zap.NewNop())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); _ = a.Close() })
	return lis.Addr().String()
}

func newSim(t *testing.T) *sim.Switch {
	t.Helper()
	sw, err := sim.New(sim.Config{DialAnswer: 50 * time.Millisecond, DialNoAnswer: time.Second,
		NotReadyReasons: []protocol.ReasonCode{{ID: "1", Code: "lunch", Selectable: true}}, LogoutReasons: []protocol.LogoutReason{{ID: "1", Code: "eod"}}})
	if err != nil {
		t.Fatal(err)
	}
	return sw
}

// The simulated switch, served by the SDK, passes every check.
func TestKitPassesTheSimulator(t *testing.T) {
	var out bytes.Buffer
	if n := check.Run(context.Background(), serve(t, newSim(t)), check.Options{Timeout: 3 * time.Second}, &out); n != 0 {
		t.Fatalf("%d checks failed:\n%s", n, out.String())
	}
	if lines := strings.Count(out.String(), "PASS "); lines < 15 {
		t.Fatalf("%d checks passed, want 15:\n%s", lines, out.String())
	}
}

// refusesNotReady is a switch that never lets an agent go not ready.
type refusesNotReady struct{ *sim.Switch }

func (refusesNotReady) SetNotReady(context.Context, adapters.ChannelRef, string) error {
	return errors.New("not ready is broken")
}

// A broken adapter fails the check that exercises what it breaks, and only
// that one.
func TestKitFailsABrokenAdapter(t *testing.T) {
	var out bytes.Buffer
	n := check.Run(context.Background(), serve(t, refusesNotReady{newSim(t)}), check.Options{Timeout: 3 * time.Second}, &out)
	if n != 1 || !strings.Contains(out.String(), "FAIL not ready with a reason of the catalog: ") {
		t.Fatalf("%d failed, want the not-ready check alone:\n%s", n, out.String())
	}
}

// statusOnly hides the simulator's call control.
type statusOnly struct{ adapters.Adapter }

// Without call control the interaction checks are skipped, not passed.
func TestKitSkipsWhatTheAdapterLacks(t *testing.T) {
	var out bytes.Buffer
	if n := check.Run(context.Background(), serve(t, statusOnly{newSim(t)}), check.Options{Timeout: 3 * time.Second}, &out); n != 0 {
		t.Fatalf("%d failed:\n%s", n, out.String())
	}
	if strings.Count(out.String(), "SKIP ") != 5 || !strings.Contains(out.String(), "SKIP interaction") {
		t.Fatalf("an adapter without call control:\n%s", out.String())
	}
}
