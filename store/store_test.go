package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/bus"
	"github.com/ctibroker/ctibroker/internal/redistest"
	"github.com/ctibroker/ctibroker/internal/testutil"
	"github.com/ctibroker/ctibroker/protocol"
)

var limits = Limits{Events: 5, Timeline: 3, TTL: time.Minute, ReplyTTL: time.Minute, History: time.Hour, HistorySessions: 3}

type backend struct {
	name string
	make func(tb testing.TB) (Store, bus.Bus)
}

var backends = []backend{
	{"memory", func(tb testing.TB) (Store, bus.Bus) {
		b := bus.NewMemory()
		return NewMemory(limits, b), b
	}},
	{"redis", func(tb testing.TB) (Store, bus.Bus) {
		srv := redistest.Start(tb)
		c := redis.NewClient(&redis.Options{Addr: srv.Addr})
		b := bus.NewRedis(c, "t:", zap.NewNop())
		tb.Cleanup(func() { _ = b.Close(); _ = c.Close() })
		return NewRedis(c, "t:", limits), b
	}},
}

// forEach runs f against every store, with nodes A and B alive (their
// liveness lasts the test).
func forEach(t *testing.T, f func(t *testing.T, s Store, b bus.Bus)) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			s, b := be.make(t)
			for _, n := range []string{"A", "B"} {
				if err := s.Heartbeat(context.Background(), n, time.Minute); err != nil {
					t.Fatal(err)
				}
			}
			f(t, s, b)
		})
	}
}

// A lease held by a node whose liveness lapsed is taken at once, and that
// node is fenced: its commits no longer land.
func TestStoreLeaseOfADeadNodeIsTakenAtOnce(t *testing.T) {
	ctx := context.Background()
	s, _ := backends[1].make(t) // one process has no other node: Redis only
	if err := s.Heartbeat(ctx, "A", 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := s.Heartbeat(ctx, "B", time.Minute); err != nil {
		t.Fatal(err)
	}
	if owner, _ := s.Acquire(ctx, "s1", "a", "A", time.Minute); owner != "A" {
		t.Fatalf("A: %q", owner)
	}
	if owner, _ := s.Acquire(ctx, "s1", "a", "B", time.Minute); owner != "A" {
		t.Fatalf("B took the lease of a live node: %q", owner)
	}
	time.Sleep(200 * time.Millisecond) // A stops heartbeating
	if owner, _ := s.Acquire(ctx, "s1", "a", "B", time.Minute); owner != "B" {
		t.Fatalf("B did not take the lease of a dead node, well within its minute: %q", owner)
	}
	if err := s.Commit(ctx, Commit{SessionID: "s1", AgentID: "a", Node: "A", Version: 0}); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("A, cut off and back, committed: %v", err)
	}
	if lost, _ := s.Renew(ctx, "A", time.Minute, []Lease{{"s1", "a"}}); !slices.Equal(lost, []string{"s1"}) {
		t.Fatalf("A renewed a lease it lost: lost %v", lost)
	}
}

func ev(seq uint64) Event {
	p := []byte(fmt.Sprintf(`{"seq":%d}`, seq))
	return Event{Seq: seq, Payload: p, Envelope: p}
}

