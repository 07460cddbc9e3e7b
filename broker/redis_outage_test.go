package broker

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/ctibroker/ctibroker/internal/redistest"
	"github.com/ctibroker/ctibroker/protocol"
)

func TestRedisRestartUnderTraffic(t *testing.T) {
	rs := redistest.Start(t)
	b := startBroker(t, append(redisEnv(rs), "CTIBROKER_LIMITS__COMMANDRATE=0")...)
	listener := follow(t, b.addr, "alice", "")
	c, sid := attach(t, b, "agent=alice")
	c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1001", "type": "TELEPHONY"}})
	c.request(t, protocol.CmdChannelActivate, sid+".p", nil)

	seqs := map[uint64]bool{}
	var firstSeq, lastSeq uint64
	codes := map[string]int{}
	var lastAcked string // "status/reason" after the last acknowledged command
	successes, sawUnready := 0, false
	phase := "before"
	for i := 0; phase != "done"; i++ {
		cmd, data := toggle(i)
		c.send(t, map[string]any{"command": cmd, "target": sid + ".p", "data": data, "requestId": strconv.Itoa(i)})
		for {
			m := c.next(t)
			if _, ok := m["name"].(string); ok {
				seq := seqOf(m)
				if seqs[seq] {
					t.Fatalf("seq %d delivered twice", seq)
				}
				if firstSeq == 0 {
					firstSeq = seq
				}
				seqs[seq], lastSeq = true, max(lastSeq, seq)
				continue
			}
			if m["result"] == "success" {
				successes++
				lastAcked = protocol.StatusReady + "/"
				if cmd == protocol.CmdChannelNotReady {
					lastAcked = protocol.StatusNotReady + "/" + data.(map[string]string)["reasoncode"]
				}
			} else {
				codes[m["failure"].(map[string]any)["code"].(string)]++
			}
			break
		}
		switch {
		case phase == "before" && successes == 30:
			rs.Stop()
			phase = "outage"
		case phase == "outage" && codes[string(protocol.CodeUnavailable)] >= 20 && b.readyz() == http.StatusServiceUnavailable:
			sawUnready = true
			rs.StartAgain()
			phase, successes = "after", 0
		case phase == "after" && successes == 30:
			phase = "done"
		}
		time.Sleep(2 * time.Millisecond)
	}
	if !sawUnready {
		t.Fatal("/readyz never reported the outage")
	}
	for code, n := range codes {
		if code != string(protocol.CodeUnavailable) {
			t.Fatalf("%d failures with %s during the outage; only UNAVAILABLE is expected", n, code)
		}
	}
	for seq := firstSeq; seq <= lastSeq; seq++ {
		if !seqs[seq] {
			t.Fatalf("seq %d never delivered (last %d)", seq, lastSeq)
		}
	}
	// The listener's pub/sub connection was re-subscribed after the outage:
	// it resynced from the stream, so it has every event, in order, once.
	checkContiguous(t, drainListener(t, listener, lastSeq), int(lastSeq))
	// A fresh connection (full state read back from the session) shows the
	// last acknowledged state.
	c2 := mustDial(t, b, "agent=alice")
	info := c2.until(t, isEvent(protocol.EvChannelInfoChanged))["data"].(map[string]any)["agentStatus"].(map[string]any)
	if got := fmt.Sprintf("%s/%s", info["status"], info["lastReasonCode"]); got != lastAcked {
		t.Fatalf("state after the outage %s, last acknowledged %s", got, lastAcked)
	}
	t.Logf("%d UNAVAILABLE during the outage, %d events, state %s", codes[string(protocol.CodeUnavailable)], lastSeq, lastAcked)
}
