package session

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

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

func (c *testConn) Send(msgs [][]byte) bool {
	for _, m := range msgs {
		c.out <- m
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
// store and bus; opts overrides the inbox size and lease TTL.
func testManager(tb testing.TB, opts Options) (*Manager, *store.Memory) {
	tb.Helper()
	sw, err := sim.New(sim.Config{NotReadyReasons: []protocol.ReasonCode{{ID: "lunch", Code: "10", Selectable: true}}})
	if err != nil {
		tb.Fatal(err)
	}
	bs := bus.NewMemory()
	st := store.NewMemory(store.Limits{Events: 1024, Timeline: 1000, TTL: time.Hour, ReplyTTL: time.Minute, History: time.Hour, HistorySessions: 10}, bs)
	base := Options{Grace: time.Minute, OnExpire: OnExpireKeep, MultiConnect: MultiConnectTakeover, HistorySize: 1024,
		TimelineSize: 1000, InboxSize: 8, AdapterTimeout: time.Second, RequestIDTTL: time.Minute, RequestIDLimit: 100,
		AddressBookInterval: time.Second, DefaultHandleTime: time.Minute, Node: "n", LeaseTTL: time.Minute,
		StoreTimeout: time.Second, HealthInterval: time.Hour, MaxChannels: 32, MaxGroups: 8}
	if opts.InboxSize != 0 {
		base.InboxSize = opts.InboxSize
	}
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
			s.mu.Lock()
			defer s.mu.Unlock()
			return !s.running && len(s.queue) == 0
		})
		s.mu.Lock()
		held := s.outboxBuf != nil || s.outbox != nil
		s.mu.Unlock()
		if held {
			t.Fatalf("idle session %s holds an event buffer", s.ID())
		}
	}
}

// Submit blocks while the inbox is full (backpressure on the connection's
// reader) and the commands still run in order.
func TestSubmitWaitsForRoomInTheInbox(t *testing.T) {
	m, _ := testManager(t, Options{InboxSize: 2})
	conn := newTestConn()
	s, err := m.Attach(context.Background(), Identity{AgentID: "alice", Role: RoleAgent}, conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn.next(t) // session.initialized
	release := make(chan struct{})
	busy := make(chan struct{})
	s.post(func(*Session) { close(busy); <-release })
	<-busy
	submit := func(ctx context.Context, id string) error {
		return s.Submit(ctx, conn, Frame{Data: []byte(`{"command":"session.request.incontact.addressbook","target":"` + s.ID() + `","requestId":"` + id + `"}`), Received: time.Now()})
	}
	for _, id := range []string{"r1", "r2"} {
		if err := submit(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := submit(ctx, "r3"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third command into a full inbox of 2: %v, want it to wait", err)
	}
	close(release)
	if err := submit(context.Background(), "r3"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"r1", "r2", "r3"} {
		var reply string
		for reply == "" {
			if msg := string(conn.next(t)); strings.Contains(msg, `"result":"success"`) {
				reply = msg
			}
		}
		if !strings.Contains(reply, `"requestId":"`+id+`"`) {
			t.Fatalf("reply %s, want the one to %s", reply, id)
		}
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
