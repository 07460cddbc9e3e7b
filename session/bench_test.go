package session

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/ctibroker/ctibroker/protocol"
)

// benchConn is a Conn that hands batches to a channel.
type benchConn struct{ out chan [][]byte }

func (c *benchConn) Send(msgs [][]byte, done func()) bool {
	c.out <- msgs
	if done != nil {
		done()
	}
	return true
}
func (c *benchConn) Close(protocol.CloseCode, string) {}
func (c *benchConn) RemoteAddr() string               { return "bench" }

// BenchmarkDispatch: a command through a session (decode, FSM, adapter,
// commit, encode, hand-off to the connection), without a network.
func BenchmarkDispatch(b *testing.B) {
	m, _ := testManager(b, Options{})
	conn := &benchConn{out: make(chan [][]byte, 16)}
	s, err := m.Attach(context.Background(), Identity{AgentID: "a", Role: RoleAgent}, conn, nil)
	if err != nil {
		b.Fatal(err)
	}
	<-conn.out
	submit := func(frame string) {
		if err := s.Submit(conn, Frame{Data: []byte(frame), Received: time.Now()}); err != nil {
			b.Fatal(err)
		}
		<-conn.out
	}
	submit(fmt.Sprintf(`{"command":"session.addchannel","target":%q,"data":{"channel":{"id":"p","name":"1","type":"TELEPHONY"}}}`, s.ID()))
	submit(fmt.Sprintf(`{"command":"channel.activate","target":"%s.p"}`, s.ID()))
	frames := []string{
		fmt.Sprintf(`{"command":"channel.ready","target":"%s.p"}`, s.ID()),
		fmt.Sprintf(`{"command":"channel.notready","target":"%s.p","data":{"reasoncode":"lunch"}}`, s.ID()),
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		submit(frames[i%2])
		i++
	}
}

// BenchmarkSupervisorChangeEncode compares encoding one agent change for 50
// subscriptions: once and spliced (what the board does) against once per
// subscription (what it did before).
func BenchmarkSupervisorChangeEncode(b *testing.B) {
	view := &protocol.AgentView{AgentID: "alice", SessionID: "0123456789abcdef01234567", Teams: []string{"sales"}, Status: "ready",
		StatusSince: 1700000000000, Channels: []protocol.ChannelState{{ID: "phone", Name: "1001", Type: "TELEPHONY", State: "ACTIVE",
			Status: "ready", Since: 1700000000000, Queues: []string{"sales"}}}}
	subs := make([][]byte, 50)
	for i := range subs {
		subs[i] = protocol.AppendString(nil, fmt.Sprintf("sub%09d", i))
	}
	b.Run("once", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c := Change{AgentID: "alice", Prev: view, Cur: view, enc: encodeChange("alice", view, view)}
			for _, sub := range subs {
				_ = c.AppendData(nil, sub)
			}
		}
	})
	b.Run("per-subscription", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for i := range subs {
				_, _ = json.Marshal(protocol.AgentChanged{SubscriptionID: fmt.Sprintf("sub%09d", i), AgentID: "alice", Previous: view, Current: view})
			}
		}
	})
}
