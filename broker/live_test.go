package broker

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/ctibroker/ctibroker/protocol"
)

// frames reads frames from ws until one holds a message named want,
// returning every frame read.
func framesUntil(t *testing.T, ws *websocket.Conn, want string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), msgTimeout)
	defer cancel()
	var frames []string
	for {
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v (after %v)", err, frames)
		}
		frames = append(frames, string(data))
		if strings.Contains(string(data), `"`+want+`"`) {
			return frames
		}
	}
}

// A client that offers ctibroker.v1.batch gets several messages per frame,
// one per line, each a JSON object, in the order they would have come one
// per frame; a client that does not gets one message per frame.
func TestBatchSubprotocolJoinsMessages(t *testing.T) {
	b := startBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), msgTimeout)
	defer cancel()
	for _, batch := range []bool{true, false} {
		opts := &websocket.DialOptions{Subprotocols: []string{SubprotocolBatch, Subprotocol}}
		want := SubprotocolBatch
		if !batch {
			opts.Subprotocols, want = []string{Subprotocol}, Subprotocol
		}
		agent := map[bool]string{true: "batcher", false: "plain"}[batch]
		ws, _, err := websocket.Dial(ctx, "ws://"+b.addr+"/v1/ws?agent="+agent, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		if ws.Subprotocol() != want {
			t.Fatalf("offered %v, chosen %q", opts.Subprotocols, ws.Subprotocol())
		}
		first := framesUntil(t, ws, protocol.EvSessionInitialized)
		var init struct{ Target string }
		_ = json.Unmarshal([]byte(first[len(first)-1]), &init)
		cmd := `{"command":"session.addchannel","target":"` + init.Target + `","data":{"channel":{"id":"p","name":"` + agent + `","type":"TELEPHONY"}}}`
		if err := ws.Write(ctx, websocket.MessageText, []byte(cmd)); err != nil {
			t.Fatal(err)
		}
		frames := framesUntil(t, ws, protocol.EvStateUpdated)
		var names []string
		joined := false
		for _, f := range frames {
			lines := strings.Split(f, "\n")
			joined = joined || len(lines) > 1
			for _, l := range lines {
				var m struct{ Command, Name string }
				if err := json.Unmarshal([]byte(l), &m); err != nil {
					t.Fatalf("a line is not a JSON message: %q", l)
				}
				names = append(names, m.Command+m.Name)
			}
		}
		if joined != batch {
			t.Fatalf("batch=%v: frames %q", batch, frames)
		}
		if got := strings.Join(names, ","); got != "session.addchannel,channel.created,channel.infochanged,channel.initialized,state.updated" {
			t.Fatalf("batch=%v: messages in order %s", batch, got)
		}
	}
}

// A compact subscription gets changes as ops: only what changed.
func TestCompactSubscription(t *testing.T) {
	b := startBroker(t)
	sv, svsid := attach(t, b, "supervisor=boss")
	r := sv.request(t, protocol.CmdSupervisorSubscribe, svsid, map[string]any{"format": "compact"})
	if r["result"] != "success" {
		t.Fatal(r)
	}
	sv.until(t, isEvent(protocol.EvSupervisorSnapshot))
	a, asid := attach(t, b, "agent=alice&teams=sales")
	appear := sv.until(t, isEvent(protocol.EvSupervisorAgentChanged))
	ops := appear["data"].(map[string]any)["ops"].([]any)
	if op := ops[0].(map[string]any); len(ops) != 1 || op["op"] != "add" || op["path"] != "" || op["value"].(map[string]any)["agentId"] != "alice" {
		t.Fatalf("appearing: %v", appear)
	}
	a.request(t, protocol.CmdAddChannel, asid, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}})
	added := sv.until(t, isEvent(protocol.EvSupervisorAgentChanged))
	data := added["data"].(map[string]any)
	if _, has := data["previous"]; has {
		t.Fatalf("a compact change with views: %v", added)
	}
	op := data["ops"].([]any)[0].(map[string]any)
	if op["op"] != "add" || op["path"] != "/channels/p" || op["value"].(map[string]any)["state"] != "INACTIVE" {
		t.Fatalf("a channel added: %v", added)
	}
	a.request(t, protocol.CmdChannelActivate, asid+".p", nil)
	activated := sv.until(t, isEvent(protocol.EvSupervisorAgentChanged))
	raw, _ := json.Marshal(activated["data"].(map[string]any)["ops"])
	if !strings.Contains(string(raw), `"path":"/channels/p/state","value":"ACTIVE"`) || strings.Contains(string(raw), `"/channels/p/name"`) {
		t.Fatalf("activated: %s", raw)
	}
}

// Live messages carry no seq and their timestamp is when the agent changed,
// not when the message was written.
func TestLiveMessagesHaveTheChangeTime(t *testing.T) {
	b := startBroker(t)
	sv, svsid := attach(t, b, "supervisor=boss")
	sv.request(t, protocol.CmdSupervisorSubscribe, svsid, map[string]any{})
	sv.until(t, isEvent(protocol.EvSupervisorSnapshot))
	before := time.Now().UnixMilli()
	_, _ = attach(t, b, "agent=alice&teams=sales")
	ch := sv.until(t, isEvent(protocol.EvSupervisorAgentChanged))
	if _, has := ch["seq"]; has {
		t.Fatalf("a live change with a seq: %v", ch)
	}
	if ts := int64(ch["timestamp"].(float64)); ts < before || ts > time.Now().UnixMilli() {
		t.Fatalf("timestamp %d not between %d and now", ts, before)
	}
}
