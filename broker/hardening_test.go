package broker

// Security regressions, in one place (in the spirit of mercure's
// hardening_test.go): every hole found by attacking the broker black-box,
// each with a test over real sockets or HTTP that fails if it comes back.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/ctibroker/ctibroker/internal/redistest"
	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/webhook"
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
		b := startBroker(t, append(jwtEnv, "CTIBROKER_ADAPTER__SIM__CONTROL=true")...)
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

// An agent's event stream follows the rule of every other route: agents
// themselves, supervisors the agents of their teams, admins everyone.
func TestHardeningAgentEventsFollowTheRoleRules(t *testing.T) {
	b := startBroker(t, jwtEnv...)
	alice, asid := attach(t, b, "access_token="+mustToken(t, "alice", RoleAgent, "sales"))
	alice.request(t, protocol.CmdAddChannel, asid, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}})
	for _, tt := range []struct {
		name string
		tok  string
		want int
	}{
		{"herself", mustToken(t, "alice", RoleAgent), http.StatusOK},
		{"another agent", mustToken(t, "bob", RoleAgent, "sales"), http.StatusForbidden},
		{"supervisor of her team", mustToken(t, "vicky", RoleSupervisor, "sales"), http.StatusOK},
		{"supervisor of another team", mustToken(t, "sam", RoleSupervisor, "support"), http.StatusForbidden},
		{"admin", mustToken(t, "root", RoleAdmin), http.StatusOK},
	} {
		if _, code := openStream(t, context.Background(), b.url("/v1/agents/alice/events"), bearer(tt.tok), ""); code != tt.want {
			t.Errorf("%s: HTTP %d, want %d", tt.name, code, tt.want)
		}
	}
}

// A resume id names a session; it must be one of the followed agent's, or
// anyone could read another agent's stored events through their own stream.
func TestHardeningLastEventIDOfAnotherAgent(t *testing.T) {
	b := startBroker(t, jwtEnv...)
	bob, bsid := attach(t, b, "access_token="+mustToken(t, "bob", RoleAgent, "sales"))
	bob.request(t, protocol.CmdAddChannel, bsid, map[string]any{"channel": map[string]string{"id": "secret", "name": "1", "type": "TELEPHONY"}})
	attach(t, b, "access_token="+mustToken(t, "alice", RoleAgent, "sales"))
	events, code := openStream(t, context.Background(), b.url("/v1/agents/alice/events"), bearer(mustToken(t, "alice", RoleAgent)), bsid+":0")
	if code == http.StatusOK {
		select {
		case ev := <-events:
			if strings.Contains(ev.id, bsid) || strings.Contains(fmt.Sprint(ev.data), "secret") {
				t.Fatalf("alice's stream replayed bob's event %+v", ev)
			}
		case <-time.After(500 * time.Millisecond):
		}
		return
	}
	if code != http.StatusForbidden {
		t.Fatalf("HTTP %d, want 403 or a stream without bob's events", code)
	}
}

// Agents and supervisors live in separate namespaces: no id crosses them.
func TestHardeningIdentityNamespaces(t *testing.T) {
	b := startBroker(t, jwtEnv...)
	sup, supSID := attach(t, b, "access_token="+mustToken(t, "vicky", RoleSupervisor, "sales"))
	// An agent whose id looks like a supervisor's key gets a session of
	// its own, as an agent.
	for _, sub := range []string{"sup:vicky", "sup%3Avicky"} {
		ag, agSID := attach(t, b, "access_token="+mustToken(t, strings.ReplaceAll(sub, "%3A", ":"), RoleAgent))
		if agSID == supSID {
			t.Fatalf("agent %q joined supervisor vicky's session", sub)
		}
		if r := ag.request(t, protocol.CmdSupervisorSubscribe, agSID, map[string]any{}); r["result"] != "failure" {
			t.Fatalf("agent %q subscribed like a supervisor: %v", sub, r)
		}
	}
	// The supervisor's namespace cannot be written as an agent id.
	if _, err := dial(t, b, "access_token="+mustToken(t, "alice", RoleAgent), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := MintToken(testSecret, "sup.vicky", RoleAgent, nil, time.Hour, time.Now()); err == nil {
		t.Fatal("an agent id with '.' was accepted")
	}
	// The reverse: a supervisor named like an agent does not get the
	// agent's session, and cannot command it.
	alice, aliceSID := attach(t, b, "access_token="+mustToken(t, "alice", RoleAgent, "sales"))
	_ = alice
	fake, fakeSID := attach(t, b, "access_token="+mustToken(t, "alice", RoleSupervisor, "sales"))
	if fakeSID == aliceSID {
		t.Fatal("supervisor alice joined agent alice's session")
	}
	if r := fake.request(t, protocol.CmdAddChannel, aliceSID, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}}); r["result"] != "failure" {
		t.Fatalf("supervisor alice commanded agent alice's session: %v", r)
	}
	_ = sup
	// Reports include agents whatever their id, and no supervisor.
	code, body := getJSON(t, b.url("/v1/reports/agents"), bearer(mustToken(t, "root", RoleAdmin)))
	var ids []string
	for _, r := range body["list"].([]any) {
		ids = append(ids, r.(map[string]any)["agentId"].(string))
	}
	if code != http.StatusOK || strings.Join(ids, ",") != "alice,sup:vicky" {
		t.Fatalf("report lists %v (HTTP %d), want alice and sup:vicky", ids, code)
	}
}

// Every attach applies the connecting token's identity: a session does not
// keep rights a re-issued token no longer grants.
func TestHardeningAttachAppliesTheTokensIdentity(t *testing.T) {
	b := startBroker(t, jwtEnv...)
	_, asid := attach(t, b, "access_token="+mustToken(t, "alice", RoleAgent, "sales"))
	_, bsid := attach(t, b, "access_token="+mustToken(t, "bob", RoleAgent, "support"))

	// A supervisor of both teams sees both agents.
	sv, svsid := attach(t, b, "access_token="+mustToken(t, "vicky", RoleSupervisor, "sales", "support"))
	sv.request(t, protocol.CmdSupervisorSubscribe, svsid, map[string]any{})
	snap := sv.until(t, isEvent(protocol.EvSupervisorSnapshot))
	if n := len(snap["data"].(map[string]any)["agents"].([]any)); n != 2 {
		t.Fatalf("snapshot of both teams has %d agents", n)
	}
	// Her re-issued token names support only: the session is resumed, and
	// its subscription re-filtered with a resync snapshot.
	sv2, svsid2, before := attachSeeing(t, b, "access_token="+mustToken(t, "vicky", RoleSupervisor, "support"))
	if svsid2 != svsid {
		t.Fatalf("a teams change should resume the session (got %s, had %s)", svsid2, svsid)
	}
	if len(before) != 0 {
		t.Fatalf("before session.initialized: %v, want nothing", before)
	}
	resync := sv2.until(t, isEvent(protocol.EvSupervisorSnapshot))
	data := resync["data"].(map[string]any)
	agents := data["agents"].([]any)
	if data["reason"] != protocol.SnapshotResync || len(agents) != 1 || agents[0].(map[string]any)["agentId"] != "bob" {
		t.Fatalf("after the teams change: %v", data)
	}
	// Changes of the sales agent no longer reach her.
	alice2, _ := attach(t, b, "access_token="+mustToken(t, "alice", RoleAgent, "sales"))
	alice2.request(t, protocol.CmdAddChannel, asid, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}})
	bob2, _ := attach(t, b, "access_token="+mustToken(t, "bob", RoleAgent, "support"))
	bob2.request(t, protocol.CmdAddChannel, bsid, map[string]any{"channel": map[string]string{"id": "p", "name": "2", "type": "TELEPHONY"}})
	ch := sv2.until(t, isEvent(protocol.EvSupervisorAgentChanged))
	if ch["data"].(map[string]any)["agentId"] != "bob" {
		t.Fatalf("first change after the teams change is about %v", ch["data"].(map[string]any)["agentId"])
	}

	// A role change ends the old session: an admin token is not a
	// supervisor session with wider rights.
	adm, admsid := attach(t, b, "access_token="+mustToken(t, "vicky", RoleAdmin))
	if admsid == svsid {
		t.Fatal("a role change kept the session")
	}
	_ = adm

	// An agent's teams change too: supervisors of her new team see her.
	sup, supsid := attach(t, b, "access_token="+mustToken(t, "sam", RoleSupervisor, "support"))
	sup.request(t, protocol.CmdSupervisorSubscribe, supsid, map[string]any{})
	sup.until(t, isEvent(protocol.EvSupervisorSnapshot))
	attach(t, b, "access_token="+mustToken(t, "alice", RoleAgent, "support"))
	appeared := sup.until(t, func(m map[string]any) bool {
		d, _ := m["data"].(map[string]any)
		return m["name"] == protocol.EvSupervisorAgentChanged && d["agentId"] == "alice"
	})
	if appeared["data"].(map[string]any)["previous"] != nil {
		t.Fatalf("alice should appear to support's supervisor: %v", appeared["data"])
	}
}

