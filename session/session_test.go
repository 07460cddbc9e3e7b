package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/adapters/sim"
	"github.com/ctibroker/ctibroker/bus"
	"github.com/ctibroker/ctibroker/internal/testutil"
	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/store"
)

// testConn records what a session sends and how it closes the connection.
type testConn struct {
	out    chan []byte
	closed chan protocol.CloseCode
}

func newTestConn() *testConn {
	return &testConn{out: make(chan []byte, 1024), closed: make(chan protocol.CloseCode, 1)}
}

func (c *testConn) Send(msgs []Message, done func()) bool {
	for _, m := range msgs {
		c.out <- m.AppendTo(nil)
	}
	if done != nil {
		done()
	}
	return true
}
func (c *testConn) Close(code protocol.CloseCode, _ string) {
	select {
	case c.closed <- code:
	default:
	}
}
func (c *testConn) RemoteAddr() string { return "test" }
func (c *testConn) UserAgent() string  { return "test" }

// next returns the next message sent to the connection.
func (c *testConn) next(tb testing.TB) []byte {
	tb.Helper()
	select {
	case msg := <-c.out:
		return msg
	case <-time.After(5 * time.Second):
		tb.Fatal("no message within 5s")
		return nil
	}
}

// testManager starts a manager over the simulated switch and the memory
// store and bus; opts overrides the lease TTL.
func testManager(tb testing.TB, opts Options) (*Manager, *store.Memory) {
	tb.Helper()
	sw, err := sim.New(sim.Config{NotReadyReasons: []protocol.ReasonCode{{ID: "lunch", Code: "10", Selectable: true}}})
	if err != nil {
		tb.Fatal(err)
	}
	bs := bus.NewMemory()
	st := store.NewMemory(store.Limits{Events: 1024, Timeline: 1000, TTL: time.Hour, ReplyTTL: time.Minute, History: time.Hour, HistorySessions: 10}, bs)
	base := Options{Grace: time.Minute, OnExpire: OnExpireKeep, MultiConnect: MultiConnectTakeover, HistorySize: 1024,
		TimelineSize: 1000, AdapterTimeout: time.Second, RequestIDTTL: time.Minute, RequestIDLimit: 100,
		AddressBookInterval: time.Second, DefaultHandleTime: time.Minute, Node: "n", LeaseTTL: time.Minute,
		StoreTimeout: time.Second, HealthInterval: time.Hour, MaxChannels: 32, MaxGroups: 8}
	if opts.LeaseTTL != 0 {
		base.LeaseTTL = opts.LeaseTTL
	}
	m := NewManager(base, sw, st, bs, zap.NewNop(), zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		_ = m.Run(ctx)
	}()
	tb.Cleanup(func() {
		cancel()
		<-runDone
		_ = m.Shutdown(context.Background())
	})
	return m, st
}

var eventually = testutil.Eventually

// An idle session holds no goroutine: one runs only while it has work.
func TestIdleSessionsHaveNoGoroutine(t *testing.T) {
	m, _ := testManager(t, Options{})
	before := runtime.NumGoroutine()
	const n = 50
	var sessions []*Session
	for i := range n {
		conn := newTestConn()
		s, err := m.Attach(context.Background(), Identity{AgentID: fmt.Sprintf("a%d", i), Role: RoleAgent}, conn, nil)
		if err != nil {
			t.Fatal(err)
		}
		conn.next(t)
		sessions = append(sessions, s)
	}
	// The sessions' goroutines return once their queues are empty.
	eventually(t, "idle sessions without goroutines", func() bool { return runtime.NumGoroutine() < before+n/10 })
	// ... and give their event batch buffers back.
	for _, s := range sessions {
		eventually(t, "an idle session", func() bool {
			s.mb.mu.Lock()
			defer s.mb.mu.Unlock()
			return !s.mb.running && len(s.mb.queue) == 0
		})
		s.mb.mu.Lock() // the runner gave the journal up under it
		held := s.journal.outboxBuf != nil || s.journal.outbox != nil || s.journal.scratch != nil
		s.mb.mu.Unlock()
		if held {
			t.Fatalf("idle session %s holds an event buffer", s.ID())
		}
	}
}

