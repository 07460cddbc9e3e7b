package broker

// Security regressions, in one place (in the spirit of mercure's
// hardening_test.go): every hole found by attacking the broker black-box,
// each with a test over real sockets or HTTP that fails if it comes back.

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ctibroker/ctibroker/protocol"
)

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

func mustToken(tb testing.TB, sub, role string, teams ...string) string {
	tb.Helper()
	tok, err := MintToken(testSecret, sub, role, teams, time.Hour, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// post sends body with a content type and headers and returns the status
// and body.
func post(tb testing.TB, url, contentType, body string, header http.Header) (int, string) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var jwtEnv = []string{"CTIBROKER_AUTH__MODE=jwt", "CTIBROKER_AUTH__JWT__SECRET=" + testSecret}

// The simulated switch's control API forces agents' states and injects
// faults: it must not exist in production-like configurations, and where it
// exists only admins may call it, with JSON bodies (no cross-origin form or
// text/plain posts) and bounded numbers.
func TestHardeningSimControlAPI(t *testing.T) {
	const fault = `{"event":"fault","agent":"alice","fault":"error","count":1}`
	t.Run("off by default in jwt mode", func(t *testing.T) {
		b := startBroker(t, jwtEnv...)
		if code, body := post(t, b.url("/v1/sim/events"), "application/json", fault, bearer(mustToken(t, "root", RoleAdmin))); code != http.StatusNotFound {
			t.Fatalf("POST /v1/sim/events in jwt mode: %d %s, want 404 (no control API)", code, body)
		}
	})
	t.Run("admin only when enabled in jwt mode", func(t *testing.T) {
		b := startBroker(t, append(jwtEnv, "CTIBROKER_SIM__CONTROL=true")...)
		for _, tt := range []struct {
			name   string
			header http.Header
			want   int
		}{
			{"no token", nil, http.StatusUnauthorized},
			{"agent", bearer(mustToken(t, "alice", RoleAgent)), http.StatusForbidden},
			{"supervisor", bearer(mustToken(t, "vicky", RoleSupervisor, "sales")), http.StatusForbidden},
			{"admin", bearer(mustToken(t, "root", RoleAdmin)), http.StatusAccepted},
		} {
			if code, body := post(t, b.url("/v1/sim/events"), "application/json", fault, tt.header); code != tt.want {
				t.Errorf("%s: %d %s, want %d", tt.name, code, body, tt.want)
			}
		}
	})
	t.Run("sim in jwt mode warns at start-up", func(t *testing.T) {
		_, logs := startBrokerObserved(t, jwtEnv...)
		eventually(t, "the sim warning", func() bool { return logs.FilterMessageSnippet("adapter.kind is sim").Len() == 1 })
	})
	t.Run("json bodies only", func(t *testing.T) {
		b := startBroker(t)
		for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""} {
			if code, body := post(t, b.url("/v1/sim/events"), ct, fault, nil); code != http.StatusUnsupportedMediaType {
				t.Errorf("Content-Type %q: %d %s, want 415", ct, code, body)
			}
		}
		if code, body := post(t, b.url("/v1/sim/events"), "application/json; charset=utf-8", fault, nil); code != http.StatusAccepted {
			t.Errorf("application/json; charset=utf-8: %d %s, want 202", code, body)
		}
	})
	t.Run("bounded numbers and body", func(t *testing.T) {
		b := startBroker(t)
		for _, tt := range []struct {
			body string
			want int
		}{
			{`{"event":"fault","agent":"alice","fault":"error","count":30000000}`, http.StatusBadRequest},
			{`{"event":"fault","agent":"alice","fault":"error","count":-5}`, http.StatusBadRequest},
			{`{"event":"fault","agent":"alice","fault":"error","count":1000}`, http.StatusAccepted},
			// The pending faults of one agent are bounded too.
			{`{"event":"fault","agent":"alice","fault":"error","count":1}`, http.StatusBadRequest},
			{`{"event":"addressbook.changed","pad":"` + strings.Repeat("x", 70<<10) + `"}`, http.StatusRequestEntityTooLarge},
		} {
			if code, body := post(t, b.url("/v1/sim/events"), "application/json", tt.body, nil); code != tt.want {
				t.Errorf("%.80s: %d %.200s, want %d", tt.body, code, body, tt.want)
			}
		}
	})
}

// Times and page numbers from query strings are validated into sane ranges
// before any arithmetic: one request must never loop forever, overflow or
// panic.
func TestHardeningRESTTimeAndPagingBounds(t *testing.T) {
	b := startBroker(t)
	// An agent with history, so that report loops have something to cut.
	c, sid := attach(t, b, "agent=alice")
	c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}})
	client := &http.Client{Timeout: 5 * time.Second}
	for _, path := range []string{
		"/v1/reports/agents?from=9223199276854775807&to=9223372036854775807&interval=1d",
		"/v1/reports/agents?from=-9223372036854775808&to=0&interval=1d",
		"/v1/reports/agents?from=0&to=1000&interval=15m",
		"/v1/reports/agents?from=2000-01-01T00:00:00Z&to=2099-12-31T00:00:00Z&interval=15m",
		"/v1/reports/agents?from=3000-01-01T00:00:00Z&to=3000-01-02T00:00:00Z",
		"/v1/reports/agents?pageNum=9223372036854775807",
		"/v1/agents?pageNum=9223372036854775807",
		"/v1/agents?pageNum=4611686018427387904&pageSize=500",
		"/v1/agents/alice/history?from=1&to=9223372036854775807",
		"/v1/agents/alice/history?pageNum=9223372036854775807",
	} {
		resp, err := client.Get(b.url(path))
		if err != nil {
			t.Fatalf("GET %s: %v (the broker must answer at once)", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"INVALID_REQUEST"`) {
			t.Errorf("GET %s: %d %s, want 400 INVALID_REQUEST", path, resp.StatusCode, body)
		}
	}
	// The broker is still well after all that.
	if code, _ := getJSON(t, b.url("/v1/reports/agents?interval=1h"), nil); code != http.StatusOK {
		t.Fatalf("a sane report: %d", code)
	}
}