// A failure reply never amplifies its request: echoed input is cut at
// protocol.MaxEchoBytes and marked, and nothing is HTML-escaped.
func TestHardeningFailureRepliesDoNotAmplify(t *testing.T) {
	b := startBroker(t)
	c, sid := attach(t, b, "agent=alice")
	huge := strings.Repeat("<", 60<<10) // the largest frame ws.maxmessage (64 KiB) admits
	for _, frame := range []string{
		`{"command":"channel.ready","target":"` + huge + `"}`,
		`{"command":"` + huge + `","target":"` + sid + `"}`,
		`{"command":"channel.ready","target":"` + sid + `.p","requestId":"` + huge + `"}`,
		`{"command":"channel.notready","target":"` + sid + `.p","data":{"reasoncode":"` + huge + `"}}`,
		`not json ` + huge,
	} {
		c.sendRaw(t, websocket.MessageText, []byte(frame))
		raw := c.nextRaw(t)
		if len(raw) > 6*protocol.MaxEchoBytes {
			t.Errorf("a %d-byte request got a %d-byte reply", len(frame), len(raw))
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("reply is not JSON: %v", err)
		}
		if m["result"] != "failure" || m["truncated"] != true {
			t.Errorf("reply to a %d-byte request: %.300s, want a failure marked truncated", len(frame), raw)
		}
		if strings.Contains(string(raw), `\u003c`) {
			t.Errorf("reply HTML-escapes the client's input: %.200s", raw)
		}
	}
	// A short failure echoes the request as it was, unmarked.
	c.sendRaw(t, websocket.MessageText, []byte(`{"command":"nope","target":"<s>"}`))
	m := c.next(t)
	if _, marked := m["truncated"]; marked || fmt.Sprint(m["original"]) != "map[command:nope target:<s>]" {
		t.Fatalf("short failure reply: %v", m)
	}
}

// Every text frame the broker sends is valid UTF-8, whatever bytes the
// client sent (browsers close the connection with 1007 otherwise).
func TestHardeningRepliesAreValidUTF8(t *testing.T) {
	b := startBroker(t)
	c, sid := attach(t, b, "agent=alice")
	for _, frame := range []string{
		"{\"command\":\"x\xff\xfe\",\"target\":\"" + sid + "\"}",
		"{\"command\":\"channel.ready\",\"target\":\"\xc3\x28\"}",
		"{\"command\":\"session.addchannel\",\"target\":\"" + sid + "\",\"data\":{\"channel\":{\"id\":\"p\",\"name\":\"\xed\xa0\x80\",\"type\":\"TELEPHONY\"}}}",
		"not json \xff",
		"{\"command\":\"nope\",\"target\":\"s\",\"pad\":\"" + strings.Repeat("é", 600) + "\"}", // cut inside a rune
	} {
		c.sendRaw(t, websocket.MessageText, []byte(frame))
		for {
			raw := c.nextRaw(t)
			if !utf8.Valid(raw) {
				t.Fatalf("the broker sent invalid UTF-8 in reply to %q: %q", frame, raw)
			}
			if strings.Contains(string(raw), `"result"`) {
				break
			}
		}
	}
}

// A connection that does not read is bounded in bytes, not only in
// messages: it is closed with 1013 once limits.sendqueuebytes of events are
// queued for it. (Replies cannot pile up: a connection has one command in
// flight, and the next frame is read only once its reply was written.)
func TestHardeningSendQueueBoundedInBytes(t *testing.T) {
	b := startBroker(t, "CTIBROKER_LIMITS__COMMANDRATE=0", "CTIBROKER_LIMITS__SENDQUEUE=1000000", "CTIBROKER_LIMITS__SENDQUEUEBYTES=65536")
	ws := dialUnread(t, b, nil)
	floodUnread(t, b, ws)
	for {
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _, err := ws.Read(rctx)
		cancel()
		if err != nil {
			if code := websocket.CloseStatus(err); code != websocket.StatusCode(protocol.CloseTryAgainLater) {
				t.Fatalf("closed with %d (%v), want 1013", code, err)
			}
			return
		}
	}
}

// A connection whose writes stall (the peer's window is shut and its queue
// is far from full) is cut off within ws.writetimeout of the stalled write,
// without a close frame (there is no way to send one), and its session is
// kept for the agent's next connection.
func TestHardeningStalledWriteAborted(t *testing.T) {
	b, logs := startBrokerObserved(t, "CTIBROKER_LIMITS__COMMANDRATE=0", "CTIBROKER_LIMITS__SENDQUEUE=1000000",
		"CTIBROKER_LIMITS__SENDQUEUEBYTES=1073741824", "CTIBROKER_WS__WRITETIMEOUT=300ms")
	ws := dialUnread(t, b, smallWindow)
	floodUnread(t, b, ws)
	eventually(t, "the stalled connection closed", func() bool { return connCount(b) == 0 })
	if logs.FilterMessage("write timed out").Len() != 1 {
		t.Fatalf("closed, but not for the stalled write: %v", logs.All())
	}
	if v := metricValue(b.metricsText(t), "ctibroker_slow_consumer_closes_total"); v != 0 {
		t.Fatal("closed as a slow consumer (queue full), not for the stalled write")
	}
	if n := b.srv.manager.SessionCount(); n != 1 {
		t.Fatalf("%d sessions after the stalled write, want the session kept", n)
	}
}

// smallWindow makes a client socket whose receive buffer is 4 KiB, so that
// a peer that does not read shuts its window after a few KiB.
func smallWindow(_, _ string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
}

// dialUnread connects as alice with a socket made by control (nil: the
// default), for a test that will stop reading.
func dialUnread(tb testing.TB, b *testBroker, control func(network, address string, c syscall.RawConn) error) *websocket.Conn {
	tb.Helper()
	d := &net.Dialer{Control: control}
	client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	ws, _, err := websocket.Dial(context.Background(), "ws://"+b.addr+"/v1/ws?agent=alice", &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = ws.CloseNow() })
	ws.SetReadLimit(-1)
	return ws
}

