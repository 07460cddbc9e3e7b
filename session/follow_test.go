package session

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/bus"
	"github.com/ctibroker/ctibroker/store"
)

// The follower stalls, its bus subscription overflows and drops the last
// events; no later event reveals a gap. Only the resync signal can recover
// them from the stream.
func TestFollowRecoversLostTailOnResync(t *testing.T) {
	b := bus.NewMemory()
	st := store.NewMemory(store.Limits{Events: 10000, Timeline: 10, TTL: time.Minute, ReplyTTL: time.Minute}, b)
	m := NewManager(Options{Node: "n", StoreTimeout: time.Second}, nil, st, b, zap.NewNop(), zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const total = 6000 // more than the follower's 4096 buffer
	release := make(chan struct{})
	got := make(chan Envelope, total)
	followDone := make(chan error, 1)
	go func() {
		followDone <- m.Follow(ctx, AgentTopic("alice"), nil, func(e Envelope) error {
			<-release // stall: the subscription buffer fills and overflows
			got <- e
			return nil
		})
	}()
	waitSubscribed(t, b, AgentTopic("alice"))
	if _, err := st.Acquire(ctx, "s1", "alice", "n", time.Minute); err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= total; i++ {
		payload := []byte(fmt.Sprintf(`{"name":"state.updated","seq":%d}`, i))
		env := []byte(fmt.Sprintf(`{"agent":"alice","session":"s1","seq":%d,"event":%s}`, i, payload))
		if err := st.Commit(ctx, store.Commit{SessionID: "s1", AgentID: "alice", Node: "n", Version: i - 1,
			Events: []store.Event{{Seq: i, Payload: payload, Envelope: env}}, Topics: []string{AgentTopic("alice")}}); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	for want := uint64(1); want <= total; want++ {
		select {
		case e := <-got:
			if e.Reset || e.Seq != want {
				t.Fatalf("got %+v, want seq %d", e, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("follower stopped before seq %d of %d: the lost tail was not recovered", want, total)
		}
	}
	cancel()
	if err := <-followDone; err != nil {
		t.Fatal(err)
	}
}

func waitSubscribed(t *testing.T, b *bus.Memory, topic string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b.Subscribers(topic) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("follower never subscribed")
		}
		time.Sleep(time.Millisecond)
	}
}
