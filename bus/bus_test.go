package bus

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/internal/redistest"
)

// Both buses keep the same contract; each case runs on both, the Redis one
// against a real redis-server.
var buses = []struct {
	name string
	new  func(t *testing.T) Bus
}{
	{"memory", func(*testing.T) Bus { return NewMemory() }},
	{"redis", func(t *testing.T) Bus {
		srv := redistest.Start(t)
		b := NewRedis(srv.Client(), "test:", zap.NewNop())
		t.Cleanup(func() { _ = b.Close() })
		return b
	}},
}

func subscribe(t *testing.T, b Bus, topic string, buf int) *Subscription {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := b.Subscribe(ctx, topic, buf)
	if err != nil {
		t.Fatalf("subscribe %s: %v", topic, err)
	}
	return s
}

func publish(t *testing.T, b Bus, topic, payload string) {
	t.Helper()
	if err := b.Publish(context.Background(), topic, []byte(payload)); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

func receive(t *testing.T, s *Subscription) Message {
	t.Helper()
	select {
	case m := <-s.C:
		return m
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no message", s.Topic)
		return Message{}
	}
}

func silent(t *testing.T, s *Subscription) {
	t.Helper()
	select {
	case m := <-s.C:
		t.Fatalf("%s: unexpected message %q", s.Topic, m.Payload)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestEverySubscriberGetsItsTopicInOrder(t *testing.T) {
	for _, bc := range buses {
		t.Run(bc.name, func(t *testing.T) {
			b := bc.new(t)
			a1, a2 := subscribe(t, b, "agent:alice", 16), subscribe(t, b, "agent:alice", 16)
			other := subscribe(t, b, "agent:bob", 16)
			for i := range 10 {
				publish(t, b, "agent:alice", fmt.Sprint(i))
			}
			for _, s := range []*Subscription{a1, a2} {
				for i := range 10 {
					if m := receive(t, s); string(m.Payload) != fmt.Sprint(i) || m.Topic != "agent:alice" {
						t.Fatalf("message %d: %q on %q", i, m.Payload, m.Topic)
					}
				}
			}
			silent(t, other)
		})
	}
}

func TestClosedSubscriptionGetsNothingOthersStill(t *testing.T) {
	for _, bc := range buses {
		t.Run(bc.name, func(t *testing.T) {
			b := bc.new(t)
			gone, kept := subscribe(t, b, "all", 4), subscribe(t, b, "all", 4)
			gone.Close()
			publish(t, b, "all", "x")
			if m := receive(t, kept); string(m.Payload) != "x" {
				t.Fatalf("got %q", m.Payload)
			}
			silent(t, gone)
			// The last one closing ends the topic's subscription; a new one works.
			kept.Close()
			again := subscribe(t, b, "all", 4)
			publish(t, b, "all", "y")
			if m := receive(t, again); string(m.Payload) != "y" {
				t.Fatalf("got %q", m.Payload)
			}
		})
	}
}

// A subscriber that does not keep up loses messages and is told so; the
// publisher and the other subscribers are not held up.
func TestSlowSubscriberIsToldToResync(t *testing.T) {
	for _, bc := range buses {
		t.Run(bc.name, func(t *testing.T) {
			b := bc.new(t)
			slow, fast := subscribe(t, b, "team:sales", 2), subscribe(t, b, "team:sales", 64)
			for i := range 10 {
				publish(t, b, "team:sales", fmt.Sprint(i))
			}
			for i := range 10 {
				if m := receive(t, fast); string(m.Payload) != fmt.Sprint(i) {
					t.Fatalf("fast subscriber, message %d: %q", i, m.Payload)
				}
			}
			select {
			case <-slow.Resync:
			case <-time.After(5 * time.Second):
				t.Fatal("the slow subscriber was not told it lost messages")
			}
			for i := range 2 { // what fitted its buffer, in order
				if m := receive(t, slow); string(m.Payload) != fmt.Sprint(i) {
					t.Fatalf("slow subscriber, message %d: %q", i, m.Payload)
				}
			}
		})
	}
}

// Messages published while the pub/sub connection is down are lost, so
// every subscriber is told to resync when it is back, and delivery resumes.
func TestRedisRestartTellsSubscribersToResync(t *testing.T) {
	srv := redistest.Start(t)
	b := NewRedis(srv.Client(), "test:", zap.NewNop())
	t.Cleanup(func() { _ = b.Close() })
	s := subscribe(t, b, "agent:alice", 16)
	srv.Stop()
	srv.StartAgain()
	select {
	case <-s.Resync:
	case <-time.After(15 * time.Second):
		t.Fatal("no resync after the pub/sub connection came back")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The publishing client reconnects on its own schedule too.
		if err := b.Publish(context.Background(), "agent:alice", []byte("back")); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("publish after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if m := receive(t, s); string(m.Payload) != "back" {
		t.Fatalf("got %q", m.Payload)
	}
}