// floodUnread reads alice's first message only, then gives her large events
// until her session is gone (dropped) or about 14 MB were sent: more than
// the kernel's socket buffers, and than a queue bounded at 64 KiB.
func floodUnread(tb testing.TB, b *testBroker, ws *websocket.Conn) {
	tb.Helper()
	ctx := context.Background()
	send := func(v string) {
		if err := ws.Write(ctx, websocket.MessageText, []byte(v)); err != nil {
			tb.Fatal(err)
		}
	}
	// The session id is not known without reading: the first command's
	// target is the only one a session accepts, so read that one message.
	_, first, err := ws.Read(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	var init map[string]any
	_ = json.Unmarshal(first, &init)
	sid := init["target"].(string)
	// 30 channels with long names make every state.updated about 7 KB; the
	// sim then changes the agent's state without her.
	for i := range 30 {
		send(fmt.Sprintf(`{"command":"session.addchannel","target":%q,"data":{"channel":{"id":"c%d","name":"%d-%s","type":"CHAT"}}}`, sid, i, i, strings.Repeat("n", 200)))
	}
	send(fmt.Sprintf(`{"command":"channel.activate","target":"%s.c0"}`, sid))
	eventually(tb, "the channel active", func() bool {
		code, v := getJSON(tb, b.url("/v1/agents/alice"), nil)
		return code == http.StatusOK && strings.Contains(fmt.Sprint(v["channels"]), "state:ACTIVE")
	})
	for i := range 1000 {
		ev := "interaction.start"
		if i%2 == 1 {
			ev = "interaction.end"
		}
		if code, body := b.sim(tb, fmt.Sprintf(`{"event":%q,"agent":"alice","channel":"c0","interaction":"i"}`, ev)); code != http.StatusAccepted {
			if code == http.StatusConflict { // the session is gone: it was dropped
				return
			}
			tb.Fatalf("sim: %d %v", code, body)
		}
	}
}

// metricsText returns the broker's /metrics page.
func (b *testBroker) metricsText(tb testing.TB) string {
	tb.Helper()
	resp, err := http.Get(b.url("/metrics"))
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// Event streams end when the caller's token expires, with a last "reset"
// event saying so.
func TestHardeningStreamsEndAtTokenExpiry(t *testing.T) {
	b := startBroker(t, jwtEnv...)
	attach(t, b, "access_token="+mustToken(t, "alice", RoleAgent, "sales"))
	short := func(sub, role string, teams ...string) http.Header {
		tok, err := MintToken(testSecret, sub, role, teams, 1500*time.Millisecond, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return bearer(tok)
	}
	for _, tt := range []struct {
		path   string
		header http.Header
	}{
		{"/v1/agents/alice/events", short("alice", RoleAgent)},
		{"/v1/watch/agents", short("vicky", RoleSupervisor, "sales")},
	} {
		events, code := openStream(t, context.Background(), b.url(tt.path), tt.header, "")
		if code != http.StatusOK {
			t.Fatalf("%s: HTTP %d", tt.path, code)
		}
		deadline := time.After(5 * time.Second)
	read:
		for {
			select {
			case ev, ok := <-events:
				if ok && ev.name == "reset" {
					if ev.data["reason"] != "token expired" {
						t.Fatalf("%s: reset %v", tt.path, ev.data)
					}
					break read
				}
			case <-deadline:
				t.Fatalf("%s: still streaming after the token expired", tt.path)
			}
		}
	}
}

// A stream whose client does not read is dropped within ws.writetimeout,
// like a slow WebSocket; it does not hold its handler forever.
func TestHardeningUnreadStreamsAreDropped(t *testing.T) {
	b := startBroker(t, "CTIBROKER_WS__WRITETIMEOUT=500ms", "CTIBROKER_LIMITS__COMMANDRATE=0")
	c, sid := attach(t, b, "agent=alice")
	// Large state.updated events: 30 channels with long names.
	for i := range 30 {
		c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{
			"id": fmt.Sprintf("c%d", i), "name": fmt.Sprintf("%d-%s", i, strings.Repeat("n", 200)), "type": "CHAT"}})
	}
	c.request(t, protocol.CmdChannelActivate, sid+".c0", nil)
	// A raw client that sends its request and never reads.
	conn, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /v1/agents/alice/events HTTP/1.1\r\nHost: %s\r\n\r\n", b.addr)
	eventually(t, "the stream to open", func() bool {
		return strings.Contains(b.metricsText(t), `ctibroker_streams{kind="events"} 1`)
	})
	// About 8 MB of events, more than the kernel's socket buffers, from an
	// agent that waits for each reply.
	for i := range 1200 {
		cmd := protocol.CmdChannelReady
		var data any
		if i%2 == 1 {
			cmd, data = protocol.CmdChannelNotReady, map[string]string{"reasoncode": "lunch"}
		}
		c.request(t, cmd, sid+".c0", data)
	}
	eventually(t, "the unread stream to be dropped", func() bool {
		return strings.Contains(b.metricsText(t), `ctibroker_streams{kind="events"} 0`)
	})
}

// rawConn opens a TCP connection to the broker from a chosen loopback
// source address (127.0.0.x: several "clients" on one machine).
func rawConn(tb testing.TB, b *testBroker, from string) net.Conn {
	tb.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 2 * time.Second}
	c, err := d.Dial("tcp", b.addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// statusOf sends a GET over c and returns the response's status code, or 0
// when the connection ends first.
func statusOf(tb testing.TB, c net.Conn, path string) int {
	tb.Helper()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path)
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Slow or idle clients are bounded in time: a body trickled byte by byte,
// an idle keep-alive connection, oversize headers.
func TestHardeningHTTPTimeouts(t *testing.T) {
	b := startBroker(t, "CTIBROKER_HTTP__READTIMEOUT=1s", "CTIBROKER_HTTP__IDLETIMEOUT=500ms")
	t.Run("trickled body", func(t *testing.T) {
		c := rawConn(t, b, "127.0.0.1")
		fmt.Fprintf(c, "POST /v1/sim/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
		start := time.Now()
		buf := make([]byte, 512)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			_, _ = c.Write([]byte(" "))
			_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, err := c.Read(buf); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				break // answered or closed
			}
			if time.Since(start) > 4*time.Second {
				t.Fatal("a trickled body kept its connection open past http.readtimeout")
			}
		}
	})
	t.Run("idle keep-alive", func(t *testing.T) {
		c := rawConn(t, b, "127.0.0.1")
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
			t.Fatalf("an idle keep-alive connection was not closed after http.idletimeout: %v", err)
		}
	})
	t.Run("oversize headers", func(t *testing.T) {
		c := rawConn(t, b, "127.0.0.1")
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: %s\r\n\r\n", strings.Repeat("x", 64<<10))
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("64 KiB of headers: %v %v, want 431", resp, err)
		}
	})
}

// One client cannot take every connection: a per-IP cap, a global cap,
// and above the global cap a few connections only health checks and
// metrics may use, so that the broker can still be watched at its limit.
func TestHardeningConnectionCaps(t *testing.T) {
	b := startBroker(t, "CTIBROKER_LIMITS__CONNECTIONS=20", "CTIBROKER_LIMITS__CONNECTIONSPERIP=10")
	for range 10 {
		rawConn(t, b, "127.0.0.1")
	}
	if code := statusOf(t, rawConn(t, b, "127.0.0.1"), "/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("11th connection from one address: %d, want 503", code)
	}
	// Another client still gets in, up to the global cap.
	for range 10 {
		rawConn(t, b, "127.0.0.2")
	}
	// At the global cap: health checks and metrics are answered, the rest
	// is refused with 503.
	if code := statusOf(t, rawConn(t, b, "127.0.0.3"), "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz at the cap: %d, want 200", code)
	}
	if code := statusOf(t, rawConn(t, b, "127.0.0.3"), "/metrics"); code != http.StatusOK {
		t.Fatalf("/metrics at the cap: %d, want 200", code)
	}
	from3 := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}}).DialContext}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, "ws://"+b.addr+"/v1/ws?agent=carol", &websocket.DialOptions{HTTPClient: from3})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a WebSocket at the cap: %v, want 503", err)
	}
	resp.Body.Close()
	if code := statusOf(t, rawConn(t, b, "127.0.0.3"), "/v1/agents"); code != http.StatusServiceUnavailable {
		t.Fatalf("REST at the cap: %d, want 503", code)
	}
}

// A session's size is bounded: channels, groups, and the strings and lists
// a client puts in them (every state.updated and supervisor change carries
// them all).
func TestHardeningSessionSizeLimits(t *testing.T) {
	b := startBroker(t, "CTIBROKER_LIMITS__CHANNELS=3", "CTIBROKER_LIMITS__GROUPS=1")
	c, sid := attach(t, b, "agent=alice")
	ch := func(id string) map[string]string {
		return map[string]string{"id": id, "name": "n-" + id, "type": "TELEPHONY"}
	}
	for _, id := range []string{"a", "b"} {
		if r := c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": ch(id)}); r["result"] != "success" {
			t.Fatalf("addchannel %s: %v", id, r)
		}
	}
	failsNaming := func(what, limit string, r map[string]any) {
		t.Helper()
		f, _ := r["failure"].(map[string]any)
		if r["result"] != "failure" || f["code"] != "INVALID_REQUEST" || !strings.Contains(fmt.Sprint(f["message"]), limit) {
			t.Errorf("%s: %v, want INVALID_REQUEST naming %s", what, r, limit)
		}
	}
	failsNaming("a group of two over the channel limit", "limits.channels",
		c.request(t, protocol.CmdAddChannelGroup, sid, map[string]any{"channelGroup": map[string]any{"id": "g", "name": "G", "channels": []any{ch("c"), ch("d")}}}))
	if r := c.request(t, protocol.CmdAddChannelGroup, sid, map[string]any{"channelGroup": map[string]any{"id": "g", "name": "G", "channels": []any{ch("c")}}}); r["result"] != "success" {
		t.Fatalf("third channel, in a group: %v", r)
	}
	failsNaming("a fourth channel", "limits.channels", c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": ch("e")}))
	failsNaming("a second group", "limits.groups",
		c.request(t, protocol.CmdAddChannelGroup, sid, map[string]any{"channelGroup": map[string]any{"id": "h", "name": "H", "channels": []any{}}}))

	// Strings and lists are bounded too.
	c2, sid2 := attach(t, b, "agent=bob")
	long := strings.Repeat("n", protocol.MaxNameLength+1)
	failsNaming("a long channel name", "name", c2.request(t, protocol.CmdAddChannel, sid2, map[string]any{"channel": map[string]string{"id": "p", "name": long, "type": "TELEPHONY"}}))
	failsNaming("a long channel type", "type", c2.request(t, protocol.CmdAddChannel, sid2, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": long}}))
	c2.request(t, protocol.CmdAddChannel, sid2, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}})
	queues := make([]string, protocol.MaxQueues+1)
	for i := range queues {
		queues[i] = fmt.Sprint("q", i)
	}
	failsNaming("too many queues", "queue", c2.request(t, protocol.CmdChannelActivate, sid2+".p", map[string]any{"channeloptions": map[string]any{"queue": queues}}))
	failsNaming("a long queue name", "queue", c2.request(t, protocol.CmdChannelActivate, sid2+".p", map[string]any{"channeloptions": map[string]any{"queue": long}}))
}

