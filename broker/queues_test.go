package broker

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/ctibroker/ctibroker/internal/redistest"
	"github.com/ctibroker/ctibroker/protocol"
)

// scenarioQueues: the sales queue with a service level of 1 s.
const scenarioQueues = `
adapter:
  sim:
    queues:
      - {name: sales, mediatype: TELEPHONY, teams: [sales], servicelevel: 1s}
`

// scenarioFigures are the sales queue's figures after playQueueScenario.
var scenarioFigures = map[string]float64{
	"offered": 4, "answered": 1, "abandoned": 2, "waiting": 1,
	"answeredWithinServiceLevel": 1, "abandonedAfterServiceLevel": 1, "serviceLevelPct": 50, "serviceLevelSec": 1,
	"staffed": 1, "busy": 1, "ready": 0, "afterCallWork": 0, "notReady": 0,
}

// playQueueScenario plays a scripted morning on the sales queue of b's
// switch: alice answers the first call at once (within the service level);
// of the two that queue behind it, one caller gives up at once (within
// it), the other after more than a second (after it); a fourth call is
// still waiting.
func playQueueScenario(t *testing.T, b *testBroker) {
	t.Helper()
	alice, asid := attach(t, b, "agent=alice&teams=sales")
	alice.request(t, protocol.CmdAddChannel, asid, map[string]any{"channel": map[string]string{"id": "p", "name": "1001", "type": "TELEPHONY"}})
	alice.request(t, protocol.CmdChannelActivate, asid+".p", map[string]any{"channeloptions": map[string]any{"queue": "sales"}})
	alice.request(t, protocol.CmdChannelReady, asid+".p", nil)
	call := func() string {
		t.Helper()
		code, resp := b.simAt(t, "/v1/sim/calls", `{"queue":"sales","from":"555"}`)
		if code != 202 {
			t.Fatalf("sim call: %d %v", code, resp)
		}
		return resp["interaction"].(string)
	}
	first := call()
	eventually(t, "the first call answered", func() bool {
		return alice.request(t, protocol.CmdInteractionAccept, asid+".p."+first, nil)["result"] == "success"
	})
	second, third := call(), call()
	queued := time.Now()
	abandon := func(id string) {
		t.Helper()
		if code, resp := b.simAt(t, "/v1/sim/interactions/"+id, `{"event":"abandon"}`); code != 202 {
			t.Fatalf("abandon: %d %v", code, resp)
		}
	}
	abandon(third)
	eventually(t, "the second caller to wait past the service level", func() bool { return time.Since(queued) > 1200*time.Millisecond })
	abandon(second)
	call()
}

// figuresMatch compares a queue's figures with scenarioFigures.
func figuresMatch(q map[string]any) bool {
	for k, want := range scenarioFigures {
		if got, _ := q[k].(float64); got != want {
			return false
		}
	}
	return q["longestWaitStart"] != nil && q["avgSpeedOfAnswerMs"] != nil
}

// checkQueueChanges checks that a subscription's changes of one queue form
// a chain (each previous is the last current: none lost) that ends with
// the scenario's figures.
func checkQueueChanges(t *testing.T, sv interface {
	until(testing.TB, func(map[string]any) bool) map[string]any
}, snapshot map[string]any) {
	t.Helper()
	last := snapshot
	sv.until(t, func(m map[string]any) bool {
		if m["name"] != protocol.EvSupervisorQueueChanged {
			return false
		}
		d := m["data"].(map[string]any)
		if d["queue"] != "sales" {
			t.Fatalf("a change of another queue: %v", m)
		}
		if !reflect.DeepEqual(d["previous"], last) {
			t.Fatalf("a change's previous is not the last current (a change was lost):\nprevious %v\nlast     %v", d["previous"], last)
		}
		last, _ = d["current"].(map[string]any)
		return figuresMatch(last)
	})
}

// subscribeQueues subscribes a supervisor to every queue it may see and
// returns the sales queue of the snapshot.
func subscribeQueues(t *testing.T, sv *client, svsid string) map[string]any {
	t.Helper()
	if r := sv.request(t, protocol.CmdSupervisorSubscribe, svsid, map[string]any{"queues": []string{}}); r["result"] != "success" {
		t.Fatalf("subscribe to queues: %v", r)
	}
	snap := sv.until(t, isEvent(protocol.EvSupervisorSnapshot))
	qs, _ := snap["data"].(map[string]any)["queues"].([]any)
	if len(qs) != 1 || qs[0].(map[string]any)["name"] != "sales" {
		t.Fatalf("snapshot queues: %v", snap)
	}
	return qs[0].(map[string]any)
}

// One node: the figures of a scripted scenario, exactly, in the
// supervisor's subscription (every change, in order), its SSE stream, and
// REST.
func TestQueueFiguresFollowAScriptedScenario(t *testing.T) {
	b := startBrokerYAML(t, scenarioQueues)
	sv, svsid := attach(t, b, "supervisor=boss")
	start := subscribeQueues(t, sv, svsid)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, code := openStream(t, ctx, b.url("/v1/watch/queues"), nil, "")
	if code != 200 {
		t.Fatalf("GET /v1/watch/queues: %d", code)
	}
	if ev := <-stream; ev.name != protocol.EvSupervisorSnapshot {
		t.Fatalf("first stream event: %v", ev)
	}
	playQueueScenario(t, b)
	checkQueueChanges(t, sv, start)
	deadline := time.After(10 * time.Second)
	for done := false; !done; {
		select {
		case ev := <-stream:
			cur, _ := ev.data["current"].(map[string]any)
			done = ev.name == protocol.EvSupervisorQueueChanged && figuresMatch(cur)
		case <-deadline:
			t.Fatal("the SSE stream did not reach the scenario's figures")
		}
	}
	if code, q := getJSON(t, b.url("/v1/queues/sales"), nil); code != 200 || !figuresMatch(q) {
		t.Fatalf("GET /v1/queues/sales: %d %v, want %v", code, q, scenarioFigures)
	}
}

// Two nodes on one Redis: the calls are on node A's switch, the supervisor
// on node B sees their figures exactly, and both nodes' REST agree.
func TestClusterQueueFiguresAreTheSameOnEveryNode(t *testing.T) {
	rs := redistest.Start(t)
	a, b := startNodeYAML(t, rs, "q-a", scenarioQueues), startNodeYAML(t, rs, "q-b", scenarioQueues)
	sv, svsid := attach(t, b.broker(), "supervisor=boss")
	start := subscribeQueues(t, sv, svsid)
	playQueueScenario(t, a.broker())
	checkQueueChanges(t, sv, start)
	for _, n := range []*node{a, b} {
		eventually(t, "node "+n.id+"'s figures", func() bool {
			code, q := getJSON(t, n.broker().url("/v1/queues/sales"), nil)
			return code == 200 && figuresMatch(q)
		})
	}
}
