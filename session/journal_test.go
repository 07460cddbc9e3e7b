package session

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"
	"unsafe"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ctibroker/ctibroker/bus"
	"github.com/ctibroker/ctibroker/store"
)

// An op's events are sealed into one buffer: the replay history, the bus
// message and the connection all use it, and each event reads as written.
// Data that cannot be encoded emits nothing and takes no seq.
func TestJournalSealsAnOpsEventsInOneBuffer(t *testing.T) {
	for _, published := range []bool{true, false} {
		b := bus.NewMemory()
		st := store.NewMemory(store.Limits{Events: 16, Timeline: 4, TTL: time.Hour, ReplyTTL: time.Minute, History: time.Hour, HistorySessions: 2}, b)
		ctx := context.Background()
		sub, err := b.Subscribe(ctx, "all", 4)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		j := &journal{store: st, sid: "s1", key: "alice", node: "n", leaseTTL: time.Minute, timeout: time.Second,
			log: func(zapcore.Level, string, ...zap.Field) {}}
		if published {
			j.setTopics("alice", []string{"all"})
		}
		if err := j.emit("alice", "state.updated", map[string]string{"status": "ready"}); err != nil {
			t.Fatal(err)
		}
		if err := j.emit("alice", "bad", make(chan int)); err == nil {
			t.Fatal("a channel was encoded")
		}
		if err := j.emit("alice", "channel.infochanged", []int{1, 2}); err != nil {
			t.Fatal(err)
		}
		ready, err := j.commit(func() []byte { return nil }, nil)
		if err != nil || len(ready) != 2 {
			t.Fatalf("published=%v: commit gave %d events, %v", published, len(ready), err)
		}
		for i, e := range ready {
			var ev struct {
				Name string `json:"name"`
				Seq  uint64 `json:"seq"`
			}
			if err := json.Unmarshal(e.Payload, &ev); err != nil || ev.Seq != uint64(i+1) || e.Seq != ev.Seq {
				t.Fatalf("published=%v: event %d = %s (%v)", published, i, e.Payload, err)
			}
			if cap(e.Payload) != len(e.Payload) {
				t.Fatalf("published=%v: event %d can be appended to in place", published, i)
			}
			if published && !bytes.Contains(e.Envelope, e.Payload) {
				t.Fatalf("published=%v: envelope %s does not carry its event", published, e.Envelope)
			}
		}
		if !published && unsafe.Add(unsafe.Pointer(&ready[0].Payload[0]), len(ready[0].Payload)) != unsafe.Pointer(&ready[1].Payload[0]) {
			t.Fatal("the events are not in one buffer") // published, the bus message shows it
		}
		history, ok, err := st.EventsSince(ctx, "s1", 0, 2)
		if err != nil || !ok || len(history) != 2 || !bytes.Equal(history[1], ready[1].Payload) {
			t.Fatalf("published=%v: history %q %v %v", published, history, ok, err)
		}
		// The memory store publishes within Commit.
		select {
		case m := <-sub.C:
			want := string(ready[0].Envelope) + "\n" + string(ready[1].Envelope)
			if !published || string(m.Payload) != want || &m.Payload[0] != &ready[0].Envelope[0] {
				t.Fatalf("published=%v: bus message %q, want %q from the events' buffer", published, m.Payload, want)
			}
		default:
			if published {
				t.Fatal("nothing published")
			}
		}
		j.idle()
		if j.scratch != nil || j.outboxBuf != nil {
			t.Fatalf("published=%v: an idle journal holds its buffers", published)
		}
	}
}
