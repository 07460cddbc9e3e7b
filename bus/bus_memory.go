package bus

import (
	"context"
	"slices"
	"sync"
)

// Memory is the in-process bus.
type Memory struct {
	mu   sync.RWMutex
	subs map[string][]*Subscription
}

var _ Bus = (*Memory)(nil)

// NewMemory creates an in-process bus.
func NewMemory() *Memory { return &Memory{subs: map[string][]*Subscription{}} }

// Publish implements Bus.
func (b *Memory) Publish(_ context.Context, topic string, payload []byte) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, s := range b.subs[topic] {
		s.deliver(Message{Topic: topic, Payload: payload})
	}
	return nil
}

// Subscribe implements Bus.
func (b *Memory) Subscribe(_ context.Context, topic string, buf int) (*Subscription, error) {
	var s *Subscription
	s = newSubscription(topic, buf, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.subs[topic] = slices.DeleteFunc(b.subs[topic], func(x *Subscription) bool { return x == s })
		if len(b.subs[topic]) == 0 {
			delete(b.subs, topic)
		}
	})
	b.mu.Lock()
	b.subs[topic] = append(b.subs[topic], s)
	b.mu.Unlock()
	return s, nil
}

// Subscribers returns the number of subscriptions to topic.
func (b *Memory) Subscribers(topic string) int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.subs[topic])
}

// Close implements Bus.
func (b *Memory) Close() error { return nil }