func TestStoreCommitFencedByLeaseAndVersion(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, _ bus.Bus) {
		ctx := context.Background()
		if owner, err := s.Acquire(ctx, "s1", "alice", "A", time.Minute); err != nil || owner != "A" {
			t.Fatalf("Acquire = %q, %v", owner, err)
		}
		if owner, _ := s.Acquire(ctx, "s1", "alice", "B", time.Minute); owner != "A" {
			t.Fatalf("B acquired a held lease: owner %q", owner)
		}
		if err := s.Commit(ctx, Commit{SessionID: "s1", AgentID: "alice", Node: "B", Version: 0, Snapshot: []byte("x")}); !errors.Is(err, ErrNotOwner) {
			t.Fatalf("commit by a non-owner: %v", err)
		}
		if err := s.Commit(ctx, Commit{SessionID: "s1", AgentID: "alice", Node: "A", Version: 0, Snapshot: []byte("v1"), Events: []Event{ev(1), ev(2)}}); err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(ctx, Commit{SessionID: "s1", AgentID: "alice", Node: "A", Version: 0, Snapshot: []byte("stale")}); !errors.Is(err, ErrConflict) {
			t.Fatalf("commit at a stale version: %v", err)
		}
		if err := s.Commit(ctx, Commit{ID: "c2", SessionID: "s1", AgentID: "alice", Node: "A", Version: 1, Events: []Event{ev(3)}}); err != nil {
			t.Fatal(err)
		}
		rec, ok, err := s.Load(ctx, "s1")
		if err != nil || !ok || rec.Version != 2 || rec.AgentID != "alice" || rec.LastCommit != "c2" {
			t.Fatalf("Load = %+v, %v, %v", rec, ok, err)
		}
		if s.Durable() && string(rec.Snapshot) != "v1" {
			t.Fatalf("nil snapshot replaced the stored one: %q", rec.Snapshot)
		}
		if lost, err := s.Renew(ctx, "B", time.Minute, []Lease{{"s1", "alice"}}); err != nil || !slices.Equal(lost, []string{"s1"}) {
			t.Fatalf("B renewed A's lease: lost %v, %v", lost, err)
		}
		if err := s.Release(ctx, "s1", "A"); err != nil {
			t.Fatal(err)
		}
		if owner, _ := s.Acquire(ctx, "s1", "alice", "B", time.Minute); owner != "B" {
			t.Fatalf("after release, owner %q", owner)
		}
		if err := s.Commit(ctx, Commit{SessionID: "s1", AgentID: "alice", Node: "A", Version: 2}); !errors.Is(err, ErrNotOwner) {
			t.Fatalf("old owner committed after losing the lease: %v", err)
		}
	})
}

