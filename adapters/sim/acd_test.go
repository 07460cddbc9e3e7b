package sim

import (
	"context"
	"testing"
	"time"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/protocol"
)

// nextEvent returns the switch's next event of a kind, failing after 5 s.
func nextEvent(tb testing.TB, s *Switch, kind adapters.EventKind) adapters.Event {
	tb.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev := <-s.Events():
			if ev.Kind == kind {
				return ev
			}
		case <-deadline:
			tb.Fatalf("no %s event", kind)
		}
	}
}

func acd(tb testing.TB) (*Switch, func(agent, typ, queue string) adapters.ChannelRef) {
	tb.Helper()
	s, err := New(Config{Queues: []Queue{{Name: "sales", MediaType: "TELEPHONY", RingTimeout: time.Hour}, {Name: "chat", MediaType: "CHAT", RingTimeout: time.Hour}},
		Capacity: map[string]int{"CHAT": 2}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	login := func(agent, typ, queue string) adapters.ChannelRef {
		ref := adapters.ChannelRef{AgentID: agent, Channel: protocol.ChannelSpec{ID: "c", Name: agent, Type: typ}}
		if err := s.Activate(context.Background(), ref, []string{queue}); err != nil {
			tb.Fatal(err)
		}
		return ref
	}
	return s, login
}

// Calls go to the longest-idle ready agent of the queue, and wait when
// nobody is free.
func TestACDRoutesToTheLongestIdle(t *testing.T) {
	s, login := acd(t)
	ctx := context.Background()
	alice, bob := login("alice", "TELEPHONY", "sales"), login("bob", "TELEPHONY", "sales")
	_ = s.SetReady(ctx, bob)
	time.Sleep(2 * time.Millisecond)
	_ = s.SetReady(ctx, alice)
	id1, _ := s.AddCall(CallRequest{Queue: "sales", From: "1"})
	if ev := nextEvent(t, s, adapters.InteractionStarted); ev.AgentID != "bob" || ev.InteractionID != id1 || ev.Interaction.State != protocol.IxAlerting {
		t.Fatalf("first call offered to %s (%+v), want bob, idle longest", ev.AgentID, ev.Interaction)
	}
	id2, _ := s.AddCall(CallRequest{Queue: "sales", From: "2"})
	if ev := nextEvent(t, s, adapters.InteractionStarted); ev.AgentID != "alice" || ev.InteractionID != id2 {
		t.Fatalf("second call offered to %s", ev.AgentID)
	}
	id3, _ := s.AddCall(CallRequest{Queue: "sales", From: "3"})
	if err := s.Accept(ctx, bob, id1); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, bob, id1); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, s, adapters.InteractionStarted); ev.AgentID != "bob" || ev.InteractionID != id3 {
		t.Fatalf("waiting call offered to %s after bob's call ended", ev.AgentID)
	}
}

// A rejected offer goes back to the front of its queue and the agent is
// made not ready; a channel takes as many interactions as its capacity.
func TestACDRejectAndCapacity(t *testing.T) {
	s, login := acd(t)
	ctx := context.Background()
	alice := login("alice", "CHAT", "chat")
	_ = s.SetReady(ctx, alice)
	ids := make([]string, 3)
	for i := range ids {
		ids[i], _ = s.AddCall(CallRequest{Queue: "chat", From: "v"})
	}
	for range 2 {
		nextEvent(t, s, adapters.InteractionStarted)
	}
	if _, err := s.Dial(ctx, alice, "x", nil); err != ErrNoRoom {
		t.Fatalf("dial on a full channel: %v, want ErrNoRoom", err)
	}
	if err := s.Reject(ctx, alice, ids[0]); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, s, adapters.StatusForced); ev.Status != protocol.StatusNotReady || ev.ReasonCode != protocol.ReasonNoAnswer {
		t.Fatalf("after a reject: %+v", ev)
	}
	_ = s.SetReady(ctx, alice)
	if ev := nextEvent(t, s, adapters.InteractionStarted); ev.InteractionID != ids[0] {
		t.Fatalf("offered %s after the reject, want the rejected call first (%s)", ev.InteractionID, ids[0])
	}
	if err := s.Accept(ctx, alice, "nosuch"); err == nil {
		t.Fatal("accepted an unknown interaction")
	}
}

// Demo traffic: calls arrive in the queue on their own, are offered, and
// the caller hangs up after the handle time; Close stops the generator.
func TestACDTraffic(t *testing.T) {
	s, err := New(Config{Queues: []Queue{{Name: "sales", MediaType: "TELEPHONY", RingTimeout: time.Hour}},
		Traffic: []Traffic{{Queue: "sales", PerMinute: 6000, HandleTime: 20 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ref := adapters.ChannelRef{AgentID: "alice", Channel: protocol.ChannelSpec{ID: "c", Name: "1", Type: "TELEPHONY"}}
	_ = s.Activate(ctx, ref, []string{"sales"})
	_ = s.SetReady(ctx, ref)
	ev := nextEvent(t, s, adapters.InteractionStarted)
	if err := s.Accept(ctx, ref, ev.InteractionID); err != nil {
		t.Fatal(err)
	}
	if end := nextEvent(t, s, adapters.InteractionEnded); end.InteractionID != ev.InteractionID || end.Cause != protocol.CauseRemote {
		t.Fatalf("the generated caller did not hang up: %+v", end)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	queued := len(s.waiting["sales"])
	s.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.waiting["sales"]) != queued {
		t.Fatal("calls still arrive after Close")
	}
}
