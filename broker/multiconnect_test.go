package broker

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/ctibroker/ctibroker/internal/redistest"
	"github.com/ctibroker/ctibroker/protocol"
)

var shareEnv = []string{"CTIBROKER_SESSION__MULTICONNECT=share"}

// dialTab opens one of an agent's desktops with its own User-Agent and
// returns it with its session.initialized data.
func dialTab(t *testing.T, b *testBroker, query, userAgent string) (*client, map[string]any) {
	t.Helper()
	c, err := dial(t, b, query, http.Header{"User-Agent": {userAgent}})
	if err != nil {
		t.Fatal(err)
	}
	init := c.until(t, isEvent(protocol.EvSessionInitialized))
	return c, init["data"].(map[string]any)
}

// tabLog records what one tab receives: its events (seq and name), how
// many replies and state.updated events.
type tabLog struct {
	c                               *client
	events                          []string
	replies, failures, stateUpdates int
}

// pump reads the tab until done says so.
func (l *tabLog) pump(t *testing.T, done func() bool) {
	t.Helper()
	for !done() {
		m := l.c.next(t)
		switch {
		case m["result"] != nil:
			l.replies++
			if m["result"] != "success" {
				l.failures++
			}
		case m["seq"] != nil:
			l.events = append(l.events, fmt.Sprintf("%v %v", m["seq"], m["name"]))
			if m["name"] == protocol.EvStateUpdated {
				l.stateUpdates++
			}
		}
	}
}

// Two desktops of one agent share its session: both see the same events in
// the same order, each gets only its own replies, each knows about the
// other, and the session survives closing either.
func TestShareTwoTabsSeeTheSameEvents(t *testing.T) {
	b := startBroker(t, shareEnv...)
	tab1, init1 := dialTab(t, b, "agent=alice", "desk/1")
	sid := init1["sessionId"].(string)
	if init1["connections"].(map[string]any)["count"] != 1.0 || init1["connectionId"] == "" {
		t.Fatalf("first tab's session.initialized: %v", init1)
	}
	tab1.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1001", "type": "TELEPHONY"}})
	tab1.request(t, protocol.CmdChannelActivate, sid+".p", nil)

	tab2, init2 := dialTab(t, b, "agent=alice", "desk/2")
	conns := init2["connections"].(map[string]any)
	if init2["sessionId"] != sid || init2["resumed"] != true || conns["count"] != 2.0 {
		t.Fatalf("second tab's session.initialized: %v", init2)
	}
	list := conns["connections"].([]any)
	if list[0].(map[string]any)["userAgent"] != "desk/1" || list[1].(map[string]any)["userAgent"] != "desk/2" || list[1].(map[string]any)["id"] != init2["connectionId"] {
		t.Fatalf("connections: %v", conns)
	}
	changed := tab1.until(t, isEvent(protocol.EvSessionConnectionsChanged))
	if _, hasSeq := changed["seq"]; hasSeq || changed["data"].(map[string]any)["count"] != 2.0 {
		t.Fatalf("first tab's session.connections.changed: %v", changed)
	}

	// Commands from both tabs: each reply goes to its sender alone, the
	// events to both, in one order (the same seqs).
	logs := [2]*tabLog{{c: tab1}, {c: tab2}}
	steps := []struct {
		from    int
		command string
		data    any
	}{
		{0, protocol.CmdChannelReady, nil},
		{1, protocol.CmdChannelNotReady, map[string]any{"reasoncode": "lunch"}},
		{0, protocol.CmdChannelReady, nil},
		{1, protocol.CmdChannelNotReady, map[string]any{"reasoncode": "break"}},
	}
	for _, st := range steps {
		l := logs[st.from]
		l.c.send(t, map[string]any{"command": st.command, "target": sid + ".p", "data": st.data})
		n := l.replies
		l.pump(t, func() bool { return l.replies > n })
	}
	for i, l := range logs {
		l.pump(t, func() bool { return l.stateUpdates == len(steps) })
		if l.replies != 2 || l.failures != 0 {
			t.Fatalf("tab %d got %d replies (%d failures), want its own 2", i+1, l.replies, l.failures)
		}
	}
	if strings.Join(logs[0].events, ",") != strings.Join(logs[1].events, ",") {
		t.Fatalf("the tabs saw different events:\n%v\n%v", logs[0].events, logs[1].events)
	}

	// Closing the first tab: the second hears of it, and the session lives.
	_ = tab1.ws.Close(websocket.StatusNormalClosure, "")
	left := tab2.until(t, isEvent(protocol.EvSessionConnectionsChanged))
	if left["data"].(map[string]any)["count"] != 1.0 {
		t.Fatalf("after the first tab closed: %v", left)
	}
	if r := tab2.request(t, protocol.CmdChannelReady, sid+".p", nil); r["result"] != "success" {
		t.Fatalf("the session after one tab closed: %v", r)
	}
	tab3, init3 := dialTab(t, b, "agent=alice", "desk/3")
	if init3["sessionId"] != sid {
		t.Fatalf("a third tab got another session: %v", init3)
	}
	_ = tab3
}

