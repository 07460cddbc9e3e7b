package load

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestScanEvent(t *testing.T) {
	name, ts, ok := scanEvent([]byte(`{"messageType":"objectEvent","target":"s","name":"supervisor.agent.changed","data":{"x":{"timestamp":1}},"seq":9,"timestamp":1700000000123}`))
	if !ok || string(name) != "supervisor.agent.changed" || ts != 1700000000123 {
		t.Fatalf("scanEvent = %q %d %v", name, ts, ok)
	}
	// The last timestamp is the message's, the data's are before it.
	if _, ts, ok := scanEvent([]byte(`{"name":"e","data":{"timestamp":1},"timestamp": 2 }`)); !ok || ts != 2 {
		t.Fatalf("scanEvent = %d %v, want the last timestamp", ts, ok)
	}
	if _, _, ok := scanEvent([]byte(`{"name":"e","timestamp":-1}`)); ok {
		t.Fatal("a negative timestamp scanned")
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

// The failover storm counts what a resume must not lose: a gap in an
// agent's seq is lost events, a seq already seen a duplicate.
func TestFailoverSeqAccounting(t *testing.T) {
	for _, tc := range []struct {
		name             string
		seqs             []uint64
		lost, duplicates int64
	}{
		{"in order", []uint64{1, 2, 3, 4}, 0, 0},
		{"messages without seq", []uint64{1, 0, 2, 0, 3}, 0, 0},
		{"a gap", []uint64{1, 2, 5, 6}, 2, 0},
		{"a replay of what was seen", []uint64{1, 2, 3, 2, 3, 4}, 0, 2},
		{"first seen mid-stream", []uint64{7, 8}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &failoverAgent{st: &failoverStats{stats: newStats()}}
			for _, s := range tc.seqs {
				a.saw(s)
			}
			if a.st.lost.Load() != tc.lost || a.st.duplicates.Load() != tc.duplicates {
				t.Fatalf("lost %d, duplicates %d; want %d, %d", a.st.lost.Load(), a.st.duplicates.Load(), tc.lost, tc.duplicates)
			}
		})
	}
}

func TestFailoverRefusesOtherHostsAndBadConfig(t *testing.T) {
	for _, cfg := range []FailoverConfig{
		{URL: "ws://10.0.0.1/v1/ws", FailoverURL: "ws://127.0.0.1:1/v1/ws", KillPID: 1234, Agents: 1, Rate: 1, Warmup: 1, After: 1},
		{URL: "ws://127.0.0.1:1/v1/ws", FailoverURL: "ws://example.com/", KillPID: 1234, Agents: 1, Rate: 1, Warmup: 1, After: 1},
		{URL: "ws://127.0.0.1:1/v1/ws", FailoverURL: "ws://127.0.0.1:2/v1/ws", KillPID: 1, Agents: 1, Rate: 1, Warmup: 1, After: 1},
		{URL: "ws://127.0.0.1:1/v1/ws", FailoverURL: "ws://127.0.0.1:2/v1/ws", KillPID: 1234, Agents: 1, Rate: 0, Warmup: 1, After: 1},
	} {
		if _, err := RunFailover(context.Background(), cfg); err == nil {
			t.Errorf("RunFailover(%+v) ran", cfg)
		}
	}
}

// The scanners read what a server sends: no input makes them panic, and
// lastIndex and parseInt agree with the standard library where they apply.
func FuzzScanEvent(f *testing.F) {
	f.Add([]byte(`{"messageType":"objectEvent","target":"s","name":"supervisor.agent.changed","data":{"agentId":"a","conflated":3},"timestamp":1700000000123}`))
	f.Add([]byte(`{"name":"e","timestamp": 2 }`))
	f.Add([]byte(`"timestamp":"timestamp":`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if name, ts, ok := scanEvent(b); ok && (ts < 0 || !bytes.Contains(b, name)) {
			t.Fatalf("scanEvent(%q) = %q, %d", b, name, ts)
		}
		if n := scanConflated(b); n < 0 {
			t.Fatalf("scanConflated(%q) = %d", b, n)
		}
		for _, key := range []string{`"timestamp":`, `"conflated":`, `"`} {
			if got, want := lastIndex(b, key), bytes.LastIndex(b, []byte(key)); got != want {
				t.Fatalf("lastIndex(%q, %q) = %d, want %d", b, key, got, want)
			}
		}
		n, ok := parseInt(b)
		want, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
		digits := len(bytes.TrimSpace(b)) > 0 && bytes.IndexFunc(bytes.TrimSpace(b), func(r rune) bool { return r < '0' || r > '9' }) < 0
		if ok && (err != nil || n != want) || !ok && digits && len(bytes.TrimSpace(b)) <= 18 {
			t.Fatalf("parseInt(%q) = %d, %v; strconv: %d, %v", b, n, ok, want, err)
		}
	})
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		status int
		header string
		want   time.Duration
		ok     bool
	}{
		{http.StatusServiceUnavailable, "3", 3 * time.Second, true},
		{http.StatusServiceUnavailable, "", time.Second, true},
		{http.StatusServiceUnavailable, "soon", time.Second, true},
		{http.StatusServiceUnavailable, "-5", time.Second, true},
		{http.StatusServiceUnavailable, "100000", time.Minute, true},
		{http.StatusUnauthorized, "3", 0, false},
	}
	for _, tt := range tests {
		resp := &http.Response{StatusCode: tt.status, Header: http.Header{"Retry-After": {tt.header}}}
		if got, ok := retryAfter(resp); got != tt.want || ok != tt.ok {
			t.Errorf("%d Retry-After %q: %v %v, want %v %v", tt.status, tt.header, got, ok, tt.want, tt.ok)
		}
	}
	if _, ok := retryAfter(nil); ok {
		t.Error("no response (the connection failed) is not a 503")
	}
}

// A 503 with Retry-After (a broker pacing its upgrades) is retried then.
func TestDialRetriesAfter503(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many connections opening", http.StatusServiceUnavailable)
			return
		}
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		_ = ws.Close(websocket.StatusNormalClosure, "")
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/", 0, 1, "", false)
	if err != nil {
		t.Fatalf("dial after a 503: %v", err)
	}
	c.ws.CloseNow()
	if n, took := calls.Load(), time.Since(start); n != 2 || took < time.Second {
		t.Fatalf("%d requests in %v: want the second one after Retry-After's second", n, took)
	}
}
