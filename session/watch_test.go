package session

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctibroker/ctibroker/protocol"
)

func view(agent, status string, teams ...string) *protocol.AgentView {
	return &protocol.AgentView{AgentID: agent, SessionID: "s-" + agent, Teams: teams, Status: status, Channels: []protocol.ChannelState{}}
}

// testBoard is a board without a manager behind it: changes are set by hand.
func testBoard() *board {
	b := newBoard(nil)
	close(b.ready)
	b.startOnce.Do(func() {})
	return b
}

func (b *board) setNow(agent string, cur *protocol.AgentView) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.set(agent, b.views[agent], cur, time.Now().UnixMilli())
}

func status(v *protocol.AgentView) string {
	if v == nil {
		return "-"
	}
	return v.Status
}

// A watch reads the changes since its last read, one per agent: the
// changes it missed are folded into the latest, from what it saw last.
// Filters decide what it sees: an agent appears, changes, leaves.
func TestWatchFoldsWhatItMissed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		filter protocol.WatchFilter
		steps  [][2]string // agent, status ("" leaves)
		want   []string    // agent:prev>cur/folded
	}{
		{"one change", protocol.WatchFilter{}, [][2]string{{"a", "ready"}}, []string{"a:->ready/0"}},
		{"changes of one agent fold", protocol.WatchFilter{},
			[][2]string{{"a", "ready"}, {"a", "not_ready"}, {"a", "busy"}}, []string{"a:->busy/2"}},
		{"agents keep the order of their last change", protocol.WatchFilter{},
			[][2]string{{"a", "ready"}, {"b", "ready"}, {"a", "busy"}}, []string{"b:->ready/0", "a:->busy/1"}},
		{"appeared and left unseen", protocol.WatchFilter{}, [][2]string{{"a", "ready"}, {"a", ""}}, nil},
		{"a status filter: leaving it is a change to nothing", protocol.WatchFilter{Statuses: []string{"ready"}},
			[][2]string{{"a", "ready"}, {"b", "busy"}}, []string{"a:->ready/0"}},
		{"other teams are not seen", protocol.WatchFilter{Teams: []string{"sales"}},
			[][2]string{{"x", "ready"}, {"a", "ready"}}, []string{"a:->ready/0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := testBoard()
			w, _, err := b.watch(context.Background(), MatchFilter(tc.filter), false, func() {})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Stop()
			// The feed's way: messages straight from the log.
			fw, _, err := b.watch(context.Background(), MatchFilter(tc.filter), false, func() {})
			if err != nil {
				t.Fatal(err)
			}
			defer fw.Stop()
			for _, s := range tc.steps {
				var v *protocol.AgentView
				if s[1] != "" {
					team := "sales"
					if s[0] == "x" {
						team = "support"
					}
					v = view(s[0], s[1], team)
				}
				b.setNow(s[0], v)
			}
			changes, ok := w.Changes(nil)
			if !ok {
				t.Fatal("fell behind")
			}
			var got []string
			for _, c := range changes {
				got = append(got, fmt.Sprintf("%s:%s>%s/%d", c.AgentID, status(c.Prev), status(c.Cur), c.Folded))
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("changes %v, want %v", got, tc.want)
			}
			if more, _ := w.Changes(nil); len(more) != 0 {
				t.Fatalf("read twice: %v", more)
			}
			pending := fw.pending()
			msgs, folded, ok := fw.Messages(nil, []byte("{"))
			if !ok || len(msgs) != len(changes) || pending < len(msgs) {
				t.Fatalf("messages: %d (ok %v, pending %d), want %d", len(msgs), ok, pending, len(changes))
			}
			wantFolded := 0
			for i := range changes {
				wantFolded += changes[i].Folded
				want := changes[i].message([]byte("{"), false)
				if got := msgs[i].AppendTo(nil); !bytes.Equal(got, want.AppendTo(nil)) {
					t.Fatalf("message %d: %s, want %s", i, got, want.AppendTo(nil))
				}
			}
			if folded != wantFolded {
				t.Fatalf("folded %d, want %d", folded, wantFolded)
			}
		})
	}
}

// A folded change goes from what the watch saw last: its previous view is
// the one before the first change it missed, and its body says how many
// were folded in.
func TestFoldedChangeMessage(t *testing.T) {
	b := testBoard()
	b.setNow("a", view("a", "ready"))
	w, snap, err := b.watch(context.Background(), MatchFilter(protocol.WatchFilter{}), false, func() {})
	if err != nil || len(snap) != 1 {
		t.Fatalf("snapshot %v %v", snap, err)
	}
	b.setNow("a", view("a", "not_ready"))
	b.setNow("a", view("a", "busy"))
	changes, _ := w.Changes(nil)
	if len(changes) != 1 {
		t.Fatalf("changes: %v", changes)
	}
	for _, compact := range []bool{false, true} {
		var data map[string]any
		m := changes[0].message(nil, compact)
		body := m.AppendTo(nil)
		if err := json.Unmarshal(append([]byte(`{"data":{`), body...), &data); err != nil {
			t.Fatalf("body %s: %v", body, err)
		}
		d := data["data"].(map[string]any)
		if d["conflated"] != float64(1) || data["timestamp"] == nil {
			t.Fatalf("compact=%v: %s", compact, body)
		}
		if compact {
			ops := d["ops"].([]any)
			op := ops[0].(map[string]any)
			if len(ops) != 1 || op["op"] != "replace" || op["path"] != "" || op["value"].(map[string]any)["status"] != "busy" {
				t.Fatalf("compact folded ops: %s", body)
			}
		} else if d["previous"].(map[string]any)["status"] != "ready" || d["current"].(map[string]any)["status"] != "busy" {
			t.Fatalf("folded: %s", body)
		}
	}
}

