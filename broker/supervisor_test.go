package broker

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/coder/websocket"

	"github.com/ctibroker/ctibroker/protocol"
)

// A supervisor's changes are a live view, not a history: they carry no seq
// and are not replayed. Back with since=, the supervisor's session resumes
// and every subscription starts again from a resync snapshot, which has
// what changed while it was away.
func TestSupervisorReconnectGetsResyncSnapshot(t *testing.T) {
	b := startBroker(t)
	sv, svsid := attach(t, b, "supervisor=boss")
	sub := sv.request(t, protocol.CmdSupervisorSubscribe, svsid, map[string]any{})
	if sub["result"] != "success" {
		t.Fatal(sub)
	}
	snap := sv.until(t, isEvent(protocol.EvSupervisorSnapshot))
	if _, has := snap["seq"]; has || snap["data"].(map[string]any)["reason"] != protocol.SnapshotSubscribed {
		t.Fatalf("a live snapshot: %v", snap)
	}
	_ = sv.ws.CloseNow()

	// While the supervisor is away, alice logs in and changes state.
	a, asid := attach(t, b, "agent=alice&teams=sales")
	a.request(t, protocol.CmdAddChannel, asid, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}})
	a.request(t, protocol.CmdChannelActivate, asid+".p", nil)
	a.request(t, protocol.CmdChannelReady, asid+".p", nil)

	// The board follows the agents' events: wait until it has the last one.
	eventually(t, "alice ready on the board", func() bool {
		_, body := getJSON(t, b.url("/v1/agents/alice"), nil)
		return body["status"] == "ready"
	})
	sv2 := mustDial(t, b, "supervisor=boss&since=1")
	init := sv2.next(t)
	if init["name"] != protocol.EvSessionInitialized || init["target"] != svsid || init["data"].(map[string]any)["resumed"] != true {
		t.Fatalf("first message after the reconnect: %v", init)
	}
	resync := sv2.next(t)
	data, _ := resync["data"].(map[string]any)
	if resync["name"] != protocol.EvSupervisorSnapshot || data["reason"] != protocol.SnapshotResync || data["subscriptionId"] != sub["data"].(map[string]any)["subscriptionId"] {
		t.Fatalf("second message after the reconnect: %v", resync)
	}
	agents := data["agents"].([]any)
	if len(agents) != 1 || agents[0].(map[string]any)["status"] != "ready" {
		t.Fatalf("resync snapshot agents: %v", agents)
	}
	// And the changes go on.
	a.request(t, protocol.CmdChannelNotReady, asid+".p", map[string]any{"reasoncode": "lunch"})
	ch := sv2.until(t, isEvent(protocol.EvSupervisorAgentChanged))
	if cur := ch["data"].(map[string]any)["current"].(map[string]any); cur["status"] != "not_ready" {
		t.Fatalf("change after the resync: %v", ch)
	}
}

func TestWatchSSE(t *testing.T) {
	b := startBroker(t)
	a, asid := attach(t, b, "agent=alice&teams=sales")
	a.request(t, protocol.CmdAddChannel, asid, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}})
	attach(t, b, "agent=bob&teams=support")

	events := followURL(t, b.url("/v1/watch/agents?teams=sales"), "")
	first := <-events
	if first.name != protocol.EvSupervisorSnapshot || first.data["reason"] != "subscribed" {
		t.Fatalf("first event: %+v", first)
	}
	agents := first.data["agents"].([]any)
	if len(agents) != 1 || agents[0].(map[string]any)["agentId"] != "alice" {
		t.Fatalf("snapshot agents: %v", agents)
	}
	a.request(t, protocol.CmdChannelActivate, asid+".p", nil)
	ch := <-events
	if ch.name != protocol.EvSupervisorAgentChanged || ch.data["current"].(map[string]any)["status"] != "not_ready" {
		t.Fatalf("change: %+v", ch)
	}
	// Resuming with Last-Event-ID starts with a snapshot that says resync.
	again := followURL(t, b.url("/v1/watch/agents?teams=sales"), ch.id)
	if ev := <-again; ev.name != protocol.EvSupervisorSnapshot || ev.data["reason"] != "resync" {
		t.Fatalf("resumed stream starts with %+v", ev)
	}
	// An agent may not watch others; a supervisor not other teams.
	code, body := getJSON(t, b.url("/v1/watch/agents?agent=alice"), nil)
	if code != http.StatusForbidden {
		t.Fatalf("agent watching everyone: %d %v", code, body)
	}
}

// followURL streams any SSE endpoint.
func followURL(t *testing.T, url, lastEventID string) <-chan sseEvent {
	t.Helper()
	return followRequest(t, context.Background(), url, lastEventID)
}

// A supervisor's action reaches an agent who is offline within the grace
// period: the session applies it, and the desktop that comes back with
// since= gets the change with who made it.
func TestSupervisorActsOnAnOfflineAgent(t *testing.T) {
	b := startBroker(t)
	alice, asid := attach(t, b, "agent=alice&teams=sales")
	alice.request(t, protocol.CmdAddChannel, asid, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}})
	act := alice.request(t, protocol.CmdChannelActivate, asid+".p", nil)
	if act["result"] != "success" {
		t.Fatal(act)
	}
	st := alice.until(t, isEvent(protocol.EvStateUpdated))
	// Close waits for the broker's close frame: alice's reader is done.
	if err := alice.ws.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatal(err)
	}
	sv, svsid := attach(t, b, "supervisor=boss")
	if r := sv.request(t, protocol.CmdSupervisorSetState, svsid, map[string]any{"agentId": "alice", "status": "ready"}); r["result"] != "success" {
		t.Fatalf("setstate on an offline agent: %v", r)
	}
	back := mustDial(t, b, fmt.Sprintf("agent=alice&since=%d", int64(st["seq"].(float64))))
	m := back.until(t, isEvent(protocol.EvChannelInfoChanged))
	d := m["data"].(map[string]any)
	if by, _ := d["changedBy"].(map[string]any); by["id"] != "boss" || d["agentStatus"].(map[string]any)["status"] != "ready" {
		t.Fatalf("the replay after the grace period: %v", m)
	}
}