func TestStoreLeaseExpires(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, _ bus.Bus) {
		ctx := context.Background()
		_, _ = s.Acquire(ctx, "s1", "alice", "A", 100*time.Millisecond)
		deadline := time.Now().Add(5 * time.Second)
		for {
			owner, err := s.Acquire(ctx, "s1", "alice", "B", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if owner == "B" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the lease of a dead owner never expired")
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func TestStoreExpiredLeaseIsRetakenOnlyWhenFree(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, _ bus.Bus) {
		ctx := context.Background()
		_, _ = s.Acquire(ctx, "s1", "a", "A", 50*time.Millisecond)
		if err := s.Commit(ctx, Commit{SessionID: "s1", AgentID: "a", Node: "A", Version: 0, LeaseTTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(150 * time.Millisecond) // the lease expires (an outage, say)
		if lost, err := s.Renew(ctx, "A", time.Minute, []Lease{{"s1", "a"}}); err != nil || len(lost) != 0 {
			t.Fatalf("renewing an expired, free lease: lost %v, %v", lost, err)
		}
		if owner, _ := s.Acquire(ctx, "s1", "a", "B", time.Minute); owner != "A" {
			t.Fatalf("owner after renewal = %q", owner)
		}
		// B takes over after A's lease expires and changes the session: A's
		// commit at its old version must not land even though the lease is free.
		_ = s.Release(ctx, "s1", "A")
		_, _ = s.Acquire(ctx, "s1", "a", "B", time.Minute)
		if err := s.Commit(ctx, Commit{SessionID: "s1", AgentID: "a", Node: "B", Version: 1, LeaseTTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
		_ = s.Release(ctx, "s1", "B")
		if err := s.Commit(ctx, Commit{SessionID: "s1", AgentID: "a", Node: "A", Version: 1, LeaseTTL: time.Minute}); !errors.Is(err, ErrConflict) {
			t.Fatalf("stale commit after another node's change: %v, want ErrConflict", err)
		}
	})
}

func TestStoreEventsSince(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, _ bus.Bus) {
		ctx := context.Background()
		_, _ = s.Acquire(ctx, "s1", "a", "A", time.Minute)
		for v := uint64(0); v < 7; v++ {
			if err := s.Commit(ctx, Commit{SessionID: "s1", AgentID: "a", Node: "A", Version: v, Events: []Event{ev(v + 1)}}); err != nil {
				t.Fatal(err)
			}
		}
		if last, err := s.LastSeq(ctx, "s1"); err != nil || last != 7 {
			t.Fatalf("LastSeq = %d, %v", last, err)
		}
		// 7 events, at least 5 kept: Redis trims approximately (MAXLEN ~),
		// so since=0 may still be answerable there; when it is, it must be
		// complete.
		tests := []struct {
			since  uint64
			n      int
			ok     bool
			approx bool
		}{{7, 0, true, false}, {6, 1, true, false}, {3, 4, true, false}, {0, 0, false, true}, {8, 0, false, false}}
		for _, tt := range tests {
			got, ok, err := s.EventsSince(ctx, "s1", tt.since, 7)
			if err != nil {
				t.Fatal(err)
			}
			if tt.approx && s.Durable() && ok {
				tt.ok, tt.n = true, 7
			}
			if ok != tt.ok || len(got) != tt.n {
				t.Errorf("EventsSince(%d) = %d events, %v; want %d, %v", tt.since, len(got), ok, tt.n, tt.ok)
			}
			for i, e := range got {
				if want := fmt.Sprintf(`{"seq":%d}`, tt.since+uint64(i)+1); string(e) != want {
					t.Errorf("event %d = %s, want %s", i, e, want)
				}
			}
		}
	})
}

func TestStoreClaimRepliesTimelineEnd(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, _ bus.Bus) {
		ctx := context.Background()
		if sid, _ := s.Claim(ctx, "alice", "s1"); sid != "s1" {
			t.Fatalf("Claim = %s", sid)
		}
		if sid, _ := s.Claim(ctx, "alice", "s2"); sid != "s1" {
			t.Fatalf("second Claim = %s, want the live s1", sid)
		}
		_, _ = s.Acquire(ctx, "s1", "alice", "A", time.Minute)
		err := s.Commit(ctx, Commit{SessionID: "s1", AgentID: "alice", Node: "A", Version: 0,
			Timeline: [][]byte{[]byte("t1"), []byte("t2"), []byte("t3"), []byte("t4")},
			Replies:  []Reply{{RequestID: "r1", Msg: []byte("reply1")}}})
		if err != nil {
			t.Fatal(err)
		}
		tl, _ := s.Timeline(ctx, "s1")
		if fmt.Sprintf("%s", tl) != "[t2 t3 t4]" {
			t.Fatalf("timeline = %s, want the last 3", tl)
		}
		if r, ok, _ := s.Reply(ctx, "s1", "r1"); !ok || string(r) != "reply1" {
			t.Fatalf("Reply = %s, %v", r, ok)
		}
		if _, ok, _ := s.Reply(ctx, "s1", "r2"); ok {
			t.Fatal("unknown requestId found")
		}
		if live, _ := s.LiveSessions(ctx); len(live) != 1 || live[0].SessionID != "s1" {
			t.Fatalf("LiveSessions = %+v", live)
		}
		if err := s.End(ctx, "alice", "s1"); err != nil {
			t.Fatal(err)
		}
		if live, _ := s.LiveSessions(ctx); len(live) != 0 {
			t.Fatalf("LiveSessions after End = %+v", live)
		}
		// History outlives the session.
		if tl, _ := s.Timeline(ctx, "s1"); len(tl) != 3 {
			t.Fatalf("timeline after End: %s", tl)
		}
		refs, _ := s.AgentSessions(ctx, "alice")
		if len(refs) != 1 || refs[0].SessionID != "s1" || time.Since(refs[0].Created) > time.Minute {
			t.Fatalf("AgentSessions = %+v", refs)
		}
		if agents, _ := s.HistoryAgents(ctx); len(agents) != 1 || agents[0] != "alice" {
			t.Fatalf("HistoryAgents = %v", agents)
		}
		// At most HistorySessions sessions are remembered per agent.
		for i := 2; i <= 5; i++ {
			sid := fmt.Sprintf("s%d", i)
			_, _ = s.Claim(ctx, "alice", sid)
			_ = s.End(ctx, "alice", sid)
		}
		if refs, _ := s.AgentSessions(ctx, "alice"); len(refs) != 3 || refs[2].SessionID != "s5" {
			t.Fatalf("AgentSessions after 5 sessions = %+v, want the last 3", refs)
		}
		if sid, _ := s.SessionOf(ctx, "alice"); sid != "" {
			t.Fatalf("SessionOf after End = %q", sid)
		}
		if _, ok, _ := s.Load(ctx, "s1"); ok {
			t.Fatal("record survived End")
		}
	})
}

func TestStoreCommitPublishesInOrder(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, b bus.Bus) {
		ctx := context.Background()
		sub, err := b.Subscribe(ctx, "agent:alice", 100)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		_, _ = s.Acquire(ctx, "s1", "alice", "A", time.Minute)
		for v := uint64(0); v < 10; v++ {
			if err := s.Commit(ctx, Commit{SessionID: "s1", AgentID: "alice", Node: "A", Version: v, Events: []Event{ev(v + 1)}, Topics: []string{"agent:alice", "all"}}); err != nil {
				t.Fatal(err)
			}
		}
		for i := 1; i <= 10; i++ {
			select {
			case m := <-sub.C:
				if want := fmt.Sprintf(`{"seq":%d}`, i); string(m.Payload) != want {
					t.Fatalf("message %d = %s, want %s", i, m.Payload, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("message %d not delivered", i)
			}
		}
	})
}

// Many sessions commit at once, each one commit after the other as a
// session's goroutine does: the Redis store runs batches of commits in no
// set order (protocol.RedisCommitBatches), yet every session's events reach
// the bus in seq order and every commit lands.
func TestStoreParallelSessionsCommitInOrder(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, b bus.Bus) {
		const sessions, commits = 32, 30
		ctx := context.Background()
		sub, err := b.Subscribe(ctx, "all", sessions*commits)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		var wg sync.WaitGroup
		for i := range sessions {
			sid, agent := fmt.Sprintf("s%d", i), fmt.Sprintf("agent%d", i)
			if _, err := s.Acquire(ctx, sid, agent, "A", time.Minute); err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for v := range uint64(commits) {
					p := []byte(fmt.Sprintf(`{"agent":%q,"seq":%d}`, agent, v+1))
					ev := Event{Seq: v + 1, Payload: p, Envelope: p}
					if err := s.Commit(ctx, Commit{SessionID: sid, AgentID: agent, Node: "A", Version: v, Events: []Event{ev}, Topics: []string{"all"}}); err != nil {
						t.Errorf("%s commit %d: %v", sid, v, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		last := map[string]uint64{}
		for n := 0; n < sessions*commits; n++ {
			select {
			case m := <-sub.C:
				var e struct {
					Agent string
					Seq   uint64
				}
				if err := json.Unmarshal(m.Payload, &e); err != nil {
					t.Fatalf("message %s: %v", m.Payload, err)
				}
				if e.Seq != last[e.Agent]+1 {
					t.Fatalf("%s: seq %d after %d", e.Agent, e.Seq, last[e.Agent])
				}
				last[e.Agent] = e.Seq
			case <-time.After(5 * time.Second):
				t.Fatalf("%d of %d messages delivered", n, sessions*commits)
			}
		}
		for i := range sessions {
			if rec, _, err := s.Load(ctx, fmt.Sprintf("s%d", i)); err != nil || rec.Version != commits {
				t.Fatalf("s%d: version %d (%v), want %d", i, rec.Version, err, commits)
			}
		}
	})
}

// Two nodes race to apply changes to the same session; only the lease
// owner's commits land, and every landed commit has a distinct version (no
// lost update).
func TestStoreConcurrentCommitsNoLostUpdate(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, _ bus.Bus) {
		ctx := context.Background()
		_, _ = s.Acquire(ctx, "s1", "a", "A", time.Minute)
		var mu sync.Mutex
		landed := map[string]int{}
		var wg sync.WaitGroup
		for _, node := range []string{"A", "A", "B", "B"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 50 {
					rec, _, err := s.Load(ctx, "s1")
					if err != nil {
						t.Error(err)
						return
					}
					if err := s.Commit(ctx, Commit{SessionID: "s1", AgentID: "a", Node: node, Version: rec.Version}); err == nil {
						mu.Lock()
						landed[node]++
						mu.Unlock()
					} else if !errors.Is(err, ErrConflict) && !errors.Is(err, ErrNotOwner) {
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		rec, _, _ := s.Load(ctx, "s1")
		if landed["B"] != 0 {
			t.Fatalf("a node without the lease committed %d times", landed["B"])
		}
		if uint64(landed["A"]) != rec.Version {
			t.Fatalf("%d commits reported success but the version is %d: lost update", landed["A"], rec.Version)
		}
	})
}

// A node renews all its leases in one call, over more than one pipeline, and
// learns exactly which ones another node took.
func TestStoreRenewsManyLeases(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, _ bus.Bus) {
		ctx := context.Background()
		var leases []Lease
		for i := range protocol.RenewBatch + 5 {
			sid := fmt.Sprintf("s%d", i)
			leases = append(leases, Lease{SessionID: sid, AgentID: fmt.Sprintf("a%d", i)})
			if owner, err := s.Acquire(ctx, sid, leases[i].AgentID, "A", 100*time.Millisecond); err != nil || owner != "A" {
				t.Fatalf("Acquire = %q, %v", owner, err)
			}
		}
		// B takes two sessions whose leases expired; one in the second batch.
		time.Sleep(150 * time.Millisecond)
		for _, sid := range []string{"s3", fmt.Sprintf("s%d", protocol.RenewBatch+2)} {
			if owner, _ := s.Acquire(ctx, sid, "x", "B", time.Minute); owner != "B" {
				t.Fatalf("B could not take the expired lease of %s: %q", sid, owner)
			}
		}
		if r, ok := s.(*Redis); ok {
			// A Redis that lost its script cache (restart, failover).
			if err := r.c.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		lost, err := s.Renew(ctx, "A", time.Minute, leases)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"s3", fmt.Sprintf("s%d", protocol.RenewBatch+2)}; !slices.Equal(lost, want) {
			t.Fatalf("lost = %v, want %v", lost, want)
		}
		// Renewed (and the expired, free ones re-taken): B cannot acquire.
		for _, sid := range []string{"s0", "s4", fmt.Sprintf("s%d", protocol.RenewBatch+4)} {
			if owner, _ := s.Acquire(ctx, sid, "x", "B", time.Minute); owner != "A" {
				t.Fatalf("%s: owner %q after renewal, want A", sid, owner)
			}
		}
	})
}

// The in-process store drops replay events by age, so that idle sessions
// hold none, and still knows the last seq; a resume behind it then gets the
// full state instead of a replay.
func TestMemoryExpiresOldEvents(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		ttl     time.Duration
		replays bool
	}{{"no ttl keeps them", 0, true}, {"young ones stay", time.Hour, true}, {"old ones go", time.Nanosecond, false}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := limits
			l.EventTTL = tt.ttl
			m := NewMemory(l, bus.NewMemory())
			if err := m.Commit(ctx, Commit{SessionID: "s1", AgentID: "alice", Node: "A", Events: []Event{ev(1), ev(2), ev(3)}}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond) // the clock moves past the nanosecond TTL
			m.ExpireEvents()
			got, ok, err := m.EventsSince(ctx, "s1", 1, 3)
			if err != nil || ok != tt.replays || (ok && len(got) != 2) {
				t.Fatalf("EventsSince(1) = %d events, %v, %v; want replay %v", len(got), ok, err, tt.replays)
			}
			if _, ok, _ := m.EventsSince(ctx, "s1", 3, 3); !ok {
				t.Fatal("an up-to-date resume must not need a resync")
			}
			if last, _ := m.LastSeq(ctx, "s1"); last != 3 {
				t.Fatalf("LastSeq = %d after expiry, want 3", last)
			}
			// New events after an expiry are kept and replayable.
			if err := m.Commit(ctx, Commit{SessionID: "s1", AgentID: "alice", Node: "A", Version: 1, Events: []Event{ev(4)}}); err != nil {
				t.Fatal(err)
			}
			if got, ok, _ := m.EventsSince(ctx, "s1", 3, 4); !ok || len(got) != 1 {
				t.Fatalf("EventsSince(3) after new events = %d, %v", len(got), ok)
			}
		})
	}
}

