package bus

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/protocol"
)

// Redis is the Redis pub/sub bus. It holds one PubSub connection for the
// whole process, whatever the number of subscribers, and one dispatcher
// goroutine that never blocks: go-redis drops messages when its channel is
// not drained.
//
// Locking: mu guards subs, confirmed and ready; the dispatcher takes it only
// to look subscribers up.
type Redis struct {
	client redis.UniversalClient
	prefix string
	log    *zap.Logger
	ps     *redis.PubSub

	mu        sync.RWMutex
	subs      map[string][]*Subscription // by Redis channel name
	confirmed map[string]bool            // subscribe confirmed at least once
	ready     map[string]chan struct{}   // closed at the first confirmation
	done      chan struct{}
}

var _ Bus = (*Redis)(nil)

// NewRedis starts the process's pub/sub connection.
func NewRedis(client redis.UniversalClient, prefix string, log *zap.Logger) *Redis {
	b := &Redis{client: client, prefix: prefix, log: log, ps: client.Subscribe(context.Background()),
		subs: map[string][]*Subscription{}, confirmed: map[string]bool{}, ready: map[string]chan struct{}{},
		done: make(chan struct{})}
	ch := b.ps.ChannelWithSubscriptions(redis.WithChannelSize(protocol.RedisPubSubBuffer))
	go b.dispatch(ch)
	return b
}

// Channel returns the Redis channel of a topic.
func (b *Redis) Channel(topic string) string { return b.prefix + topic }

// Publish implements Bus.
func (b *Redis) Publish(ctx context.Context, topic string, payload []byte) error {
	if err := b.client.Publish(ctx, b.Channel(topic), payload).Err(); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
}

// Subscribe implements Bus. It returns once Redis confirmed the subscription.
func (b *Redis) Subscribe(ctx context.Context, topic string, buf int) (*Subscription, error) {
	name := b.Channel(topic)
	var s *Subscription
	s = newSubscription(topic, buf, func() { b.unsubscribe(name, s) })
	b.mu.Lock()
	first := len(b.subs[name]) == 0
	b.subs[name] = append(b.subs[name], s)
	ready := b.ready[name]
	if ready == nil {
		ready = make(chan struct{})
		b.ready[name] = ready
	}
	b.mu.Unlock()
	if first {
		if err := b.ps.Subscribe(ctx, name); err != nil {
			b.unsubscribe(name, s)
			return nil, fmt.Errorf("subscribe %s: %w", topic, err)
		}
	}
	select {
	case <-ready:
		return s, nil
	case <-ctx.Done():
		b.unsubscribe(name, s)
		return nil, fmt.Errorf("subscribe %s: %w", topic, ctx.Err())
	}
}

func (b *Redis) unsubscribe(name string, s *Subscription) {
	b.mu.Lock()
	b.subs[name] = slices.DeleteFunc(b.subs[name], func(x *Subscription) bool { return x == s })
	last := len(b.subs[name]) == 0
	if last {
		delete(b.subs, name)
		delete(b.confirmed, name)
		delete(b.ready, name)
	}
	b.mu.Unlock()
	if last {
		_ = b.ps.Unsubscribe(context.Background(), name)
	}
}

func (b *Redis) dispatch(ch <-chan any) {
	defer close(b.done)
	for msg := range ch {
		switch m := msg.(type) {
		case *redis.Message:
			b.mu.RLock()
			subs := b.subs[m.Channel]
			b.mu.RUnlock()
			if len(subs) == 0 {
				continue
			}
			payload := []byte(m.Payload)
			for _, s := range subs {
				s.deliver(Message{Topic: s.Topic, Payload: payload})
			}
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			b.mu.Lock()
			again := b.confirmed[m.Channel]
			b.confirmed[m.Channel] = true
			if r := b.ready[m.Channel]; r != nil && !again {
				close(r)
			}
			subs := slices.Clone(b.subs[m.Channel])
			b.mu.Unlock()
			if again {
				// The connection was re-established: whatever was published
				// while it was down is lost.
				b.log.Info("pub/sub re-subscribed; subscribers resync", zap.String("channel", m.Channel))
				for _, s := range subs {
					s.lost()
				}
			}
		}
	}
}

// Close implements Bus.
func (b *Redis) Close() error {
	err := b.ps.Close()
	<-b.done
	return err
}
