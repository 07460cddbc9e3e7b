package load

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestMain lets the test binary stand in for `ctiload failover-b`, so
// that RunFailover's B process is a real process talking over pipes.
func TestMain(m *testing.M) {
	if os.Getenv("CTILOAD_TEST_FAILOVER_B") == "1" {
		var cfg FailoverConfig
		if err := json.Unmarshal([]byte(os.Getenv("CTILOAD_TEST_CFG")), &cfg); err != nil {
			os.Exit(3)
		}
		if err := RunFailoverB(context.Background(), cfg, 20*time.Millisecond, os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startAgentServer is a WebSocket server that acts as a broker does for
// the storm's agents: session.initialized first, then a success reply to
// every command.
func startAgentServer(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{Subprotocol}})
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ctx := context.Background()
		if ws.Write(ctx, websocket.MessageText, []byte(`{"messageType":"objectEvent","target":"s1","name":"session.initialized","data":{"resumed":false},"seq":1}`)) != nil {
			return
		}
		for {
			_, b, err := ws.Read(ctx)
			if err != nil {
				return
			}
			var cmd struct {
				Command string `json:"command"`
			}
			if json.Unmarshal(b, &cmd) != nil {
				return
			}
			reply, _ := json.Marshal(map[string]string{"command": cmd.Command, "target": "s1", "result": "success"})
			if ws.Write(ctx, websocket.MessageText, reply) != nil {
				return
			}
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return "ws://" + ln.Addr().String() + "/v1/ws"
}

// B's agents run in their own process and report their round trips before
// and after the kill back to the storm's process.
func TestFailoverBProcess(t *testing.T) {
	url := startAgentServer(t)
	victim := exec.Command("sleep", "60") // node A
	if err := victim.Start(); err != nil {
		t.Skip("no sleep command:", err)
	}
	t.Cleanup(func() { _ = victim.Process.Kill(); _ = victim.Wait() })
	cfg := FailoverConfig{URL: url, FailoverURL: url, KillPID: victim.Process.Pid, Agents: 2, AgentsB: 3, Rate: 250,
		Warmup: 400 * time.Millisecond, After: 400 * time.Millisecond, Sources: 1, Prefix: "fbtest"}
	child, _ := json.Marshal(cfg)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg.BProcess = []string{"env", "CTILOAD_TEST_FAILOVER_B=1", "CTILOAD_TEST_CFG=" + string(child), self}
	r, err := RunFailover(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Connected != 5 {
		t.Errorf("connected %d agents, want 5 (2 here, 3 in the B process)", r.Connected)
	}
	if r.BBefore.N == 0 || r.BDuring.N == 0 {
		t.Errorf("B's round trips: %d before the kill, %d after it; want some of each", r.BBefore.N, r.BDuring.N)
	}
	if err := victim.Wait(); err == nil {
		t.Error("node A was not killed")
	}
}
