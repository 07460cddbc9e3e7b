package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/ctibroker/ctibroker/internal/testutil"
	"github.com/ctibroker/ctibroker/protocol"
)

const testSecret = "0123456789abcdef0123456789abcdef"

func TestJWTAuthentication(t *testing.T) {
	b := startBroker(t, "CTIBROKER_AUTH__MODE=jwt", "CTIBROKER_AUTH__JWT__SECRET="+testSecret)
	now := time.Now()
	valid, err := MintToken(testSecret, "alice", RoleAgent, []string{"sales"}, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	expired, _ := MintToken(testSecret, "alice", RoleAgent, nil, time.Minute, now.Add(-time.Hour))
	forged, _ := MintToken(strings.Repeat("x", 32), "alice", RoleAgent, nil, time.Hour, now)
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	tests := []struct {
		name   string
		query  string
		header http.Header
		ok     bool
	}{
		{"bearer", "", bearer(valid), true},
		{"query", "access_token=" + valid, nil, true},
		{"missing", "", nil, false},
		{"agent param is not auth", "agent=alice", nil, false},
		{"expired", "", bearer(expired), false},
		{"wrong secret", "", bearer(forged), false},
		{"garbage", "", bearer("not.a.jwt"), false},
		{"basic scheme", "", http.Header{"Authorization": {"Basic " + valid}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := dial(t, b, tt.query, tt.header)
			if !tt.ok {
				if err == nil || !strings.Contains(err.Error(), "HTTP 401") {
					t.Fatalf("dial = %v, want HTTP 401 before the upgrade", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			init := c.until(t, isEvent(protocol.EvSessionInitialized))
			data := init["data"].(map[string]any)
			if data["agentId"] != "alice" || fmt.Sprint(data["teams"]) != "[sales]" {
				t.Fatalf("session.initialized data = %v", data)
			}
		})
	}
	// The 401 body says why, in the REST error shape.
	resp, err := http.Get(b.url("/v1/ws"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(string(body), `"code":"UNAUTHORIZED"`) {
		t.Fatalf("GET /v1/ws without token: %d %s", resp.StatusCode, body)
	}
}

// Upgrades beyond the pace (limits.upgradespercpu) wait for their turn and
// are then admitted, as agents failing over from a dead node are.
func TestUpgradesBeyondThePaceWaitTheirTurn(t *testing.T) {
	b := startBroker(t, "CTIBROKER_LIMITS__UPGRADESPERCPU=1")
	perSecond, burst := int(b.srv.upgrades.Limit()), b.srv.upgrades.Burst()
	start := time.Now()
	for i := range burst + 2 {
		attach(t, b, fmt.Sprintf("agent=a%d", i))
	}
	// The last two waited for a turn each, 1/perSecond s apart.
	if took, turn := time.Since(start), time.Second/time.Duration(perSecond); took < turn {
		t.Fatalf("%d upgrades at %d a second with bursts of %d took %v: none waited", burst+2, perSecond, burst, took)
	}
	if v := metricValue(b.metricsText(t), "ctibroker_upgrades_refused_total"); v != 0 {
		t.Fatalf("ctibroker_upgrades_refused_total = %v, want 0", v)
	}
}

// Shutdown ends the waits of upgrades beyond the pace at once (503), instead
// of holding the HTTP server's graceful shutdown until their turns.
func TestShutdownEndsUpgradesWaitingTheirTurn(t *testing.T) {
	b := startBroker(t, "CTIBROKER_LIMITS__UPGRADESPERCPU=1", "CTIBROKER_LIMITS__UPGRADEWAIT=1m")
	perSecond := int(b.srv.upgrades.Limit())
	for i := range b.srv.upgrades.Burst() {
		attach(t, b, fmt.Sprintf("agent=b%d", i))
	}
	// Their turns span waiting seconds (20 s on 2 CPUs).
	waiting := min(20*perSecond, 400)
	results := make(chan int, waiting)
	for i := range waiting {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			ws, resp, err := websocket.Dial(ctx, "ws://"+b.addr+fmt.Sprintf("/v1/ws?agent=w%d", i), nil)
			switch {
			case err == nil:
				ws.CloseNow()
				results <- http.StatusSwitchingProtocols
			case resp != nil:
				results <- resp.StatusCode
			default:
				results <- 0
			}
		}()
	}
	testutil.Eventually(t, "upgrades waiting for their turn", func() bool {
		return metricValue(b.metricsText(t), "ctibroker_upgrades_waiting") >= float64(waiting-perSecond)
	})
	go b.stop()
	deadline := time.After(10 * time.Second)
	for range waiting {
		select {
		case code := <-results:
			if code != http.StatusServiceUnavailable && code != http.StatusSwitchingProtocols {
				t.Fatalf("an upgrade waiting at shutdown got %d, want 503 (or its turn before)", code)
			}
		case <-deadline:
			t.Fatal("upgrades still waiting for their turn 10 s after shutdown began")
		}
	}
}

func TestTokenExpiryClosesConnection(t *testing.T) {
	b := startBroker(t, "CTIBROKER_AUTH__MODE=jwt", "CTIBROKER_AUTH__JWT__SECRET="+testSecret)
	tok, _ := MintToken(testSecret, "alice", RoleAgent, nil, 1500*time.Millisecond, time.Now())
	c, _ := attach(t, b, "access_token="+tok)
	if code := c.waitClose(t); code != websocket.StatusCode(protocol.CloseUnauthorized) {
		t.Fatalf("closed with %d, want %d", code, protocol.CloseUnauthorized)
	}
}

func TestOriginCheck(t *testing.T) {
	b := startBroker(t, "CTIBROKER_WS__ORIGINS=crm.example.com")
	if _, err := dial(t, b, "agent=alice", http.Header{"Origin": {"https://evil.example.net"}}); err == nil || !strings.Contains(err.Error(), "HTTP 403") {
		t.Fatalf("foreign origin: %v, want HTTP 403", err)
	}
	c, err := dial(t, b, "agent=alice", http.Header{"Origin": {"https://crm.example.com"}})
	if err != nil {
		t.Fatalf("allowed origin refused: %v", err)
	}
	c.until(t, isEvent(protocol.EvSessionInitialized))
}

func TestBadQueryParameters(t *testing.T) {
	b := startBroker(t)
	for _, q := range []string{"", "agent=", "agent=a.b", "agent=alice&since=minus1"} {
		_, err := dial(t, b, q, nil)
		if err == nil || !(strings.Contains(err.Error(), "HTTP 401") || strings.Contains(err.Error(), "HTTP 400")) {
			t.Errorf("query %q: %v, want 400/401", q, err)
		}
	}
}

func TestOversizeFrameCloses1009(t *testing.T) {
	b := startBroker(t, "CTIBROKER_WS__MAXMESSAGE=1024")
	c, sid := attach(t, b, "agent=alice")
	big := fmt.Sprintf(`{"command":"channel.ready","target":%q,"data":{"pad":%q}}`, sid+".x", strings.Repeat("x", 2048))
	c.sendRaw(t, websocket.MessageText, []byte(big))
	if code := c.waitClose(t); code != websocket.StatusMessageTooBig {
		t.Fatalf("closed with %d, want 1009", code)
	}
	// The session lives on: a reconnect resumes it.
	c2, sid2 := attach(t, b, "agent=alice")
	if sid2 != sid {
		t.Fatalf("session %s not resumed (got %s)", sid, sid2)
	}
	_ = c2
}

func TestRepliesInCommandOrder(t *testing.T) {
	b := startBroker(t, "CTIBROKER_ADAPTER__SIM__LATENCY=1ms")
	c, sid := attach(t, b, "agent=alice")
	c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}})
	c.until(t, isEvent(protocol.EvStateUpdated))
	// Pipeline commands without waiting: replies must come in order, each
	// before its own events, with seq strictly increasing.
	cmds := []string{protocol.CmdChannelActivate, protocol.CmdChannelReady, protocol.CmdChannelNotReady, protocol.CmdChannelReady, protocol.CmdChannelDeactivate}
	const rounds = 20
	for i := range rounds {
		for j, cmd := range cmds {
			var data any
			if cmd == protocol.CmdChannelNotReady {
				data = map[string]string{"reasoncode": "lunch"}
			}
			c.send(t, map[string]any{"command": cmd, "target": sid + ".p", "data": data, "requestId": fmt.Sprintf("%d-%d", i, j)})
		}
	}
	var lastSeq float64
	eventsSinceReply := 0
	for i := range rounds {
		for j, cmd := range cmds {
			var reply map[string]any
			for reply == nil {
				m := c.next(t)
				if m["result"] != nil {
					reply = m
					continue
				}
				seq := m["seq"].(float64)
				if seq <= lastSeq {
					t.Fatalf("seq %v after %v", seq, lastSeq)
				}
				lastSeq = seq
				eventsSinceReply++
			}
			if reply["requestId"] != fmt.Sprintf("%d-%d", i, j) || reply["command"] != cmd || reply["result"] != "success" {
				t.Fatalf("reply %v, want success of %s %d-%d", reply, cmd, i, j)
			}
			if (i > 0 || j > 0) && eventsSinceReply != 2 {
				t.Fatalf("%d events between replies, want infochanged+state.updated", eventsSinceReply)
			}
			eventsSinceReply = 0
		}
	}
}

func TestPreLoggedChannelsAreCreatedFirst(t *testing.T) {
	b := startBrokerYAML(t, `
adapter:
  sim:
    agents:
      carol:
        teams: [support]
        logins:
          - {id: phone, name: "3001", type: TELEPHONY, status: ready}
          - {id: mail, name: carol@example.com, type: EMAIL, group: digital, status: not_ready, reason: lunch}
`)
	c := mustDial(t, b, "agent=carol")
	var names []string
	var infos []string
	for {
		m := c.next(t)
		names = append(names, m["name"].(string)+" "+m["target"].(string))
		if m["name"] == protocol.EvChannelInfoChanged {
			infos = append(infos, fmt.Sprint(m["data"]))
		}
		if m["name"] == protocol.EvSessionInitialized {
			break
		}
	}
	sid := strings.Fields(names[len(names)-1])[1]
	want := []string{
		"channel.created " + sid, "channel.infochanged " + sid + ".phone", "channel.initialized " + sid + ".phone",
		"channel.created " + sid + ".digital", "channel.infochanged " + sid + ".digital.mail", "channel.initialized " + sid + ".digital.mail",
		"session.initialized " + sid,
	}
	if strings.Join(names, "\n") != strings.Join(want, "\n") {
		t.Fatalf("initial events:\n%s\nwant:\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(infos[1], "lastReasonCode:lunch lastReasonName:Lunch status:not_ready") || !strings.Contains(infos[0], "status:ready") ||
		!strings.Contains(infos[0], "ACTIVE") {
		t.Fatalf("pre-logged channel states: %v", infos)
	}
	// The switch state is live: the agent can go not-ready right away.
	if r := c.request(t, protocol.CmdChannelNotReady, sid+".phone", map[string]string{"reasoncode": "break"}); r["result"] != "success" {
		t.Fatalf("notready on pre-logged channel: %v", r)
	}
}

func TestGraceExpiryDeactivatesOnSwitch(t *testing.T) {
	b := startBroker(t, "CTIBROKER_SESSION__GRACE=300ms")
	c, sid := attach(t, b, "agent=alice")
	c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1001", "type": "TELEPHONY"}})
	if r := c.request(t, protocol.CmdChannelActivate, sid+".p", nil); r["result"] != "success" {
		t.Fatal(r)
	}
	logins := func() int {
		ls, err := b.srv.adapter.Logins(context.Background(), "alice")
		if err != nil {
			t.Fatal(err)
		}
		return len(ls)
	}
	if logins() != 1 {
		t.Fatal("activation did not reach the switch")
	}
	_ = c.ws.Close(websocket.StatusNormalClosure, "")
	eventually(t, "session expiry", func() bool { return b.srv.manager.SessionCount() == 0 })
	if n := logins(); n != 0 {
		t.Fatalf("switch still has %d logins after the session expired", n)
	}
	// A new connection gets a new session.
	_, sid2 := attach(t, b, "agent=alice")
	if sid2 == sid {
		t.Fatal("expired session resumed")
	}
}

// Without Redis, events older than the resume window leave the replay
// history (idle sessions hold none); a resume behind them gets the full
// state, one within them a replay.
func TestOldEventsLeaveTheReplayHistory(t *testing.T) {
	// Resume window, and so replay TTL: 1s + 500ms + 500ms.
	b := startBroker(t, "CTIBROKER_SESSION__GRACE=1s", "CTIBROKER_WS__PINGINTERVAL=500ms", "CTIBROKER_WS__PINGTIMEOUT=500ms")
	c, sid := attach(t, b, "agent=alice")
	c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1001", "type": "TELEPHONY"}})
	last := c.until(t, isEvent(protocol.EvStateUpdated))["seq"].(float64)
	ctx := context.Background()
	if _, ok, _ := b.srv.store.EventsSince(ctx, sid, 1, uint64(last)); !ok {
		t.Fatal("fresh events are not replayable")
	}
	deadline := time.Now().Add(b.srv.cfg.ReplayTTL() + 3*time.Second) // plus a housekeeping tick
	for {
		if _, ok, _ := b.srv.store.EventsSince(ctx, sid, 1, uint64(last)); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events older than %s are still kept", b.srv.cfg.ReplayTTL())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A newer event is replayed; the expired ones mean a full state.
	c.request(t, protocol.CmdChannelActivate, sid+".p", nil)
	c2 := mustDial(t, b, fmt.Sprintf("agent=alice&since=%d", int(last)))
	if first := c2.next(t); first["name"] != protocol.EvChannelInfoChanged {
		t.Fatalf("resume after an unexpired seq: first message %v, want the replayed channel.infochanged", first)
	}
	// A replay from 1 would start with the stored channel.created (seq 2);
	// the full state is a new channel.created with a new seq.
	c3 := mustDial(t, b, "agent=alice&since=1")
	if first := c3.next(t); first["name"] != protocol.EvChannelCreated || first["seq"].(float64) <= last {
		t.Fatalf("resume behind the history: first message %v, want the full state (a new channel.created)", first)
	}
}

func TestGraceKeepPolicyLeavesSwitchState(t *testing.T) {
	b := startBroker(t, "CTIBROKER_SESSION__GRACE=200ms", "CTIBROKER_SESSION__ONEXPIRE=keep")
	c, sid := attach(t, b, "agent=alice")
	c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1001", "type": "TELEPHONY"}})
	c.request(t, protocol.CmdChannelActivate, sid+".p", nil)
	c.request(t, protocol.CmdChannelReady, sid+".p", nil)
	_ = c.ws.Close(websocket.StatusNormalClosure, "")
	eventually(t, "session expiry", func() bool { return b.srv.manager.SessionCount() == 0 })
	// The next session learns the login from the switch, in its state.
	c2 := mustDial(t, b, "agent=alice")
	info := c2.until(t, isEvent(protocol.EvChannelInfoChanged))
	if s := fmt.Sprint(info["data"]); !strings.Contains(s, "ACTIVE") || !strings.Contains(s, "status:ready") {
		t.Fatalf("recreated channel: %s", s)
	}
}

func TestSlowConsumerClosedSessionKept(t *testing.T) {
	b := startBroker(t, "CTIBROKER_LIMITS__SENDQUEUE=16", "CTIBROKER_LIMITS__COMMANDRATE=0", "CTIBROKER_WS__WRITETIMEOUT=1s")
	c, sid := attach(t, b, "agent=alice")
	c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}})
	// A second connection that never reads takes the session over; then it
	// asks for far more than its queue and socket buffers hold (the address
	// book reply is over a kilobyte).
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+b.addr+"/v1/ws?agent=alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if code := c.waitClose(t); code != websocket.StatusCode(protocol.CloseTakenOver) {
		t.Fatalf("first connection closed with %d, want %d", code, protocol.CloseTakenOver)
	}
	req, _ := json.Marshal(map[string]any{"command": protocol.CmdAddressBook, "target": sid, "data": map[string]bool{"realtime": false}})
	for i := 0; i < 50000 && connCount(b) > 0; i++ {
		wctx, wcancel := context.WithTimeout(ctx, time.Second)
		err := ws.Write(wctx, websocket.MessageText, req)
		wcancel()
		if err != nil {
			break
		}
	}
	eventually(t, "slow-consumer close", func() bool { return connCount(b) == 0 })
	if n := b.srv.manager.SessionCount(); n != 1 {
		t.Fatalf("%d sessions after the slow-consumer close, want the session kept", n)
	}
	_, sid2 := attach(t, b, "agent=alice")
	if sid2 != sid {
		t.Fatalf("session not kept after slow-consumer close: %s != %s", sid2, sid)
	}
}

func connCount(b *testBroker) int {
	b.srv.mu.Lock()
	defer b.srv.mu.Unlock()
	return len(b.srv.conns)
}

func TestGracefulShutdownCloses1001(t *testing.T) {
	b := startBroker(t)
	c, _ := attach(t, b, "agent=alice")
	status := func(path string) int {
		resp, err := http.Get(b.url(path))
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if status("/healthz") != 200 || status("/readyz") != 200 {
		t.Fatal("health endpoints not OK")
	}
	done := make(chan struct{})
	go func() {
		b.stop()
		close(done)
	}()
	if code := c.waitClose(t); code != websocket.StatusGoingAway {
		t.Fatalf("closed with %d on shutdown, want 1001", code)
	}
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("shutdown did not finish")
	}
}

func TestAdapterPanicNeverKillsTheBroker(t *testing.T) {
	b := startBroker(t, "CTIBROKER_SESSION__GRACE=200ms")
	// A panic while reading the agent's logins: the attach fails, cleanly.
	if code, _ := b.sim(t, `{"event":"fault","agent":"alice","fault":"panic"}`); code != 202 {
		t.Fatal(code)
	}
	c := mustDial(t, b, "agent=alice")
	if code := c.waitClose(t); code != websocket.StatusCode(protocol.CloseTryAgainLater) {
		t.Fatalf("closed with %d, want %d", code, protocol.CloseTryAgainLater)
	}
	// A panic while the expired session logs the agent out.
	c, sid := attach(t, b, "agent=alice")
	c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}})
	c.request(t, protocol.CmdChannelActivate, sid+".p", nil)
	b.sim(t, `{"event":"fault","agent":"alice","fault":"panic"}`)
	_ = c.ws.Close(websocket.StatusNormalClosure, "")
	eventually(t, "session expiry", func() bool { return b.srv.manager.SessionCount() == 0 })
	// Still serving.
	_, sid2 := attach(t, b, "agent=alice")
	if sid2 == sid {
		t.Fatal("expired session resumed")
	}
}

