package load

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/ctibroker/ctibroker/internal/testutil"
)

func startEcho(t testing.TB, opts EchoOptions) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeEcho(ctx, ln, Sizes{Reply: 50, Event: 60, Events: 1}, opts) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeEcho: %v", err)
		}
	})
	return ln.Addr().String()
}

func metricValue(t testing.TB, addr, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// The idle baseline's server pings like the broker, closes a peer that does
// not answer, and reports its connections and memory.
func TestEchoServerPingsAndDropsSilentPeers(t *testing.T) {
	{
		addr := startEcho(t, EchoOptions{PingInterval: 100 * time.Millisecond, PingTimeout: 200 * time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var pings atomic.Int32
		live, _, err := websocket.Dial(ctx, "ws://"+addr+"/", &websocket.DialOptions{
			OnPingReceived: func(context.Context, []byte) bool { pings.Add(1); return true }})
		if err != nil {
			t.Fatal(err)
		}
		defer live.CloseNow()
		// A peer without a reader never answers pings.
		silent, _, err := websocket.Dial(ctx, "ws://"+addr+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer silent.CloseNow()
		var received atomic.Int32
		go func() {
			for {
				if _, _, err := live.Read(ctx); err != nil {
					return
				}
				received.Add(1)
			}
		}()
		testutil.Eventually(t, "2 connections", func() bool { return metricValue(t, addr, "ctiload_echo_connections") == "2" })
		testutil.Eventually(t, "pings to the live peer", func() bool { return pings.Load() >= 3 })
		testutil.Eventually(t, "the silent peer dropped, the live one kept", func() bool {
			return metricValue(t, addr, "ctiload_echo_connections") == "1"
		})
		if metricValue(t, addr, "process_resident_memory_bytes") == "" {
			t.Fatal("no process_resident_memory_bytes at /metrics")
		}
		// It still echoes.
		if err := live.Write(ctx, websocket.MessageText, []byte(`{"command":"x"}`)); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, "the reply and its event", func() bool { return received.Load() == 2 })
	}
}
