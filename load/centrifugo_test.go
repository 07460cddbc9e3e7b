package load

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// The anchor mode against a real Centrifugo: every command gets its reply
// and its publication, padded to the broker's bytes per command, and the
// server's CPU is read from its /metrics. Centrifugo is not installed by CI
// (it is a benchmark's anchor, not a dependency): set CTIBROKER_CENTRIFUGO
// to its binary (go install github.com/centrifugal/centrifugo/v6@v6.9.1).
func TestRunCentrifugo(t *testing.T) {
	bin := os.Getenv("CTIBROKER_CENTRIFUGO")
	if bin == "" {
		t.Skip("CTIBROKER_CENTRIFUGO is not set: SKIPPING the Centrifugo anchor test (see its comment)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg, _ := json.Marshal(map[string]any{
		"http_server": map[string]any{"address": "127.0.0.1", "port": port}, "log": map[string]string{"level": "error"},
		"client":     map[string]any{"insecure": true, "allowed_origins": []string{"*"}},
		"channel":    map[string]any{"without_namespace": map[string]bool{"allow_subscribe_for_client": true, "allow_publish_for_client": true}},
		"prometheus": map[string]bool{"enabled": true},
	})
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", path)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(metrics); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("centrifugo did not start")
		}
	}
	sizes := Sizes{Reply: 105, Event: 298, Events: 2}
	r, err := RunCentrifugo(context.Background(), Config{URL: fmt.Sprintf("ws://127.0.0.1:%d/connection/websocket", port),
		MetricsURL: metrics, Agents: 4, Duration: time.Second, Sources: 1}, sizes)
	if err != nil {
		t.Fatal(err)
	}
	down := float64(sizes.Reply + sizes.Events*sizes.Event)
	if r.Connected != 4 || r.Commands < 10 || len(r.Failures) != 0 || r.EventsPerCommand != 1 || r.BrokerCPUSeconds <= 0 {
		t.Fatalf("report: %+v", r)
	}
	// The first command of each connection is not padded yet, and the
	// publication's offset grows by digits.
	if got := r.ReplyBytes + r.EventBytes; got < down*0.9 || got > down*1.02 {
		t.Fatalf("%.0f bytes down per command, want about %.0f", got, down)
	}
}