func TestMetricsEndpoint(t *testing.T) {
	b := startBroker(t)
	c, sid := attach(t, b, "agent=alice")
	c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}})
	c.request(t, protocol.CmdChannelReady, sid+".p", nil) // INVALID_STATE
	resp, err := http.Get(b.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`ctibroker_connections{role="agent"} 1`,
		`ctibroker_sessions 1`,
		`ctibroker_commands_total{command="session.addchannel",result="success"} 1`,
		`ctibroker_commands_total{command="channel.ready",result="INVALID_STATE"} 1`,
		`ctibroker_command_duration_seconds_count{command="session.addchannel"} 1`,
		`ctibroker_events_published_total`,
		`ctibroker_events_delivered_total`,
		`ctibroker_adapter_call_duration_seconds_count{op="logins"} 1`,
		`ctibroker_store_duration_seconds_count{op="commit"}`,
		`ctibroker_slow_consumer_closes_total 0`,
		`go_goroutines`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestPprofListener(t *testing.T) {
	_, logs := startBrokerObserved(t, "CTIBROKER_DEBUG__LISTEN=127.0.0.1:0")
	addr := listenedAddr(t, logs, "pprof listening")
	eventually(t, "pprof", func() bool {
		resp, err := http.Get("http://" + addr + "/debug/pprof/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// Pings come from a timer, not a goroutine per connection: a peer that
// answers them stays connected across many intervals, one that never reads
// (so never answers) is dropped after the ping timeout.
func TestPingKeepsLivePeersAndDropsDeadOnes(t *testing.T) {
	b := startBroker(t, "CTIBROKER_WS__PINGINTERVAL=50ms", "CTIBROKER_WS__PINGTIMEOUT=200ms")

	var pings atomic.Int32
	ctx, cancel := context.WithTimeout(context.Background(), msgTimeout)
	defer cancel()
	live, _, err := websocket.Dial(ctx, "ws://"+b.addr+"/v1/ws?agent=alice", &websocket.DialOptions{
		OnPingReceived: func(context.Context, []byte) bool { pings.Add(1); return true }})
	if err != nil {
		t.Fatal(err)
	}
	defer live.CloseNow()
	liveClosed := make(chan error, 1)
	go func() {
		for {
			if _, _, err := live.Read(context.Background()); err != nil {
				liveClosed <- err
				return
			}
		}
	}()

	// dead never reads: its pongs are never sent.
	dead, _, err := websocket.Dial(ctx, "ws://"+b.addr+"/v1/ws?agent=bob", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dead.CloseNow()
	eventually(t, "two connections", func() bool { return b.srv.manager.SessionCount() == 2 })
	eventually(t, "the dead peer dropped", func() bool {
		b.srv.mu.Lock()
		defer b.srv.mu.Unlock()
		return len(b.srv.conns) == 1
	})
	eventually(t, "five pings answered", func() bool { return pings.Load() >= 5 })
	select {
	case err := <-liveClosed:
		t.Fatalf("the live peer was disconnected: %v", err)
	default:
	}
}

// Many WebSocket stacks ping on their own to keep proxies open. The
// broker's reader waits below the library, which answers pings: a client
// that pings is read the library's way from then on, and is answered while
// idle as while busy, a command between its pings or not.
func TestClientPingsAreAnsweredIdleOrBusy(t *testing.T) {
	b := startBroker(t)
	c, sid := attach(t, b, "agent=alice")
	ping := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), msgTimeout)
		defer cancel()
		if err := c.ws.Ping(ctx); err != nil {
			t.Fatalf("ping: %v", err)
		}
	}
	ping()
	ping()
	if r := c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}}); r["result"] != "success" {
		t.Fatalf("add channel after pings: %v", r)
	}
	ping()
	if r := c.request(t, protocol.CmdChannelActivate, sid+".p", nil); r["result"] != "success" {
		t.Fatalf("activate after a ping: %v", r)
	}
}

