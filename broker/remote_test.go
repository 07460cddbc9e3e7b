package broker

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ctibroker/ctibroker/internal/redistest"
	"github.com/ctibroker/ctibroker/protocol"
)

// activeAgent attaches an agent with a telephony channel logged into the
// sales queue and returns its client and session id.
func activeAgent(t *testing.T, b *testBroker, agent string) (*client, string) {
	t.Helper()
	c, sid := attach(t, b, "agent="+agent)
	c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "n-" + agent, "type": "TELEPHONY"}})
	if r := c.request(t, protocol.CmdChannelActivate, sid+".p", map[string]any{"channeloptions": map[string]any{"queue": "sales"}}); r["result"] != "success" {
		t.Fatalf("activate %s: %v", agent, r)
	}
	return c, sid
}

func linkEvent(up bool) func(map[string]any) bool {
	return func(m map[string]any) bool {
		d, _ := m["data"].(map[string]any)
		return m["name"] == protocol.EvSessionCTILinkChanged && d["up"] == up
	}
}

// Killing the adapter process mid-traffic: the desktop is told, commands
// fail with CTI_LINK_DOWN well within adapter.timeout, and nothing hangs.
// When the process is back (a new switch that lost the agent's login) the
// desktop is told again and sees the switch's state; commands work again.
func TestRemoteAdapterKilledAndBack(t *testing.T) {
	sim := startSimAdapter(t)
	b := startBrokerRemote(t, sim, "CTIBROKER_ADAPTER__TIMEOUT=2s")
	alice, sid := activeAgent(t, b, "alice")
	for i := range 10 { // traffic
		cmd, data := toggle(i)
		if r := alice.request(t, cmd, sid+".p", data); r["result"] != "success" {
			t.Fatalf("command %d: %v", i, r)
		}
	}
	sim.kill()
	alice.until(t, linkEvent(false))
	start := time.Now()
	r := alice.request(t, protocol.CmdChannelReady, sid+".p", nil)
	if f, _ := r["failure"].(map[string]any); f["code"] != string(protocol.CodeCTILinkDown) {
		t.Fatalf("a command while the adapter is down: %v", r)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("CTI_LINK_DOWN took %v: it must not wait for the deadline", took)
	}
	sim.start()
	alice.until(t, linkEvent(true))
	// The new process lost alice's login: the switch is the truth.
	alice.until(t, func(m map[string]any) bool {
		d, _ := m["data"].(map[string]any)
		return m["name"] == protocol.EvChannelInfoChanged && d["state"] == "INACTIVE"
	})
	if r := alice.request(t, protocol.CmdChannelActivate, sid+".p", nil); r["result"] != "success" {
		t.Fatalf("activate after the adapter came back: %v", r)
	}
	if r := alice.request(t, protocol.CmdChannelReady, sid+".p", nil); r["result"] != "success" {
		t.Fatalf("ready after the adapter came back: %v", r)
	}
}

// A call the switch is slow to answer for one agent never delays another
// agent's: calls go out concurrently over the one connection.
func TestRemoteSlowAgentDoesNotDelayAnother(t *testing.T) {
	sim := startSimAdapter(t)
	b := startBrokerRemote(t, sim, "CTIBROKER_ADAPTER__TIMEOUT=3s")
	alice, asid := activeAgent(t, b, "alice")
	bob, bsid := activeAgent(t, b, "bob")
	if code, resp := b.sim(t, `{"event":"fault","agent":"alice","fault":"timeout"}`); code != 202 {
		t.Fatalf("fault: %d %v", code, resp)
	}
	alice.send(t, map[string]any{"command": protocol.CmdChannelReady, "target": asid + ".p"})
	time.Sleep(100 * time.Millisecond) // alice's call is on the switch
	start := time.Now()
	if r := bob.request(t, protocol.CmdChannelReady, bsid+".p", nil); r["result"] != "success" {
		t.Fatalf("bob: %v", r)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("bob's command took %v while alice's call hung", took)
	}
	r := alice.until(t, func(m map[string]any) bool { return m["result"] != nil })
	if f, _ := r["failure"].(map[string]any); f["code"] != string(protocol.CodeTimeout) {
		t.Fatalf("alice's hung call: %v", r)
	}
}

// Two broker nodes on one Redis share one adapter process. Node A is
// killed; alice resumes on node B, which registers her with the adapter:
// the switch's next call for her reaches her through node B.
func TestClusterRemoteAdapterFailover(t *testing.T) {
	rs := redistest.Start(t)
	sim := startSimAdapter(t)
	a := startNode(t, rs, "rem-a", sim.remoteEnv()...)
	b := startNode(t, rs, "rem-b", sim.remoteEnv()...)
	alice, sid := activeAgent(t, a.broker(), "alice")
	if r := alice.request(t, protocol.CmdChannelReady, sid+".p", nil); r["result"] != "success" {
		t.Fatal(r)
	}
	last := alice.until(t, isEvent(protocol.EvStateUpdated))
	a.kill()
	var back *client
	eventually(t, "alice to resume on node B", func() bool {
		c, err := dial(t, b.broker(), fmt.Sprintf("agent=alice&since=%d", seqOf(last)), nil)
		if err != nil {
			return false
		}
		m := c.until(t, isEvent(protocol.EvSessionInitialized))
		back = c
		return m["target"] == sid
	})
	tb := b.broker()
	tb.simBase = "http://" + sim.control
	if code, resp := tb.simAt(t, "/v1/sim/calls", `{"queue":"sales","from":"555"}`); code != 202 {
		t.Fatalf("sim call: %d %v", code, resp)
	}
	created := back.until(t, isEvent(protocol.EvInteractionCreated))
	if created["target"] != sid+".p" {
		t.Fatalf("the call on node B: %v", created)
	}
}

// The conformance kit, as adapter authors run it (ctibroker adapter
// check), passes against the simulator's adapter process.
func TestAdapterCheckCommandAgainstTheSimProcess(t *testing.T) {
	sim := startSimAdapter(t)
	out, err := exec.Command(brokerBinary(t), "adapter", "check", "--addr", sim.addr, "--timeout", "3s").CombinedOutput()
	if err != nil || strings.Count(string(out), "PASS ") != 15 {
		t.Fatalf("ctibroker adapter check: %v\n%s", err, out)
	}
}

// An adapter process that knows an agent's name gives it to the broker
// (the display name document): supervisors' views show it.
func TestRemoteAdapterGivesDisplayNames(t *testing.T) {
	sim := startSimAdapter(t, "CTIBROKER_ADAPTER__SIM__AGENTS__ALICE__NAME=Alice Martin")
	b := startBrokerRemote(t, sim)
	activeAgent(t, b, "alice")
	eventually(t, "alice's name in the view", func() bool {
		_, v := getJSON(t, b.url("/v1/agents/alice"), nil)
		return v["displayName"] == "Alice Martin"
	})
}
