// Package bus fans messages out to subscribers by topic: within one process
// (memory) or across broker nodes (Redis pub/sub).
//
// Topics are logical names ("agent:alice", "team:sales", "all",
// "node:<id>"); the Redis bus prefixes them with redis.prefix.
//
// Delivery never blocks the publisher or the dispatcher: a subscriber whose
// buffer is full loses messages and is told so on Resync, as is every
// subscriber when the Redis subscription was re-established (messages
// published meanwhile are lost). A subscriber that gets a Resync signal must
// recover from durable state (the session event streams).
package bus

import "context"

// Message is one published payload.
type Message struct {
	Topic   string
	Payload []byte
}

// Bus publishes and subscribes.
type Bus interface {
	Publish(ctx context.Context, topic string, payload []byte) error
	// Subscribe returns a subscription with a buffer of size buf. It is
	// active (messages published after it returns are delivered) once
	// Subscribe returns without error.
	Subscribe(ctx context.Context, topic string, buf int) (*Subscription, error)
	Close() error
}

// Subscription receives the messages of one topic.
type Subscription struct {
	Topic string
	// C delivers messages in publish order.
	C <-chan Message
	// Resync receives a value when messages may have been lost.
	Resync <-chan struct{}

	c      chan Message
	resync chan struct{}
	close  func()
}

func newSubscription(topic string, buf int, closeFn func()) *Subscription {
	s := &Subscription{Topic: topic, c: make(chan Message, max(buf, 1)), resync: make(chan struct{}, 1), close: closeFn}
	s.C, s.Resync = s.c, s.resync
	return s
}

// deliver hands m to the subscriber without blocking.
func (s *Subscription) deliver(m Message) {
	select {
	case s.c <- m:
	default:
		s.lost()
	}
}

func (s *Subscription) lost() {
	select {
	case s.resync <- struct{}{}:
	default:
	}
}

// Close ends the subscription. C is not closed; stop reading it.
func (s *Subscription) Close() { s.close() }