// A folded change is encoded by the writer: its Len must bound its bytes,
// or a frame could outgrow protocol.MaxFrameBytes.
func TestFoldedMessageLenBoundsItsBytes(t *testing.T) {
	enc := func(agent string, prev, cur *protocol.AgentView, at int64) *encodedChange {
		e := &encodedChange{agent: protocol.AppendString(nil, agent), prevView: prev, curView: cur, at: at}
		e.views()
		return e
	}
	long := strings.Repeat("x", 300)
	first := enc(long, view(long, "ready"), view(long, "busy"), 1)
	for _, tc := range []struct {
		name    string
		n       int
		at      int64
		pm, cm  bool
		compact bool
	}{
		{name: "both views", n: 1, at: 1_700_000_000_000, pm: true, cm: true},
		{name: "appears", n: 3, at: 1_700_000_000_000, cm: true},
		{name: "leaves", n: 12, at: 1_700_000_000_000, pm: true},
		{name: "largest count and time", n: math.MaxInt, at: math.MaxInt64, pm: true, cm: true},
		{name: "largest, leaving", n: math.MaxInt, at: math.MinInt64, pm: true},
		{name: "compact", n: math.MaxInt, at: math.MinInt64, pm: true, cm: true, compact: true},
		{name: "compact, appears", n: 2, at: 1, cm: true, compact: true},
		{name: "compact, leaves", n: math.MaxInt, at: math.MaxInt64, pm: true, compact: true},
	} {
		last := enc(long, view(long, "busy"), view(long, "not_ready"), tc.at)
		m := Message{Head: []byte(`{"h":1,`), folded: foldedChange{first: first, last: last, n: tc.n, pm: tc.pm, cm: tc.cm, compact: tc.compact}}
		got := len(m.AppendTo(nil))
		if m.Len() < got || m.Len()-got > foldedOverhead {
			t.Errorf("%s: Len %d for %d bytes", tc.name, m.Len(), got)
		}
	}
}

// A watch that falls more than the log behind knows it lost changes.
func TestWatchFallsBehindTheLog(t *testing.T) {
	b := testBoard()
	w, _, err := b.watch(context.Background(), MatchFilter(protocol.WatchFilter{}), false, func() {})
	if err != nil {
		t.Fatal(err)
	}
	for i := range protocol.LiveLogSize + 1 {
		b.setNow(fmt.Sprintf("a%d", i%3000), view("a", fmt.Sprint(i)))
	}
	if _, ok := w.Changes(nil); ok {
		t.Fatal("a watch that fell behind the log read as if nothing was lost")
	}
}

// Watches read the log concurrently with the board writing it, and encode
// shared bodies concurrently.
func TestWatchesReadConcurrently(t *testing.T) {
	b := testBoard()
	var watches []*Watch
	for range 8 {
		w, _, err := b.watch(context.Background(), MatchFilter(protocol.WatchFilter{}), false, func() {})
		if err != nil {
			t.Fatal(err)
		}
		watches = append(watches, w)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, w := range watches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			final := map[string]string{}
			for {
				// Stopped before a read that finds nothing: that read saw
				// every change.
				stopped := false
				select {
				case <-stop:
					stopped = true
				default:
				}
				changes, ok := w.Changes(nil)
				if !ok {
					t.Error("fell behind")
					return
				}
				for _, c := range changes {
					m := c.message(nil, i%2 == 0)
					_ = m.AppendTo(nil)
					final[c.AgentID] = status(c.Cur)
				}
				if stopped && len(changes) == 0 {
					if final["a1"] != "s999" {
						t.Errorf("a watch ended with a1 %q", final["a1"])
					}
					return
				}
			}
		}()
	}
	for i := range 1000 {
		b.setNow(fmt.Sprintf("a%d", i%4), view("a", fmt.Sprintf("s%d", i+3-i%4)))
	}
	close(stop)
	wg.Wait()
}

// blockingConn holds every batch until released: a connection that does
// not read.
type blockingConn struct {
	mu      sync.Mutex
	batches [][]Message
	dones   []func()
}