// Every submitted command is answered exactly once (its Done called): after
// its reply, when it came from a connection that was taken over, and when
// the session ended before running it. A connection waits for it before
// reading its next frame.
func TestEveryCommandIsAnswered(t *testing.T) {
	m, _ := testManager(t, Options{})
	conn := newTestConn()
	s, err := m.Attach(context.Background(), Identity{AgentID: "alice", Role: RoleAgent}, conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn.next(t) // session.initialized
	var answered atomic.Int32
	frame := func(cmd string) Frame {
		return NewFrame([]byte(`{"command":"`+cmd+`","target":"`+s.ID()+`"}`), false, func() { answered.Add(1) })
	}
	// Held: the session runs a note that waits, so the commands queue.
	release := make(chan struct{})
	busy := make(chan struct{})
	s.post(func(*Session) { close(busy); <-release })
	<-busy
	if err := s.Submit(conn, frame(protocol.CmdLogoutReasons)); err != nil {
		t.Fatal(err)
	}
	stale := newTestConn() // a connection that is no longer the session's
	if err := s.Submit(stale, frame(protocol.CmdLogoutReasons)); err != nil {
		t.Fatal(err)
	}
	if err := s.Submit(conn, frame(protocol.CmdLogout)); err != nil { // ends the session
		t.Fatal(err)
	}
	if err := s.Submit(conn, frame(protocol.CmdLogoutReasons)); err != nil { // after the end: dropped
		t.Fatal(err)
	}
	close(release)
	<-s.Done()
	if n := answered.Load(); n != 4 {
		t.Fatalf("%d of 4 commands answered", n)
	}
	if err := s.Submit(conn, frame(protocol.CmdLogoutReasons)); !errors.Is(err, ErrSessionEnded) {
		t.Fatalf("Submit to an ended session: %v", err)
	}
}

// The manager renews every session's lease in one round; a session whose
// lease another node took is handed over (closed with 4001, kept in the store).
func TestLeasesAreRenewedAndALostOneHandsOver(t *testing.T) {
	const ttl = 150 * time.Millisecond
	m, st := testManager(t, Options{LeaseTTL: ttl})
	conn := newTestConn()
	s, err := m.Attach(context.Background(), Identity{AgentID: "alice", Role: RoleAgent}, conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 4 { // idle for several lease lifetimes: still ours
		time.Sleep(ttl)
		if owner, _ := st.Acquire(ctx, s.ID(), "alice", "other", time.Minute); owner != "n" {
			t.Fatalf("an idle session's lease was not renewed: owner %q", owner)
		}
	}
	eventually(t, "another node taking the lease", func() bool {
		_ = st.Release(ctx, s.ID(), "n")
		owner, _ := st.Acquire(ctx, s.ID(), "alice", "other", time.Minute)
		return owner == "other"
	})
	select {
	case code := <-conn.closed:
		if code != protocol.CloseTakenOver {
			t.Fatalf("closed with %d, want %d", code, protocol.CloseTakenOver)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the session whose lease was lost kept its connection")
	}
	<-s.Done()
	if _, found, _ := st.Load(ctx, s.ID()); !found {
		t.Fatal("a handed-over session was deleted from the store")
	}
}

// Attaches are admitted a few per CPU at a time (a failover storm queues):
// one waiting for its turn gives up when its context ends, and is admitted
// once a turn is free.
func TestAttachWaitsForItsTurn(t *testing.T) {
	m, _ := testManager(t, Options{})
	for range cap(m.attaching) {
		m.attaching <- struct{}{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := m.Attach(ctx, Identity{AgentID: "alice"}, newTestConn(), nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Attach with every turn taken = %v, want the context's end", err)
	}
	<-m.attaching
	if _, err := m.Attach(context.Background(), Identity{AgentID: "alice"}, newTestConn(), nil); err != nil {
		t.Fatalf("Attach with a free turn: %v", err)
	}
}

// A session that starts while a call is up (a broker restart) recreates
// the call from the switch before session.initialized: the desktop never
// shows an agent on a call as idle.
func TestNewSessionRecreatesInteractionsFromTheSwitch(t *testing.T) {
	m, _ := testManager(t, Options{})
	sw := m.adapter.(*sim.Switch)
	ref := adapters.ChannelRef{AgentID: "alice", Channel: protocol.ChannelSpec{ID: "phone", Name: "1001", Type: "TELEPHONY"}}
	ctx := context.Background()
	if err := sw.Activate(ctx, ref, nil); err != nil {
		t.Fatal(err)
	}
	id, err := sw.Dial(ctx, ref, "+15550100", nil)
	if err != nil {
		t.Fatal(err)
	}
	conn := newTestConn()
	if _, err := m.Attach(ctx, Identity{AgentID: "alice"}, conn, nil); err != nil {
		t.Fatal(err)
	}
	var names []string
	var ix protocol.Interaction
	for len(names) == 0 || names[len(names)-1] != protocol.EvSessionInitialized {
		var msg struct {
			Name string          `json:"name"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(conn.next(t), &msg); err != nil {
			t.Fatal(err)
		}
		names = append(names, msg.Name)
		if msg.Name == protocol.EvInteractionCreated {
			var ev protocol.InteractionEvent
			_ = json.Unmarshal(msg.Data, &ev)
			ix = *ev.Interaction
		}
	}
	if ix.ID != id || ix.Channel != "phone" || ix.Direction != protocol.DirOutbound || !slices.Contains(names, protocol.EvChannelCreated) {
		t.Fatalf("messages %v; interaction %+v, want %s recreated on phone", names, ix, id)
	}
}