// The command rate limit belongs to the agent's session: reconnecting or
// taking the session over does not refill it.
func TestHardeningRateLimitSurvivesReconnects(t *testing.T) {
	b := startBroker(t, "CTIBROKER_LIMITS__COMMANDRATE=1", "CTIBROKER_LIMITS__COMMANDBURST=5")
	limited := 0
	for range 6 {
		// Each round takes the session over with a new connection (the
		// old one is closed with 4001) and sends three commands at once.
		c, sid := attach(t, b, "agent=alice")
		for range 3 {
			c.send(t, map[string]any{"command": protocol.CmdNotReadyReasons, "target": sid})
		}
		for range 3 {
			r := c.until(t, func(m map[string]any) bool { return m["result"] != nil })
			if f, _ := r["failure"].(map[string]any); f["code"] == string(protocol.CodeRateLimited) {
				limited++
			}
		}
	}
	// 18 commands in well under a second against a burst of 5 and 1/s.
	if limited < 10 {
		t.Fatalf("%d of 18 commands were rate limited across reconnects, want at least 10", limited)
	}
}

// Redis paused (not killed): a commit that timed out may still land when
// Redis resumes. Its outcome is resolved by reading back: it landed, and its
// events are delivered; the agent is never told that another connection
// took over, which would be false.
func TestHardeningPausedRedisIsNoTakeover(t *testing.T) {
	rs := redistest.Start(t)
	b := startBroker(t, "CTIBROKER_REDIS__URL="+rs.URL(), "CTIBROKER_REDIS__LEASETTL=1s",
		"CTIBROKER_REDIS__TIMEOUT=300ms", "CTIBROKER_REDIS__HEALTHINTERVAL=2s")
	c, sid := attach(t, b, "agent=alice")
	c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}})
	c.request(t, protocol.CmdChannelActivate, sid+".p", nil)
	c.until(t, isEvent(protocol.EvStateUpdated))

	rs.Pause()
	// The health check runs every 2 s: this command reaches the store,
	// whose commit times out with an unknown outcome.
	r := c.request(t, protocol.CmdChannelReady, sid+".p", nil)
	if f, _ := r["failure"].(map[string]any); r["result"] != "failure" || f["code"] != string(protocol.CodeUnavailable) {
		t.Fatalf("ready while Redis is paused: %v, want UNAVAILABLE", r)
	}
	time.Sleep(1500 * time.Millisecond) // past the lease: the timed-out commit lands on resume
	rs.Resume()

	// The events of the change that landed follow; the connection stays.
	deadline := time.After(8 * time.Second)
	for {
		select {
		case data, ok := <-c.msgs:
			if !ok {
				t.Fatalf("connection closed after Redis resumed: %v", <-c.closed)
			}
			var m map[string]any
			_ = json.Unmarshal(data, &m)
			if m["name"] == protocol.EvChannelInfoChanged && strings.Contains(string(data), `"status":"ready"`) {
				// And the stored state agrees, seen from a fresh connection.
				time.Sleep(200 * time.Millisecond)
				select {
				case err := <-c.closed:
					t.Fatalf("connection closed after the events: %v", err)
				default:
				}
				code, v := getJSON(t, b.url("/v1/agents/alice"), nil)
				if code != http.StatusOK || !strings.Contains(fmt.Sprint(v["channels"]), "status:ready") {
					t.Fatalf("stored view: %d %v", code, v)
				}
				return
			}
		case <-deadline:
			t.Fatal("the change that landed was never delivered")
		}
	}
}