// Both tabs see every event of the switch (not just of commands) in the
// same order, with the same seqs.
func TestShareTabsSeeSwitchEventsInOneOrder(t *testing.T) {
	b := startBroker(t, shareEnv...)
	tab1, init1 := dialTab(t, b, "agent=alice", "a")
	sid := init1["sessionId"].(string)
	tab1.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1001", "type": "TELEPHONY"}})
	tab1.request(t, protocol.CmdChannelActivate, sid+".p", map[string]any{"channeloptions": map[string]any{"queue": "sales"}})
	tab1.request(t, protocol.CmdChannelReady, sid+".p", nil)
	tab2, _ := dialTab(t, b, "agent=alice", "b")
	tab1.until(t, isEvent(protocol.EvSessionConnectionsChanged))
	for i := range 5 {
		if code, resp := b.simAt(t, "/v1/sim/calls", fmt.Sprintf(`{"queue":"sales","from":"55%d"}`, i)); code != 202 {
			t.Fatalf("sim call: %d %v", code, resp)
		}
	}
	// The first call is offered to alice; she takes it from the second tab
	// and hangs up from the first. Both tabs see all of it, alike.
	logs := [2]*tabLog{{c: tab1}, {c: tab2}}
	ixOf := func(l *tabLog) string {
		var id string
		for id == "" {
			m := l.c.next(t)
			if m["seq"] != nil {
				l.events = append(l.events, fmt.Sprintf("%v %v", m["seq"], m["name"]))
			}
			if m["name"] == protocol.EvInteractionCreated {
				id = m["data"].(map[string]any)["interaction"].(map[string]any)["id"].(string)
			}
		}
		return id
	}
	ix := ixOf(logs[0])
	if ixOf(logs[1]) != ix {
		t.Fatal("the tabs were offered different calls")
	}
	for _, st := range []struct {
		from    int
		command string
	}{{1, protocol.CmdInteractionAccept}, {0, protocol.CmdInteractionRelease}} {
		l := logs[st.from]
		l.c.send(t, map[string]any{"command": st.command, "target": sid + ".p." + ix})
		n := l.replies
		l.pump(t, func() bool { return l.replies > n })
		if l.failures > 0 {
			t.Fatalf("%s from tab %d failed", st.command, st.from+1)
		}
	}
	ended := func(l *tabLog) func() bool {
		return func() bool {
			return len(l.events) > 0 && strings.HasSuffix(l.events[len(l.events)-1], protocol.EvInteractionEnded)
		}
	}
	for _, l := range logs {
		l.pump(t, ended(l))
	}
	if strings.Join(logs[0].events, ",") != strings.Join(logs[1].events, ",") {
		t.Fatalf("the tabs saw different events:\n%v\n%v", logs[0].events, logs[1].events)
	}
}

// When the last tab leaves, the session waits for its grace period and a
// tab that comes back resumes it.
func TestShareGraceStartsWhenTheLastTabLeaves(t *testing.T) {
	b := startBroker(t, append(shareEnv, "CTIBROKER_SESSION__GRACE=300ms")...)
	tab1, init1 := dialTab(t, b, "agent=alice", "a")
	sid := init1["sessionId"].(string)
	tab2, _ := dialTab(t, b, "agent=alice", "b")
	_ = tab1.ws.Close(websocket.StatusNormalClosure, "")
	tab2.until(t, isEvent(protocol.EvSessionConnectionsChanged))
	time.Sleep(600 * time.Millisecond) // two grace periods with one tab left: the session must live
	if r := tab2.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1001", "type": "TELEPHONY"}}); r["result"] != "success" {
		t.Fatalf("the session with one tab left after the grace period: %v", r)
	}
	_ = tab2.ws.Close(websocket.StatusNormalClosure, "")
	eventually(t, "the session to end after its grace period", func() bool { return b.srv.manager.SessionCount() == 0 })
}

// Across nodes: a tab that reaches node B while the agent's session has
// tabs on node A is closed with 4003 and told to go to A (node.url); there
// it joins the session. Once no tab is left on A, B takes the session
// over as usual.
func TestClusterShareSendsTheTabToTheOwner(t *testing.T) {
	rs := redistest.Start(t)
	a := startNode(t, rs, "share-a", shareEnv...)
	a.env = append(a.env, "CTIBROKER_NODE__URL=ws://"+a.addr+"/v1/ws")
	a.kill()
	a.start()
	b := startNode(t, rs, "share-b", shareEnv...)
	tab1, init1 := dialTab(t, a.broker(), "agent=alice", "a")
	sid := init1["sessionId"].(string)
	tab2, err := dial(t, b.broker(), "agent=alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	ce := tab2.waitCloseFrame(t)
	if ce.Code != websocket.StatusCode(protocol.CloseMoved) || ce.Reason != "ws://"+a.addr+"/v1/ws" {
		t.Fatalf("a tab on node B: closed %d %q, want 4003 with node A's URL", ce.Code, ce.Reason)
	}
	if r := tab1.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1001", "type": "TELEPHONY"}}); r["result"] != "success" {
		t.Fatalf("the first tab after the second was sent away: %v", r)
	}
	tab2, init2 := dialTab(t, a.broker(), "agent=alice", "b") // where 4003 said
	if init2["sessionId"] != sid || init2["connections"].(map[string]any)["count"] != 2.0 {
		t.Fatalf("the tab on node A: %v", init2)
	}
	_ = tab1.ws.Close(websocket.StatusNormalClosure, "")
	_ = tab2.ws.Close(websocket.StatusNormalClosure, "")
	// No tab left on A: B takes the session over, with its state.
	eventually(t, "node B to take the session", func() bool {
		c, err := dial(t, b.broker(), "agent=alice&since=1", nil)
		if err != nil {
			return false
		}
		m := c.until(t, isEvent(protocol.EvSessionInitialized))
		return m["target"] == sid
	})
}
