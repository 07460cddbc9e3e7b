package bus

import (
	"context"
	"testing"
)

// BenchmarkMemoryFanout: one event published to 50 subscribers.
func BenchmarkMemoryFanout(b *testing.B) {
	m := NewMemory()
	subs := make([]*Subscription, 50)
	for i := range subs {
		s, err := m.Subscribe(context.Background(), "all", 1<<16)
		if err != nil {
			b.Fatal(err)
		}
		subs[i] = s
	}
	payload := make([]byte, 300)
	b.ReportAllocs()
	for b.Loop() {
		_ = m.Publish(context.Background(), "all", payload)
		for _, s := range subs {
			<-s.C
		}
	}
}