func (c *blockingConn) Send(msgs []Message, done func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batches = append(c.batches, msgs)
	c.dones = append(c.dones, done)
	return true
}
func (c *blockingConn) Close(protocol.CloseCode, string) {}
func (c *blockingConn) RemoteAddr() string               { return "blocking" }
func (c *blockingConn) UserAgent() string                { return "blocking" }

// release writes the batches sent so far and returns their messages.
func (c *blockingConn) release() []string {
	c.mu.Lock()
	batches, dones := c.batches, c.dones
	c.batches, c.dones = nil, nil
	c.mu.Unlock()
	var out []string
	for _, b := range batches {
		for _, m := range b {
			out = append(out, string(m.AppendTo(nil)))
		}
	}
	for _, d := range dones {
		if d != nil {
			d()
		}
	}
	return out
}

func (c *blockingConn) waitBatch(tb testing.TB) []string {
	tb.Helper()
	var out []string
	eventually(tb, "a batch", func() bool {
		out = append(out, c.release()...)
		return len(out) > 0
	})
	return out
}

// A supervisor whose connection does not take its batches holds one batch
// in flight; what changes meanwhile waits in the log and reaches it folded:
// one change per agent, from what it last saw, counting what was folded.
func TestSlowSupervisorGetsFoldedChanges(t *testing.T) {
	m, _ := testManager(t, Options{})
	conn := &blockingConn{}
	sv, err := m.Attach(context.Background(), Identity{AgentID: "boss", Role: RoleSupervisor, AllTeams: true}, conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn.waitBatch(t) // session.initialized
	sv.Submit(conn, NewFrame([]byte(`{"command":"supervisor.subscribe","target":"`+sv.ID()+`"}`), false, func() {}))
	got := conn.waitBatch(t)
	for len(got) < 2 {
		got = append(got, conn.waitBatch(t)...)
	}
	if !strings.Contains(got[0], `"result":"success"`) || !strings.Contains(got[1], `"supervisor.snapshot"`) || strings.Contains(got[1], `"seq"`) {
		t.Fatalf("subscribe: %v", got)
	}

	// An agent appears: the change's batch is sent and not taken.
	aConn := newTestConn()
	a, err := m.Attach(context.Background(), Identity{AgentID: "alice", Role: RoleAgent, Teams: []string{"sales"}}, aConn, nil)
	if err != nil {
		t.Fatal(err)
	}
	var first []string
	eventually(t, "the first change in flight", func() bool {
		conn.mu.Lock()
		defer conn.mu.Unlock()
		return len(conn.batches) > 0
	})
	// Alice changes five times while the supervisor does not read.
	for i := range 5 {
		cmd := fmt.Sprintf(`{"command":"session.addchannel","target":%q,"data":{"channel":{"id":"c%d","name":"%d","type":"TELEPHONY"}}}`, a.ID(), i, 1000+i)
		if err := a.Submit(aConn, NewFrame([]byte(cmd), false, func() {})); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "alice's five changes on the board", func() bool {
		v, _ := m.Agents(context.Background(), protocol.WatchFilter{Agents: []string{"alice"}})
		return len(v) == 1 && len(v[0].Channels) == 5
	})
	first = conn.release()
	if len(first) != 1 || !strings.Contains(first[0], `"previous":null`) {
		t.Fatalf("first batch: %v", first)
	}
	folded := conn.waitBatch(t)
	if len(folded) != 1 || !strings.Contains(folded[0], `"conflated":4`) || strings.Count(folded[0], `"id":"c`) != 5 {
		t.Fatalf("after five changes unread, want one folded change: %v", folded)
	}
}

// A supervisor that falls more than the change log behind gets its
// subscriptions restarted: a resync snapshot, then changes again.
func TestSupervisorBehindTheLogGetsAResync(t *testing.T) {
	m, _ := testManager(t, Options{})
	conn := &blockingConn{}
	sv, err := m.Attach(context.Background(), Identity{AgentID: "boss", Role: RoleSupervisor, AllTeams: true}, conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn.waitBatch(t)
	sv.Submit(conn, NewFrame([]byte(`{"command":"supervisor.subscribe","target":"`+sv.ID()+`"}`), false, func() {}))
	for got := 0; got < 2; {
		got += len(conn.waitBatch(t))
	}
	m.board.setNow("ghost", view("ghost", "ready"))
	eventually(t, "a change in flight", func() bool {
		conn.mu.Lock()
		defer conn.mu.Unlock()
		return len(conn.batches) > 0
	})
	for i := range protocol.LiveLogSize + 10 {
		id := fmt.Sprintf("ghost%d", i%100)
		m.board.setNow(id, view(id, fmt.Sprint(i)))
	}
	conn.release()
	var resync string
	eventually(t, "a resync snapshot", func() bool {
		for _, msg := range conn.release() {
			if strings.Contains(msg, `"supervisor.snapshot"`) && strings.Contains(msg, `"reason":"resync"`) {
				resync = msg
			}
		}
		return resync != ""
	})
	if !strings.Contains(resync, `"ghost99"`) {
		t.Fatalf("the resync snapshot lacks the latest agents: %.300s", resync)
	}
}
