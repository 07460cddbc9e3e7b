package broker

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/ctibroker/ctibroker/protocol"
)

func TestSupervisorSinceGetsMissedChanges(t *testing.T) {
	b := startBroker(t)
	sv, svsid := attach(t, b, "supervisor=boss")
	sub := sv.request(t, protocol.CmdSupervisorSubscribe, svsid, map[string]any{})
	if sub["result"] != "success" {
		t.Fatal(sub)
	}
	snap := sv.until(t, isEvent(protocol.EvSupervisorSnapshot))
	lastSeen := seqOf(snap)
	_ = sv.ws.CloseNow()

	// While the supervisor is away, alice logs in and changes state.
	a, asid := attach(t, b, "agent=alice&teams=sales")
	a.request(t, protocol.CmdAddChannel, asid, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}})
	a.request(t, protocol.CmdChannelActivate, asid+".p", nil)
	a.request(t, protocol.CmdChannelReady, asid+".p", nil)

	// Back with since=: exactly the missed changes, in order, without a gap.
	// Those the board had not handed to the supervisor's session yet when it
	// resumed follow session.initialized live, with the next seqs.
	sv2 := mustDial(t, b, fmt.Sprintf("supervisor=boss&since=%d", lastSeen))
	var statuses []string
	resumed := false
	for !resumed || len(statuses) < 4 {
		m := sv2.next(t)
		if m["name"] == protocol.EvSessionInitialized {
			if resumed || m["target"] != svsid || m["data"].(map[string]any)["resumed"] != true {
				t.Fatalf("not resumed once: %v", m)
			}
			resumed = true
			lastSeen = seqOf(m) // it has a seq of its own
			continue
		}
		if m["name"] != protocol.EvSupervisorAgentChanged || seqOf(m) != lastSeen+1 {
			t.Fatalf("unexpected event %v after seq %d", m, lastSeen)
		}
		lastSeen++
		cur, _ := m["data"].(map[string]any)["current"].(map[string]any)
		statuses = append(statuses, fmt.Sprint(cur["status"]))
	}
	// appear (logged out), channel added, not_ready, ready
	if got := strings.Join(statuses, ","); got != "logged_out,logged_out,not_ready,ready" {
		t.Fatalf("missed changes replayed as %s", got)
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