// A commit's events go out as one bus message per topic, an envelope per line.
func TestStoreCommitPublishesOneMessagePerCommit(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, b bus.Bus) {
		ctx := context.Background()
		sub, err := b.Subscribe(ctx, "all", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		_, _ = s.Acquire(ctx, "s1", "alice", "A", time.Minute)
		events := []Event{ev(1), ev(2), ev(3)}
		if err := s.Commit(ctx, Commit{SessionID: "s1", AgentID: "alice", Node: "A", Events: events, Topics: []string{"agent:alice", "all"}}); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-sub.C:
			if want := "{\"seq\":1}\n{\"seq\":2}\n{\"seq\":3}"; string(m.Payload) != want {
				t.Fatalf("message = %q, want %q", m.Payload, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("nothing published")
		}
		select {
		case m := <-sub.C:
			t.Fatalf("a second message: %s", m.Payload)
		case <-time.After(50 * time.Millisecond):
		}
	})
}

// Commits leave TTL refreshes to lease renewals, so every key a commit
// creates must get its TTL there and then: a session whose node dies right
// after must still disappear. The timeline is trimmed with slack but reads
// at its bound.
func TestRedisCommitKeysExpireAndTimelineIsBounded(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	s := NewRedis(c, "t:", limits)
	ctx := context.Background()
	if _, err := s.Acquire(ctx, "s1", "alice", "A", time.Minute); err != nil {
		t.Fatal(err)
	}
	// The first commit creates the hash only; later ones the stream, then the timeline.
	commits := []Commit{
		{},
		{Events: []Event{ev(1)}},
		{Events: []Event{ev(2)}, Timeline: [][]byte{[]byte("t1")}},
	}
	for i := 0; i < 20; i++ {
		commits = append(commits, Commit{Events: []Event{ev(uint64(3 + i))}, Timeline: [][]byte{fmt.Appendf(nil, "t%d", i+2)}})
	}
	for v, cm := range commits {
		cm.SessionID, cm.AgentID, cm.Node, cm.Version = "s1", "alice", "A", uint64(v)
		if err := s.Commit(ctx, cm); err != nil {
			t.Fatalf("commit %d: %v", v, err)
		}
		for _, k := range []string{"t:sess:{s1}", "t:sess:{s1}:ev", "t:sess:{s1}:tl"} {
			ttl, err := c.PTTL(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			if ttl == -1 {
				t.Fatalf("after commit %d, %s has no TTL", v, k)
			}
		}
	}
	if n := c.LLen(ctx, "t:sess:{s1}:tl").Val(); n > int64(limits.Timeline+1+limits.Timeline/8) {
		t.Fatalf("timeline list holds %d entries, bound %d", n, limits.Timeline)
	}
	tl, _ := s.Timeline(ctx, "s1")
	if fmt.Sprintf("%s", tl) != "[t19 t20 t21]" {
		t.Fatalf("timeline = %s, want the last %d", tl, limits.Timeline)
	}
}

// Renewals keep a live session's keys from expiring, refreshing their TTLs
// once per TTL/keyRefreshes rather than at every round: most rounds only
// extend the leases.
func TestRedisRenewRefreshesKeyTTLsNowAndThen(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	short := limits
	short.TTL, short.History = 1600*time.Millisecond, 1600*time.Millisecond // keys refreshed every 200 ms
	s := NewRedis(c, "t:", short)
	ctx := context.Background()
	if _, err := s.Claim(ctx, "alice", "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire(ctx, "s1", "alice", "A", time.Second); err != nil {
		t.Fatal(err)
	}
	err := s.Commit(ctx, Commit{SessionID: "s1", AgentID: "alice", Node: "A", Snapshot: []byte("{}"),
		Events: []Event{ev(1)}, Timeline: [][]byte{[]byte("t1")}})
	if err != nil {
		t.Fatal(err)
	}
	c.ConfigResetStat(ctx)
	rounds := 0
	for start := time.Now(); time.Since(start) < 2*short.TTL; rounds++ {
		if lost, err := s.Renew(ctx, "A", time.Second, []Lease{{SessionID: "s1", AgentID: "alice"}}); err != nil || len(lost) > 0 {
			t.Fatalf("Renew = %v, %v", lost, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, k := range []string{"t:agent:{alice}", "t:sess:{s1}", "t:sess:{s1}:ev", "t:sess:{s1}:tl", "t:sess:{s1}:lease"} {
		if n := c.Exists(ctx, k).Val(); n != 1 {
			t.Errorf("%s expired while its session's lease was renewed", k)
		}
	}
	// Four PEXPIREs per refreshing round (hash, stream, timeline, agent).
	var refreshes int
	for _, l := range strings.Split(c.Info(ctx, "commandstats").Val(), "\n") {
		if strings.HasPrefix(l, "cmdstat_pexpire:calls=") {
			fmt.Sscanf(strings.TrimPrefix(l, "cmdstat_pexpire:calls="), "%d", &refreshes)
		}
	}
	refreshes /= 4
	if refreshes < 2 || refreshes > rounds/4 {
		t.Errorf("%d of %d renewal rounds refreshed the keys' TTLs, want one per 200 ms (about %d)", refreshes, rounds, int(2*short.TTL/(200*time.Millisecond)))
	}
}

// Owner reads the lease holder: what a node forwards a supervisor's action to.
func TestStoreOwner(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, _ bus.Bus) {
		ctx := context.Background()
		if o, err := s.Owner(ctx, "s1"); err != nil || o != "" {
			t.Fatalf("Owner before any lease = %q, %v", o, err)
		}
		_, _ = s.Acquire(ctx, "s1", "alice", "A", time.Minute)
		if o, _ := s.Owner(ctx, "s1"); o != "A" {
			t.Fatalf("Owner = %q, want A", o)
		}
		_ = s.Release(ctx, "s1", "A")
		if o, _ := s.Owner(ctx, "s1"); o != "" {
			t.Fatalf("Owner after Release = %q", o)
		}
	})
}

// Unowned lists the live sessions whose lease lapsed, and only those.
func TestStoreUnowned(t *testing.T) {
	forEach(t, func(t *testing.T, s Store, _ bus.Bus) {
		ctx := context.Background()
		for _, c := range []struct {
			sid, agent string
			lease      time.Duration
		}{{"held", "alice", time.Minute}, {"orphan", "bob", 50 * time.Millisecond}} {
			_, _ = s.Claim(ctx, c.agent, c.sid)
			_, _ = s.Acquire(ctx, c.sid, c.agent, "A", c.lease)
			if err := s.Commit(ctx, Commit{SessionID: c.sid, AgentID: c.agent, Node: "A", Snapshot: []byte("{}")}); err != nil {
				t.Fatal(err)
			}
		}
		testutil.Eventually(t, "the orphan's lease lapsed", func() bool {
			sids, err := s.Unowned(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return fmt.Sprint(sids) == "[orphan]"
		})
		_, _ = s.Acquire(ctx, "orphan", "bob", "B", time.Minute)
		if sids, _ := s.Unowned(ctx); len(sids) != 0 {
			t.Fatalf("Unowned after B took the orphan = %v", sids)
		}
	})
}

// BusMessage publishes envelopes already lying one per line in one buffer
// as they are, and joins any others into a new one.
func TestBusMessage(t *testing.T) {
	one := []byte("{\"a\":1}\n{\"b\":2}\n{\"c\":3}")
	sep := []byte("{\"a\":1} {\"b\":2}")
	cases := []struct {
		name   string
		events []Event
		shared bool // the message is the first envelope's buffer
	}{
		{"single", []Event{{Envelope: one[:7]}}, true},
		{"adjacent", []Event{{Envelope: one[:7]}, {Envelope: one[8:15]}, {Envelope: one[16:]}}, true},
		{"separate buffers", []Event{{Envelope: []byte(`{"a":1}`)}, {Envelope: []byte(`{"b":2}`)}}, false},
		{"out of order", []Event{{Envelope: one[8:15]}, {Envelope: one[:7]}}, false},
		{"not a newline between", []Event{{Envelope: sep[:7]}, {Envelope: sep[8:]}}, false},
		{"capped first", []Event{{Envelope: one[:7:7]}, {Envelope: one[8:15]}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var want []string
			for _, e := range c.events {
				want = append(want, string(e.Envelope))
			}
			msg := BusMessage(c.events)
			if string(msg) != strings.Join(want, "\n") {
				t.Fatalf("message %q, want %q", msg, strings.Join(want, "\n"))
			}
			if shared := &msg[0] == &c.events[0].Envelope[0]; shared != c.shared {
				t.Fatalf("shares the first envelope's buffer: %v, want %v", shared, c.shared)
			}
		})
	}
	if msg := BusMessage(nil); len(msg) != 0 {
		t.Fatalf("no events: %q", msg)
	}
}

// BenchmarkRedisUnowned is one orphan sweep's listing with 10,000 live
// sessions, a tenth of them without a lease (what a sweep costs Redis and
// the node, every half session.grace).
func BenchmarkRedisUnowned(b *testing.B) {
	srv := redistest.Start(b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	b.Cleanup(func() { _ = c.Close() })
	s := NewRedis(c, "t:", limits)
	ctx := context.Background()
	const live = 10000
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range live {
			sid := fmt.Sprintf("s%d", i)
			p.SAdd(ctx, "t:live", sid)
			if i%10 != 0 {
				p.Set(ctx, "t:sess:{"+sid+"}:lease", "A", time.Hour)
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	// The baseline: reading the live set alone, which any sweep needs.
	b.Run("smembers", func(b *testing.B) {
		for b.Loop() {
			if ids, err := c.SMembers(ctx, "t:live").Result(); err != nil || len(ids) != live {
				b.Fatalf("SMEMBERS: %d, %v", len(ids), err)
			}
		}
	})
	b.Run("unowned", func(b *testing.B) {
		for b.Loop() {
			sids, err := s.Unowned(ctx)
			if err != nil || len(sids) != live/10 {
				b.Fatalf("Unowned: %d sessions, %v", len(sids), err)
			}
		}
	})
}