// With auth.mode none the broker trusts whoever reaches its loopback
// address; a web page rebinding its own domain to 127.0.0.1 must not count
// as such: requests must name a loopback host.
func TestHardeningNoAuthChecksTheHost(t *testing.T) {
	b := startBroker(t)
	get := func(host, path string) int {
		req, _ := http.NewRequest(http.MethodGet, b.url(path), nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	_, port, _ := net.SplitHostPort(b.addr)
	for host, want := range map[string]int{
		"127.0.0.1:" + port:          http.StatusOK,
		"localhost:" + port:          http.StatusOK,
		"[::1]:" + port:              http.StatusOK,
		"localhost":                  http.StatusOK,
		"evil.example.com:" + port:   http.StatusForbidden,
		"evil.example.com":           http.StatusForbidden,
		"127.0.0.1.nip.io:" + port:   http.StatusForbidden,
		"localhost.evil.com:" + port: http.StatusForbidden,
	} {
		if got := get(host, "/v1/agents"); got != want {
			t.Errorf("Host %q: %d, want %d", host, got, want)
		}
	}
	// The WebSocket and the sim control API too.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, "ws://"+b.addr+"/v1/ws?agent=alice", &websocket.DialOptions{Host: "evil.example.com"})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("WebSocket with a rebound Host: %v, want 403", err)
	}
	if resp != nil {
		resp.Body.Close()
	}
	req, _ := http.NewRequest(http.MethodPost, b.url("/v1/sim/events"), strings.NewReader(`{"event":"addressbook.changed"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Host = "evil.example.com"
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("sim control with a rebound Host: %d, want 403", resp.StatusCode)
	}
}

// freeAddr returns a free loopback address.
// With admin.listen set, metrics, the version and readiness details are
// served there and not on the public listener.
func TestHardeningAdminListener(t *testing.T) {
	b, logs := startBrokerObserved(t, "CTIBROKER_ADMIN__LISTEN=127.0.0.1:0", "CTIBROKER_NODE__ID=node-secret-7")
	admin := listenedAddr(t, logs, "admin listening")
	if code, _ := getJSON(t, b.url("/healthz"), nil); code != http.StatusOK {
		t.Fatalf("public /healthz: %d", code)
	}
	code, body := getJSON(t, b.url("/readyz"), nil)
	if code != http.StatusOK || strings.Contains(fmt.Sprint(body), "node-secret-7") || body["sessions"] != nil {
		t.Fatalf("public /readyz: %d %v, want status only", code, body)
	}
	for _, path := range []string{"/metrics", "/version"} {
		resp, err := http.Get(b.url(path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("public %s: %d, want 404", path, resp.StatusCode)
		}
	}
	// Serve binds admin.listen itself, after the test's listener is already
	// accepting: wait for it as an operator's probe would.
	adm := &testBroker{addr: admin}
	eventually(t, "the admin listener", func() bool { return adm.readyz() == http.StatusOK })
	if code, body := getJSON(t, adm.url("/version"), nil); code != http.StatusOK || body["version"] == "" || body["go"] == "" {
		t.Fatalf("admin /version: %d %v", code, body)
	}
	if !strings.Contains(adm.metricsText(t), "ctibroker_build_info{") {
		t.Fatal("admin /metrics has no ctibroker_build_info")
	}
	if code, body := getJSON(t, adm.url("/readyz"), nil); code != http.StatusOK || body["node"] != "node-secret-7" {
		t.Fatalf("admin /readyz: %d %v", code, body)
	}
	if !strings.Contains(adm.metricsText(t), "ctibroker_events_published_total") {
		t.Fatal("admin /metrics serves no broker metrics")
	}
}

// The wallboard's and the agent desktop's pages tell browsers to keep them out of frames, to send
// no Referer (the page may have had a token in its URL) and to run only the
// broker's own scripts.
func TestHardeningWallboardHeaders(t *testing.T) {
	b := startBroker(t)
	for _, path := range []string{"/", "/static/wallboard.js", "/agent", "/static/agent.js", "/static/lib/index.js"} {
		resp, err := http.Get(b.url(path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") ||
			strings.Contains(csp, "unsafe-inline") || h.Get("X-Frame-Options") != "DENY" || h.Get("Referrer-Policy") != "no-referrer" ||
			h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s headers: %v", path, h)
		}
	}
}

// Browsers cannot set headers on a WebSocket: the token may come in the
// subprotocol list (ctibroker.bearer.<token>, with ctibroker.v1) instead of
// the URL, which proxies log.
func TestHardeningTokenInSubprotocol(t *testing.T) {
	b := startBroker(t, jwtEnv...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tok := mustToken(t, "alice", RoleAgent, "sales")
	ws, _, err := websocket.Dial(ctx, "ws://"+b.addr+"/v1/ws", &websocket.DialOptions{Subprotocols: []string{"ctibroker.v1", "ctibroker.bearer." + tok}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if ws.Subprotocol() != "ctibroker.v1" {
		t.Fatalf("subprotocol %q, want ctibroker.v1 (never the token)", ws.Subprotocol())
	}
	_, msg, err := ws.Read(ctx)
	if err != nil || !strings.Contains(string(msg), protocol.EvSessionInitialized) || !strings.Contains(string(msg), `"agentId":"alice"`) {
		t.Fatalf("first message %s, %v", msg, err)
	}
	// A forged one is refused before the upgrade.
	_, resp, err := websocket.Dial(ctx, "ws://"+b.addr+"/v1/ws", &websocket.DialOptions{Subprotocols: []string{"ctibroker.v1", "ctibroker.bearer.x.y.z"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged token in the subprotocol: %v", err)
	}
	resp.Body.Close()
}

// supervisor.subscribe's format is one of two words; anything else is
// refused without echoing more than a bounded part of it.
func TestHardeningSubscribeFormat(t *testing.T) {
	b := startBroker(t)
	sv, svsid := attach(t, b, "supervisor=boss")
	for _, format := range []string{"xml", strings.Repeat("\u0001", 10000)} {
		r := sv.request(t, protocol.CmdSupervisorSubscribe, svsid, map[string]any{"format": format})
		f, _ := r["failure"].(map[string]any)
		if r["result"] != "failure" || f["code"] != string(protocol.CodeInvalidRequest) || len(fmt.Sprint(f["message"])) > 2*protocol.MaxEchoBytes {
			t.Fatalf("format %.20q: %v", format, r["failure"])
		}
	}
}

// A supervisor that does not read costs the broker one batch in flight:
// the changes it misses wait in the shared change log and reach it folded
// (one per agent, "conflated"), not queued per change, and it is not cut
// off for it. Its receive buffer is made small so that its window closes
// after a few KiB.
func TestHardeningSupervisorThatDoesNotReadIsBounded(t *testing.T) {
	b := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d := &net.Dialer{Control: smallWindow}
	client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	ws, _, err := websocket.Dial(ctx, "ws://"+b.addr+"/v1/ws?supervisor=boss", &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(-1)
	_, data, err := ws.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var init struct{ Target string }
	_ = json.Unmarshal(data, &init)
	_ = ws.Write(ctx, websocket.MessageText, []byte(`{"command":"supervisor.subscribe","target":"`+init.Target+`"}`))

	// Twenty agents toggle ready / not ready while the supervisor reads
	// nothing.
	const agents, toggles = 20, 60
	var wg sync.WaitGroup
	for i := range agents {
		a, asid := attach(t, b, fmt.Sprintf("agent=a%d&teams=sales", i))
		a.request(t, protocol.CmdAddChannel, asid, map[string]any{"channel": map[string]string{"id": "p", "name": fmt.Sprint(1000 + i), "type": "TELEPHONY"}})
		a.request(t, protocol.CmdChannelActivate, asid+".p", nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range toggles {
				if k%2 == 0 {
					a.request(t, protocol.CmdChannelReady, asid+".p", nil)
				} else {
					a.request(t, protocol.CmdChannelNotReady, asid+".p", map[string]any{"reasoncode": "lunch"})
				}
			}
		}()
	}
	wg.Wait()
	if v := metricValue(b.metricsText(t), "ctibroker_live_conflated_total"); v == 0 {
		t.Fatal("nothing was folded for a supervisor that did not read")
	}
	if v := metricValue(b.metricsText(t), "ctibroker_slow_consumer_closes_total"); v != 0 {
		t.Fatal("the supervisor was cut off as a slow consumer")
	}
	// Reading now, it ends with every agent's last state.
	last := map[string]string{}
	for len(last) < agents || !allEqual(last, "not_ready") {
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v (have %v)", err, last)
		}
		for _, line := range strings.Split(string(data), "\n") {
			var m struct {
				Name string
				Data struct {
					AgentID string
					Current *struct{ Status string }
					// A snapshot (the first, or a resync) holds agents
					// whose changes all came before it.
					Agents []struct{ AgentID, Status string }
				}
			}
			if json.Unmarshal([]byte(line), &m) != nil {
				continue
			}
			switch {
			case m.Name == protocol.EvSupervisorAgentChanged && m.Data.Current != nil:
				last[m.Data.AgentID] = m.Data.Current.Status
			case m.Name == protocol.EvSupervisorSnapshot:
				for _, a := range m.Data.Agents {
					last[a.AgentID] = a.Status
				}
			}
		}
	}
}

func allEqual(m map[string]string, v string) bool {
	for _, x := range m {
		if x != v {
			return false
		}
	}
	return true
}

// metricValue is the value of a metric without labels in a scrape.
func metricValue(text, name string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// Interactions: who may act on one, and what hostile values do. Another
// agent's interaction, a supervisor, oversized data, destinations and
// digits, and the ACD's control inputs are all refused before reaching the
// switch; the sim's queues and calls stay bounded.
func TestHardeningInteractions(t *testing.T) {
	b := startBroker(t, "CTIBROKER_ADAPTER__SIM__DIALANSWER=10s")
	alice, sid := attach(t, b, "agent=alice")
	bob, bsid := attach(t, b, "agent=bob")
	for _, c := range []struct {
		cl  *client
		sid string
	}{{alice, sid}, {bob, bsid}} {
		c.cl.request(t, protocol.CmdAddChannel, c.sid, map[string]any{"channel": map[string]string{"id": "p", "name": "n-" + c.sid, "type": "TELEPHONY"}})
		if r := c.cl.request(t, protocol.CmdChannelActivate, c.sid+".p", nil); r["result"] != "success" {
			t.Fatalf("activate: %v", r)
		}
	}
	r := alice.request(t, protocol.CmdChannelDial, sid+".p", map[string]any{"destination": "+15550100"})
	if r["result"] != "success" {
		t.Fatalf("dial: %v", r)
	}
	ixTarget := r["data"].(map[string]any)["interaction"].(string)
	code := func(r map[string]any) string {
		f, _ := r["failure"].(map[string]any)
		return fmt.Sprint(f["code"])
	}
	// Bob cannot touch Alice's interaction, even naming it in his session.
	if got := code(bob.request(t, protocol.CmdInteractionRelease, ixTarget, nil)); got != "FORBIDDEN" {
		t.Errorf("bob releasing alice's interaction: %s, want FORBIDDEN", got)
	}
	ixID := ixTarget[strings.LastIndexByte(ixTarget, '.')+1:]
	if got := code(bob.request(t, protocol.CmdInteractionRelease, bsid+".p."+ixID, nil)); got != "NOT_FOUND" {
		t.Errorf("bob naming alice's interaction in his session: %s, want NOT_FOUND", got)
	}
	// A supervisor session is read-only.
	sup, ssid := attach(t, b, "supervisor=vicky")
	if got := code(sup.request(t, protocol.CmdChannelDial, ssid+".p", map[string]any{"destination": "1"})); got != "FORBIDDEN" {
		t.Errorf("supervisor dialing: %s, want FORBIDDEN", got)
	}
	for _, tt := range []struct {
		name, command, target string
		data                  any
		want                  string
	}{
		{"a destination over 128 bytes", protocol.CmdInteractionBlindXfer, ixTarget, map[string]any{"destination": strings.Repeat("9", 129)}, "INVALID_REQUEST"},
		{"a destination with a control character", protocol.CmdInteractionBlindXfer, ixTarget, map[string]any{"destination": "bob\r\nX-Injected: 1"}, "INVALID_REQUEST"},
		{"too many digits", protocol.CmdInteractionSendDTMF, ixTarget, map[string]any{"digits": strings.Repeat("1", 33)}, "INVALID_REQUEST"},
		{"too many data keys", protocol.CmdInteractionSetData, ixTarget, map[string]any{"data": manyKeys(65)}, "INVALID_REQUEST"},
		{"a data value over 1 KiB", protocol.CmdInteractionSetData, ixTarget, map[string]any{"data": map[string]string{"k": strings.Repeat("v", 1025)}}, "INVALID_REQUEST"},
		{"data of the wrong type", protocol.CmdInteractionSetData, ixTarget, map[string]any{"data": []int{1}}, "INVALID_REQUEST"},
		{"a target of five parts", protocol.CmdInteractionHold, sid + ".g.p.x.y", nil, "INVALID_TARGET"},
		{"an interaction id with a control character", protocol.CmdInteractionHold, sid + ".p.\x01", nil, "INVALID_TARGET"},
		{"a second dial on a full channel", protocol.CmdChannelDial, sid + ".p", map[string]any{"destination": "1"}, "INVALID_STATE"},
	} {
		if got := code(alice.request(t, tt.command, tt.target, tt.data)); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
	// The ACD's control inputs are bounded.
	for _, tt := range []struct {
		path, body string
		want       int
	}{
		{"/v1/sim/calls", `{"queue":"sales","from":"1","ringTimeoutMs":-1}`, http.StatusBadRequest},
		{"/v1/sim/calls", `{"queue":"sales","from":"1","ringTimeoutMs":99999999999}`, http.StatusBadRequest},
		{"/v1/sim/calls", `{"queue":"sales","from":"` + strings.Repeat("1", 129) + `"}`, http.StatusBadRequest},
		{"/v1/sim/calls", `{"queue":"nosuch","from":"1"}`, http.StatusNotFound},
		{"/v1/sim/interactions/nosuch", `{"event":"hangup"}`, http.StatusNotFound},
		{"/v1/sim/interactions/" + ixID, `{"event":"explode"}`, http.StatusBadRequest},
	} {
		if got, body := post(t, b.url(tt.path), "application/json", tt.body, nil); got != tt.want {
			t.Errorf("POST %s %.60s: %d %.200s, want %d", tt.path, tt.body, got, body, tt.want)
		}
	}
}

func manyKeys(n int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m[fmt.Sprint("k", i)] = "v"
	}
	return m
}

// Talk records follow the role rules of every route: an agent sees only
// their own, a supervisor their teams', an admin everyone's.
func TestHardeningTalkRecordsFollowTheRoleRules(t *testing.T) {
	b := startBroker(t, append(jwtEnv, "CTIBROKER_ADAPTER__SIM__CONTROL=true")...)
	admin := bearer(mustToken(t, "root", RoleAdmin))
	alice, sid := attach(t, b, "access_token="+mustToken(t, "alice", RoleAgent, "sales"))
	alice.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}})
	alice.request(t, protocol.CmdChannelActivate, sid+".p", map[string]any{"channeloptions": map[string]any{"queue": "sales"}})
	alice.request(t, protocol.CmdChannelReady, sid+".p", nil)
	_, resp := post(t, b.url("/v1/sim/calls"), "application/json", `{"queue":"sales","from":"1"}`, admin)
	var ix struct{ Interaction string }
	_ = json.Unmarshal([]byte(resp), &ix)
	eventually(t, "the offer", func() bool {
		return alice.request(t, protocol.CmdInteractionAccept, sid+".p."+ix.Interaction, nil)["result"] == "success"
	})
	alice.request(t, protocol.CmdInteractionRelease, sid+".p."+ix.Interaction, nil)
	eventually(t, "the record", func() bool {
		_, body := getJSON(t, b.url("/v1/interactions"), admin)
		return num(body["total"]) == 1
	})
	for _, tt := range []struct {
		name string
		tok  string
		want int64
	}{
		{"herself", mustToken(t, "alice", RoleAgent), 1},
		{"another agent", mustToken(t, "bob", RoleAgent, "sales"), 0},
		{"supervisor of her team", mustToken(t, "vicky", RoleSupervisor, "sales"), 1},
		{"supervisor of another team", mustToken(t, "sam", RoleSupervisor, "support"), 0},
	} {
		if _, body := getJSON(t, b.url("/v1/interactions"), bearer(tt.tok)); num(body["total"]) != tt.want {
			t.Errorf("%s: %v, want %d records", tt.name, body, tt.want)
		}
		code, _ := getJSON(t, b.url("/v1/interactions/"+ix.Interaction), bearer(tt.tok))
		if want := map[int64]int{0: 404, 1: 200}[tt.want]; code != want {
			t.Errorf("%s: GET /v1/interactions/%s: %d, want %d", tt.name, ix.Interaction, code, want)
		}
	}
}

// Supervisor actions: only on agents of the supervisor's teams (admins:
// any); agents may not send them.
func TestHardeningSupervisorActionsFollowTheTeams(t *testing.T) {
	b := startBroker(t, jwtEnv...)
	alice, asid := attach(t, b, "access_token="+mustToken(t, "alice", RoleAgent, "sales"))
	alice.request(t, protocol.CmdAddChannel, asid, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}})
	alice.request(t, protocol.CmdChannelActivate, asid+".p", nil)
	for _, tt := range []struct {
		name, tok string
		want      string
	}{
		{"supervisor of another team", mustToken(t, "sam", RoleSupervisor, "support"), "FORBIDDEN"},
		{"supervisor of her team", mustToken(t, "vicky", RoleSupervisor, "sales"), "success"},
		{"admin", mustToken(t, "root", RoleAdmin), "success"},
	} {
		sup, ssid := attach(t, b, "access_token="+tt.tok)
		eventually(t, "alice on the board", func() bool {
			r := sup.request(t, protocol.CmdSupervisorSetState, ssid, map[string]any{"agentId": "alice", "status": "ready"})
			f, _ := r["failure"].(map[string]any)
			got := fmt.Sprint(r["result"])
			if f != nil {
				got = fmt.Sprint(f["code"])
			}
			if got == "NOT_FOUND" {
				return false // the board has not seen her yet
			}
			if got != tt.want {
				t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
			}
			return true
		})
	}
	if r := alice.request(t, protocol.CmdSupervisorSetState, asid, map[string]any{"agentId": "alice", "status": "ready"}); r["result"] != "failure" {
		t.Errorf("an agent sent a supervisor action: %v", r)
	}
	// Reasons must be the catalogs': nothing else reaches the agent's state.
	vicky, vsid := attach(t, b, "access_token="+mustToken(t, "vicky", RoleSupervisor, "sales"))
	for _, tt := range []struct {
		command string
		data    map[string]any
		want    string
	}{
		{protocol.CmdSupervisorSetState, map[string]any{"agentId": "alice", "status": "not_ready", "reasoncode": "<script>" + strings.Repeat("x", 1000)}, "INVALID_REASON"},
		{protocol.CmdSupervisorLogout, map[string]any{"agentId": "alice", "reason": "nosuch"}, "INVALID_REASON"},
		{protocol.CmdSupervisorSetState, map[string]any{"agentId": "alice", "channel": strings.Repeat("c", 200), "status": "ready"}, "NOT_FOUND"},
		{protocol.CmdSupervisorSetState, map[string]any{"agentId": "../alice", "status": "ready"}, "INVALID_REQUEST"},
		{protocol.CmdSupervisorSetState, map[string]any{"agentId": "alice", "status": "not_ready", "reasoncode": "missed"}, "success"},
	} {
		r := vicky.request(t, tt.command, vsid, tt.data)
		got := fmt.Sprint(r["result"])
		if f, ok := r["failure"].(map[string]any); ok {
			got = fmt.Sprint(f["code"])
		}
		if got != tt.want {
			t.Errorf("%s %v: %s, want %s", tt.command, tt.data, got, tt.want)
		}
	}
}

// teamQueues gives the simulated switch a queue per team, and one of no
// team.
const teamQueues = `
adapter:
  sim:
    queues:
      - {name: sales, mediatype: TELEPHONY, teams: [sales]}
      - {name: support, mediatype: CHAT, teams: [support]}
      - {name: lobby, mediatype: TELEPHONY}
`

// Queue figures: supervisors see their teams' queues (and those of no
// team), admins all, agents none; over REST, SSE and supervisor.subscribe.
// A queue the supervisor may not see is refused by name and never sent.
func TestHardeningQueuesFollowTheTeams(t *testing.T) {
	b := startBrokerYAML(t, teamQueues, append([]string{"CTIBROKER_ADAPTER__SIM__CONTROL=true"}, jwtEnv...)...)
	b.simToken = mustToken(t, "root", RoleAdmin)
	vicky := mustToken(t, "vicky", RoleSupervisor, "sales")
	for _, tt := range []struct {
		name, tok string
		code      int
		queues    []string
	}{
		{"agent", mustToken(t, "alice", RoleAgent, "sales"), http.StatusForbidden, nil},
		{"supervisor", vicky, http.StatusOK, []string{"lobby", "sales"}},
		{"admin", mustToken(t, "root", RoleAdmin), http.StatusOK, []string{"lobby", "sales", "support"}},
		{"no token", "", http.StatusUnauthorized, nil},
	} {
		var h http.Header
		if tt.tok != "" {
			h = bearer(tt.tok)
		}
		code, body := getJSON(t, b.url("/v1/queues"), h)
		var names []string
		if l, ok := body["list"].([]any); ok {
			for _, q := range l {
				names = append(names, q.(map[string]any)["name"].(string))
			}
		}
		if code != tt.code || !slices.Equal(names, tt.queues) {
			t.Errorf("GET /v1/queues as %s: %d %v, want %d with %v", tt.name, code, body, tt.code, tt.queues)
		}
		if code, _ := getJSON(t, b.url("/v1/queues/support"), h); tt.code == 200 && !slices.Contains(tt.queues, "support") && code != http.StatusNotFound {
			t.Errorf("GET /v1/queues/support as %s: %d, want 404", tt.name, code)
		}
		ctx, cancel := context.WithCancel(context.Background())
		events, code := openStream(t, ctx, b.url("/v1/watch/queues"), h, "")
		if code != tt.code {
			t.Errorf("GET /v1/watch/queues as %s: %d, want %d", tt.name, code, tt.code)
		}
		if code == 200 {
			ev := <-events
			qs, _ := ev.data["queues"].([]any)
			if ev.name != protocol.EvSupervisorSnapshot {
				t.Fatalf("first queue stream event: %v", ev)
			}
			var got []string
			for _, q := range qs {
				got = append(got, q.(map[string]any)["name"].(string))
			}
			if !slices.Equal(got, tt.queues) {
				t.Errorf("queue stream as %s: %v, want %v", tt.name, got, tt.queues)
			}
		}
		cancel()
	}
	sv, svsid := attach(t, b, "access_token="+vicky)
	for _, tt := range []struct {
		name   string
		queues any
		code   protocol.FailureCode
	}{
		{"another team's queue", []string{"support"}, protocol.CodeForbidden},
		{"an unknown queue", []string{"nosuch"}, protocol.CodeForbidden},
		{"a hostile name", []string{strings.Repeat("\xff<script>", 200)}, protocol.CodeForbidden},
		{"too many queues", make([]string, protocol.MaxViewQueues+1), protocol.CodeInvalidRequest},
		{"not a list", "sales", protocol.CodeInvalidRequest},
	} {
		r := sv.request(t, protocol.CmdSupervisorSubscribe, svsid, map[string]any{"queues": tt.queues})
		f, _ := r["failure"].(map[string]any)
		if f["code"] != string(tt.code) || len(fmt.Sprint(f["message"])) > protocol.MaxEchoBytes+64 {
			t.Errorf("subscribe to %s: %v, want %s", tt.name, r, tt.code)
		}
	}
	alice, asid := attach(t, b, "access_token="+mustToken(t, "alice", RoleAgent, "sales"))
	r := alice.request(t, protocol.CmdSupervisorSubscribe, asid, map[string]any{"agents": []string{"alice"}, "queues": []string{}})
	if f, _ := r["failure"].(map[string]any); f["code"] != string(protocol.CodeForbidden) {
		t.Errorf("an agent subscribing to queues: %v", r)
	}
	// The supervisor's subscription to every queue it may see has sales and
	// lobby, and a call into support changes nothing it receives.
	if r := sv.request(t, protocol.CmdSupervisorSubscribe, svsid, map[string]any{"queues": []string{}}); r["result"] != "success" {
		t.Fatalf("subscribe to queues: %v", r)
	}
	snap := sv.until(t, isEvent(protocol.EvSupervisorSnapshot))
	if qs, _ := snap["data"].(map[string]any)["queues"].([]any); len(qs) != 2 {
		t.Fatalf("snapshot queues: %v", snap)
	}
	for _, q := range []string{"support", "sales"} {
		if code, resp := b.simAt(t, "/v1/sim/calls", `{"queue":"`+q+`","from":"1"}`); code != 202 {
			t.Fatalf("sim call: %d %v", code, resp)
		}
	}
	ch := sv.until(t, isEvent(protocol.EvSupervisorQueueChanged))
	if d := ch["data"].(map[string]any); d["queue"] != "sales" {
		t.Fatalf("first queue change: %v (support is not vicky's)", ch)
	}
}

// Under session.multiconnect share, what one desktop says of itself (its
// User-Agent) is shown to the others: bounded, valid UTF-8, encoded as
// JSON; and no other agent's connection ever joins the session.
func TestHardeningSharedSessionUserAgent(t *testing.T) {
	b := startBroker(t, append([]string{"CTIBROKER_SESSION__MULTICONNECT=share"}, jwtEnv...)...)
	tok := "access_token=" + mustToken(t, "alice", RoleAgent, "sales")
	tab1, init1 := dialTab(t, b, tok, "first")
	hostile := strings.Repeat("\xff\"</script>\u2028", 300) // HTTP itself refuses control bytes
	_, _ = dialTab(t, b, tok, hostile)
	raw := tab1.until(t, isEvent(protocol.EvSessionConnectionsChanged))
	list := raw["data"].(map[string]any)["connections"].([]any)
	ua := list[1].(map[string]any)["userAgent"].(string)
	if !utf8.ValidString(ua) || len(ua) > protocol.MaxNameLength || !strings.HasPrefix(ua, "\ufffd\"</script>") {
		t.Fatalf("the second tab's userAgent as the first sees it: %d bytes, valid %v", len(ua), utf8.ValidString(ua))
	}
	bob, binit := dialTab(t, b, "access_token="+mustToken(t, "bob", RoleAgent, "sales"), "bob")
	if binit["sessionId"] == init1["sessionId"] || binit["connections"].(map[string]any)["count"] != 1.0 {
		t.Fatalf("bob's connection joined alice's session: %v", binit)
	}
	_ = bob
}

// Webhooks: only admins see the endpoints (their URLs) and the messages,
// or replay them; a receiver's redirect is not followed (the signature is
// for its URL); endpoints that would leak or sign weakly are refused at
// start-up.
func TestHardeningWebhooks(t *testing.T) {
	target := startReceiver(t, true)
	redirect := http.Server{Handler: http.RedirectHandler(target.url(), http.StatusTemporaryRedirect), ReadHeaderTimeout: time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = redirect.Serve(ln) }()
	t.Cleanup(func() { _ = redirect.Close() })
	yaml := webhookYAML(fmt.Sprintf("    - {name: crm, url: %q, secret: %q, events: [\"*\"]}\n", "http://"+ln.Addr().String()+"/", target.secret))
	b := startBrokerYAML(t, yaml, jwtEnv...)
	for _, tt := range []struct {
		role string
		code int
	}{{RoleAgent, 403}, {RoleSupervisor, 403}, {RoleAdmin, 200}} {
		h := bearer(mustToken(t, "u", tt.role, "sales"))
		for _, path := range []string{"/v1/webhooks", "/v1/webhooks/crm/deliveries?status=dead"} {
			if code, _ := getJSON(t, b.url(path), h); code != tt.code {
				t.Errorf("%s as %s: %d, want %d", path, tt.role, code, tt.code)
			}
		}
		req, _ := http.NewRequest(http.MethodPost, b.url("/v1/webhooks/crm/replay"), nil)
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.code {
			t.Errorf("replay as %s: %d, want %d", tt.role, resp.StatusCode, tt.code)
		}
	}
	alice, asid := attach(t, b, "access_token="+mustToken(t, "alice", RoleAgent, "sales"))
	addPhone(t, alice, asid)
	activatePhone(t, alice, asid, "")
	admin := bearer(mustToken(t, "root", RoleAdmin))
	eventually(t, "the redirect counted as a failure", func() bool {
		_, body := getJSON(t, b.url("/v1/webhooks"), admin)
		l, _ := body["list"].([]any)
		return len(l) == 1 && strings.Contains(fmt.Sprint(l[0].(map[string]any)["lastError"]), "HTTP 307")
	})
	if n := len(target.messages()); n != 0 {
		t.Fatalf("the redirect was followed: the target got %d messages", n)
	}

	for _, tt := range []struct{ name, endpoint, want string }{
		{"credentials in the URL", `{name: x, url: "https://u:p@crm.example/h", secret: "` + webhook.NewSecret() + `", events: ["*"]}`, "url"},
		{"not http", `{name: x, url: "file:///etc/passwd", secret: "` + webhook.NewSecret() + `", events: ["*"]}`, "url"},
		{"a short secret", `{name: x, url: "https://crm.example/h", secret: "whsec_c2hvcnQ=", events: ["*"]}`, "secret"},
		{"a secret not in the whsec_ form", `{name: x, url: "https://crm.example/h", secret: "password123456789012345678901234", events: ["*"]}`, "secret"},
		{"legacy-md5 without company", `{name: x, url: "https://crm.example/h", secret: "0123456789abcdef0", signature: legacy-md5, events: ["*"]}`, "legacy-md5"},
		{"no events", `{name: x, url: "https://crm.example/h", secret: "` + webhook.NewSecret() + `", events: []}`, "events"},
		{"a bad name", `{name: "../x", url: "https://crm.example/h", secret: "` + webhook.NewSecret() + `", events: ["*"]}`, "name"},
		{"an unknown scheme", `{name: x, url: "https://crm.example/h", secret: "` + webhook.NewSecret() + `", signature: none, events: ["*"]}`, "signature"},
	} {
		_, err := loadTB(t, "webhooks:\n  endpoints:\n    - "+tt.endpoint+"\n", nil)
		if err == nil || !strings.Contains(err.Error(), "webhooks.endpoints[0]") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error naming webhooks.endpoints[0] and %s", tt.name, err, tt.want)
		}
	}
}

// node.url is sent to clients in a close frame: only a ws:// or wss:// URL
// that fits one (123 bytes) is accepted, never a script or a file URL.
func TestHardeningNodeURL(t *testing.T) {
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"wss://node-a.example/v1/ws", true},
		{"javascript:alert(1)", false},
		{"file:///etc/passwd", false},
		{"https://node-a.example/v1/ws", false},
		{"wss://" + strings.Repeat("a", 130) + "/v1/ws", false},
		{"wss:///v1/ws", false},
	} {
		_, err := loadTB(t, "", []string{"CTIBROKER_NODE__URL=" + tt.url})
		if (err == nil) != tt.ok || (err != nil && !strings.Contains(err.Error(), "node.url")) {
			t.Errorf("node.url %q: %v, want ok=%v", tt.url, err, tt.ok)
		}
	}
}

// WebSocket upgrades are paced (limits.upgradespercpu) only once their
// token is checked: upgrades without a valid token cannot take the turns of
// agents reconnecting after a node failure. An upgrade whose turn is further
// away than limits.upgradewait is answered 503 with Retry-After, before any
// session is opened for it.
// An agent whose desktop reconnects in a loop (or whose two desktops take
// the session over from each other) is refused before the upgrade once it
// has spent its burst, and takes neither the upgrade turns nor the
// connections of other agents.
func TestHardeningReconnectLoopIsRateLimited(t *testing.T) {
	const burst = 3
	// One connection per 10 s: however slow this machine, the refused
	// upgrade's turn is more than 9 s away.
	b := startBroker(t, append(jwtEnv, "CTIBROKER_LIMITS__CONNECTRATE=0.1", fmt.Sprintf("CTIBROKER_LIMITS__CONNECTBURST=%d", burst))...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	connect := func(agent string) {
		t.Helper()
		c, err := dial(t, b, "", bearer(mustToken(t, agent, RoleAgent)))
		if err != nil {
			t.Fatalf("%s: %v", agent, err)
		}
		// The session exists once the broker greets the connection.
		c.until(t, isEvent(protocol.EvSessionInitialized))
	}
	// The first connection opens the session and is not counted; each
	// one after it takes over and is, up to the burst.
	for range burst + 1 {
		connect("looping")
	}
	ws, refused, err := websocket.Dial(ctx, "ws://"+b.addr+"/v1/ws", &websocket.DialOptions{HTTPHeader: bearer(mustToken(t, "looping", RoleAgent))})
	if err == nil {
		_ = ws.CloseNow()
		t.Fatalf("connection %d of the loop was let through (burst %d)", burst+2, burst)
	}
	if refused == nil {
		t.Fatalf("connection %d of the loop: %v", burst+2, err)
	}
	var body struct{ Error struct{ Code string } }
	_ = json.NewDecoder(refused.Body).Decode(&body)
	if refused.StatusCode != http.StatusTooManyRequests || refused.Header.Get("Retry-After") != "10" || body.Error.Code != string(protocol.CodeRateLimited) {
		t.Fatalf("refused upgrade: %d, Retry-After %q, %+v", refused.StatusCode, refused.Header.Get("Retry-After"), body)
	}
	connect("other")
	if v := metricValue(b.metricsText(t), "ctibroker_connects_limited_total"); v != 1 {
		t.Fatalf("ctibroker_connects_limited_total = %v, want 1", v)
	}
}

func TestHardeningUpgradePacing(t *testing.T) {
	b := startBroker(t, append(jwtEnv, "CTIBROKER_LIMITS__UPGRADESPERCPU=1", "CTIBROKER_LIMITS__UPGRADEWAIT=1ms")...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	upgrade := func(tok string) (*websocket.Conn, *http.Response) {
		ws, resp, err := websocket.Dial(ctx, "ws://"+b.addr+"/v1/ws", &websocket.DialOptions{HTTPHeader: bearer(tok)})
		if err == nil {
			t.Cleanup(func() { _ = ws.CloseNow() })
		}
		return ws, resp
	}
	for i := range 50 {
		if ws, resp := upgrade(fmt.Sprintf("forged.%d.x", i)); ws != nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("forged token %d: %v, want 401", i, resp)
		}
	}
	// The burst (a tenth of a second's worth, at least one) is all there:
	// the forged upgrades took none of it.
	burst := b.srv.upgrades.Burst()
	for i := range burst {
		if ws, resp := upgrade(mustToken(t, fmt.Sprintf("a%d", i), RoleAgent)); ws == nil {
			t.Fatalf("upgrade %d of the burst of %d: %v", i, burst, resp)
		}
	}
	// Beyond it, a turn is a second over the rate away, more than upgradewait.
	var refused *http.Response
	for i := burst; i < burst+100 && refused == nil; i++ {
		if ws, resp := upgrade(mustToken(t, fmt.Sprintf("a%d", i), RoleAgent)); ws == nil {
			refused = resp
		}
	}
	if refused == nil {
		t.Fatal("100 upgrades beyond the burst, none waited for its turn")
	}
	defer refused.Body.Close()
	var body struct{ Error struct{ Code string } }
	_ = json.NewDecoder(refused.Body).Decode(&body)
	if refused.StatusCode != http.StatusServiceUnavailable || refused.Header.Get("Retry-After") != "1" || body.Error.Code != string(protocol.CodeUnavailable) {
		t.Fatalf("refused upgrade: %d, Retry-After %q, %+v", refused.StatusCode, refused.Header.Get("Retry-After"), body)
	}
	if v := metricValue(b.metricsText(t), "ctibroker_upgrades_refused_total"); v != 1 {
		t.Fatalf("ctibroker_upgrades_refused_total = %v, want 1", v)
	}
}
