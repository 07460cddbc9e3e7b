package session

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/ctibroker/ctibroker/protocol"
)

// benchConn is a Conn that hands batches to a channel.
type benchConn struct{ out chan []Message }

func (c *benchConn) Send(msgs []Message, done func()) bool {
	c.out <- msgs
	if done != nil {
		done()
	}
	return true
}
func (c *benchConn) Close(protocol.CloseCode, string) {}
func (c *benchConn) RemoteAddr() string               { return "bench" }
func (c *benchConn) UserAgent() string                { return "bench" }

// BenchmarkDispatch: a command through a session (decode, FSM, adapter,
// commit, encode, hand-off to the connection), without a network.
func BenchmarkDispatch(b *testing.B) {
	m, _ := testManager(b, Options{})
	conn := &benchConn{out: make(chan []Message, 16)}
	s, err := m.Attach(context.Background(), Identity{AgentID: "a", Role: RoleAgent}, conn, nil)
	if err != nil {
		b.Fatal(err)
	}
	<-conn.out
	submit := func(frame string) {
		if err := s.Submit(conn, NewFrame([]byte(frame), false, nil)); err != nil {
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
// subscriptions: once, its message tail shared by every subscription (what
// the board and the feeds do), once and spliced per subscription (what
// they did before), and once per subscription (before that).
func BenchmarkSupervisorChangeEncode(b *testing.B) {
	view := &protocol.AgentView{AgentID: "alice", SessionID: "0123456789abcdef01234567", Teams: []string{"sales"}, Status: "ready",
		StatusSince: 1700000000000, Channels: []protocol.ChannelState{{ID: "phone", Name: "1001", Type: "TELEPHONY", State: "ACTIVE",
			Status: "ready", Since: 1700000000000, Queues: []string{"sales"}}}}
	subs := make([][]byte, 50)
	lives := make([]*liveSub, 50)
	for i := range subs {
		subs[i] = protocol.AppendString(nil, fmt.Sprintf("sub%09d", i))
		lives[i] = newLiveSub("0123456789abcdef01234567", fmt.Sprintf("sub%09d", i), false)
	}
	msgs := make([]Message, 0, len(lives))
	b.Run("shared", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			enc := &encodedChange{agent: protocol.AppendString(nil, "alice"), prevView: view, curView: view, at: 1700000000000}
			body := enc.bodyFor(true, true, false)
			msgs = msgs[:0]
			for _, l := range lives {
				msgs = append(msgs, Message{Head: l.head, Body: body})
			}
		}
	})
	b.Run("spliced", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			enc := &encodedChange{agent: protocol.AppendString(nil, "alice"), prevView: view, curView: view, at: 1700000000000}
			c := Change{AgentID: "alice", Prev: view, Cur: view, enc: enc, pm: true, cm: true}
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