// The broker pings only a connection that was silent for a ping interval
// (nats-server's rule: a peer that sends is alive), and answers the client's
// own pings in the middle of replies and events: every message arrives
// intact and in order, and the connection stays up.
func TestPingsFollowTraffic(t *testing.T) {
	b := startBroker(t, "CTIBROKER_WS__PINGINTERVAL=50ms", "CTIBROKER_WS__PINGTIMEOUT=5s", "CTIBROKER_LIMITS__COMMANDRATE=0")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var pings atomic.Int32
	ws, _, err := websocket.Dial(ctx, "ws://"+b.addr+"/v1/ws?agent=alice", &websocket.DialOptions{
		OnPingReceived: func(context.Context, []byte) bool { pings.Add(1); return true }})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	msgs := make(chan map[string]any, 1024)
	go func() {
		defer close(msgs)
		for {
			_, data, err := ws.Read(ctx)
			if err != nil {
				return
			}
			var m map[string]any
			if err := json.Unmarshal(data, &m); err != nil {
				t.Errorf("a message arrived garbled: %v: %q", err, data)
				return
			}
			msgs <- m
		}
	}()
	var sid string
	lastSeq := 0.0
	// next returns the next message; events' seq must only grow.
	next := func() map[string]any {
		t.Helper()
		m, ok := <-msgs
		if !ok {
			t.Fatal("the connection closed")
		}
		if seq, ok := m["seq"].(float64); ok {
			if seq <= lastSeq {
				t.Fatalf("event seq %v after %v", seq, lastSeq)
			}
			lastSeq = seq
		}
		return m
	}
	for sid == "" {
		if m := next(); m["name"] == protocol.EvSessionInitialized {
			sid = m["target"].(string)
		}
	}
	request := func(command, target string, data any) {
		t.Helper()
		req, _ := json.Marshal(map[string]any{"command": command, "target": target, "data": data})
		if err := ws.Write(ctx, websocket.MessageText, req); err != nil {
			t.Fatal(err)
		}
		for {
			m := next()
			if r, ok := m["result"]; ok {
				if r != "success" {
					t.Fatalf("%s: %v", command, m)
				}
				return
			}
		}
	}
	pingErr := make(chan error, 1)
	stop := make(chan struct{})
	go func() { // the client pings the broker meanwhile
		for {
			select {
			case <-stop:
				pingErr <- nil
				return
			default:
			}
			if err := ws.Ping(ctx); err != nil {
				pingErr <- err
				return
			}
		}
	}()
	request("session.addchannel", sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1001", "type": "TELEPHONY"}})
	request("channel.activate", sid+".p", nil)
	before := pings.Load()
	start := time.Now()
	for i := 0; time.Since(start) < 500*time.Millisecond || i < 300; i++ {
		if i%2 == 0 {
			request("channel.ready", sid+".p", map[string]any{})
		} else {
			request("channel.notready", sid+".p", map[string]string{"reasoncode": "lunch"})
		}
	}
	close(stop)
	if err := <-pingErr; err != nil {
		t.Fatalf("the client's pings: %v", err)
	}
	if n := pings.Load() - before; n > 1 {
		t.Fatalf("%d pings from the broker during %v of steady traffic, with a 50 ms interval", n, time.Since(start))
	}
	// Silent now: the broker checks that the peer is there.
	quiet := pings.Load()
	eventually(t, "pings once the connection is silent", func() bool { return pings.Load()-quiet >= 3 })
}
