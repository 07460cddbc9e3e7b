package load

import (
	"context"
	"strings"
	"testing"
)

func TestScanEvent(t *testing.T) {
	name, ts, ok := scanEvent([]byte(`{"messageType":"objectEvent","target":"s","name":"supervisor.agent.changed","data":{"x":{"timestamp":1}},"seq":9,"timestamp":1700000000123}`))
	if !ok || name != "supervisor.agent.changed" || ts != 1700000000123 {
		t.Fatalf("scanEvent = %q %d %v", name, ts, ok)
	}
	if _, _, ok := scanEvent([]byte(`{"command":"x","result":"success"}`)); ok {
		t.Fatal("a reply scanned as an event")
	}
}

func TestScanConflated(t *testing.T) {
	for in, want := range map[string]int64{
		`{"data":{"agentId":"a","conflated":12},"timestamp":1}`: 12,
		`{"data":{"agentId":"a","conflated": 3 ,"x":1}}`:        3,
		`{"data":{"agentId":"a"},"timestamp":1}`:                0,
		`{"data":{"conflated":`:                                 0,
	} {
		if got := scanConflated([]byte(in)); got != want {
			t.Errorf("scanConflated(%s) = %d, want %d", in, got, want)
		}
	}
}

// Nothing is sent to a host that is not this machine, not even a scrape.
func TestScrapeRefusesOtherHosts(t *testing.T) {
	for _, u := range []string{"http://10.0.0.1/metrics", "http://example.com/metrics", "http://127.0.0.1.example.com/metrics"} {
		if _, err := Scrape(context.Background(), u); err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("Scrape(%s) = %v, want a loopback refusal", u, err)
		}
	}
}

func TestCheckLoopback(t *testing.T) {
	for url, ok := range map[string]bool{"ws://127.0.0.1:8080/v1/ws": true, "ws://localhost/v1/ws": true, "ws://[::1]:80/": true,
		"ws://10.0.0.1/v1/ws": false, "ws://example.com/": false, "ws://192.168.1.2:8080/": false} {
		if err := CheckLoopback(url); (err == nil) != ok {
			t.Errorf("CheckLoopback(%s) = %v", url, err)
		}
	}
}
