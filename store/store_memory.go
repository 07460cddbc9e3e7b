package store

import (
	"context"
	"sync"
	"time"

	"github.com/ctibroker/ctibroker/bus"
)

// Memory is the in-process store: nothing survives the process, and the
// lease is always this node's. Sessions skip building snapshots for it.
//
// Locking: mu guards the maps; each session's data has its own lock, so
// that commits of different sessions (thousands per second with
// supervisors) do not serialize. Bus publishing happens after both are
// released. Lock order: mu (read) before a session's lock, never the
// reverse (ExpireEvents holds both).
type Memory struct {
	limits Limits
	bus    bus.Bus
	epoch  time.Time // events are stamped with the monotonic time since

	mu       sync.RWMutex
	agents   map[string]string
	leases   map[string]lease
	sessions map[string]*memSession
	// History outlives sessions: timelines by session, sessions by agent.
	timelines map[string]*lockedRing
	history   map[string][]SessionRef
}

// lockedRing is a timeline: written by its session's commits, read after the
// session ended.
type lockedRing struct {
	mu sync.Mutex
	r  *ring
}

type lease struct {
	node    string
	expires time.Time
}

type memSession struct {
	mu       sync.Mutex // guards the fields below
	agent    string
	version  uint64
	commit   string // the last commit's ID
	snapshot []byte
	events   *ring
	timeline *lockedRing
	replies  map[string]memReply
}

type memReply struct {
	msg []byte
	at  time.Time
}

var _ Store = (*Memory)(nil)

// NewMemory creates an in-process store publishing on b.
func NewMemory(limits Limits, b bus.Bus) *Memory {
	return &Memory{limits: limits, bus: b, epoch: time.Now(), agents: map[string]string{}, leases: map[string]lease{}, sessions: map[string]*memSession{},
		timelines: map[string]*lockedRing{}, history: map[string][]SessionRef{}}
}

// Durable implements Store.
func (m *Memory) Durable() bool { return false }

// Claim implements Store.
func (m *Memory) Claim(_ context.Context, agentID, sid string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.agents[agentID]; ok {
		return cur, nil
	}
	m.agents[agentID] = sid
	now := time.Now()
	refs := append(m.history[agentID], SessionRef{SessionID: sid, Created: now})
	// Forget sessions beyond the retention or the count bound.
	for len(refs) > 0 && (now.Sub(refs[0].Created) > m.limits.History || len(refs) > max(m.limits.HistorySessions, 1)) {
		delete(m.timelines, refs[0].SessionID)
		refs = refs[1:]
	}
	m.history[agentID] = refs
	return sid, nil
}

// SessionOf implements Store.
func (m *Memory) SessionOf(_ context.Context, agentID string) (string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.agents[agentID], nil
}

// Acquire implements Store.
func (m *Memory) Acquire(_ context.Context, sid, _, node string, ttl time.Duration) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.heldByOther(sid, node) {
		return m.leases[sid].node, nil
	}
	m.leases[sid] = lease{node, time.Now().Add(ttl)}
	return node, nil
}

// Owner implements Store.
func (m *Memory) Owner(_ context.Context, sid string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.leases[sid]; ok && time.Now().Before(l.expires) {
		return l.node, nil
	}
	return "", nil
}

// Heartbeat implements Store: one process, always alive.
func (m *Memory) Heartbeat(context.Context, string, time.Duration) error { return nil }

// Renew implements Store.
func (m *Memory) Renew(_ context.Context, node string, ttl time.Duration, leases []Lease) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var lost []string
	expires := time.Now().Add(ttl)
	for _, l := range leases {
		if m.heldByOther(l.SessionID, node) {
			lost = append(lost, l.SessionID)
			continue
		}
		m.leases[l.SessionID] = lease{node, expires}
	}
	return lost, nil
}

func (m *Memory) heldByOther(sid, node string) bool {
	l, ok := m.leases[sid]
	return ok && l.node != node && time.Now().Before(l.expires)
}

// Release implements Store.
func (m *Memory) Release(_ context.Context, sid, node string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.leases[sid].node == node {
		delete(m.leases, sid)
	}
	return nil
}

// Load implements Store.
func (m *Memory) Load(_ context.Context, sid string) (Record, bool, error) {
	s := m.session(sid)
	if s == nil {
		return Record{}, false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return Record{SessionID: sid, AgentID: s.agent, Version: s.version, LastCommit: s.commit, Snapshot: s.snapshot}, true, nil
}

func (m *Memory) session(sid string) *memSession {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.sessions[sid]
}

// Commit implements Store.
func (m *Memory) Commit(ctx context.Context, c Commit) error {
	m.mu.RLock()
	other := m.heldByOther(c.SessionID, c.Node)
	l, held := m.leases[c.SessionID]
	s := m.sessions[c.SessionID]
	m.mu.RUnlock()
	if other {
		return ErrNotOwner
	}
	if s == nil {
		m.mu.Lock()
		if s = m.sessions[c.SessionID]; s == nil {
			tl := m.timelines[c.SessionID]
			if tl == nil {
				tl = &lockedRing{r: newRing(m.limits.Timeline)}
				m.timelines[c.SessionID] = tl
			}
			s = &memSession{agent: c.AgentID, events: newRing(m.limits.Events), timeline: tl}
			m.sessions[c.SessionID] = s
		}
		m.mu.Unlock()
	}
	s.mu.Lock()
	if s.version != c.Version {
		s.mu.Unlock()
		return ErrConflict
	}
	s.version++
	s.commit = c.ID
	if c.Snapshot != nil {
		s.snapshot = c.Snapshot
	}
	if len(c.Events) > 0 {
		// The history keeps the events as they come: a session's journal
		// puts a commit's events in one buffer of their size (see
		// journal.seal), which frees as one block when they expire.
		now := m.now()
		for _, e := range c.Events {
			s.events.add(e.Seq, now, e.Payload)
		}
	}
	if len(c.Timeline) > 0 {
		s.timeline.mu.Lock()
		for _, t := range c.Timeline {
			s.timeline.r.add(0, 0, t)
		}
		s.timeline.mu.Unlock()
	}
	if len(c.Replies) > 0 {
		now := time.Now()
		for id, r := range s.replies {
			if now.Sub(r.at) > m.limits.ReplyTTL {
				delete(s.replies, id)
			}
		}
		if s.replies == nil {
			s.replies = map[string]memReply{}
		}
		for _, r := range c.Replies {
			s.replies[r.RequestID] = memReply{r.Msg, now}
		}
	}
	s.mu.Unlock()
	if !held || l.node != c.Node {
		// Re-take a lease that expired while nobody else held it.
		m.mu.Lock()
		if !m.heldByOther(c.SessionID, c.Node) {
			m.leases[c.SessionID] = lease{c.Node, time.Now().Add(c.LeaseTTL)}
		}
		m.mu.Unlock()
	}
	if len(c.Topics) > 0 && len(c.Events) > 0 {
		msg := BusMessage(c.Events)
		for _, t := range c.Topics {
			_ = m.bus.Publish(ctx, t, msg)
		}
	}
	return nil
}

// EventsSince implements Store.
func (m *Memory) EventsSince(_ context.Context, sid string, since, last uint64) ([][]byte, bool, error) {
	s := m.session(sid)
	if s == nil {
		return nil, since == last, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out, ok := s.events.since(since, last)
	return out, ok, nil
}

// LastSeq implements Store.
func (m *Memory) LastSeq(_ context.Context, sid string) (uint64, error) {
	s := m.session(sid)
	if s == nil {
		return 0, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.events.last, nil
}

func (m *Memory) now() int64 { return int64(time.Since(m.epoch)) }

// ExpireEvents drops the events older than Limits.EventTTL, so that an idle
// session keeps none. The broker calls it periodically; it takes each
// session's lock briefly, under the read lock of the maps.
func (m *Memory) ExpireEvents() {
	if m.limits.EventTTL <= 0 {
		return
	}
	cutoff := m.now() - int64(m.limits.EventTTL)
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, s := range m.sessions {
		s.mu.Lock()
		s.events.expire(cutoff)
		s.mu.Unlock()
	}
}

// Timeline implements Store.
func (m *Memory) Timeline(_ context.Context, sid string) ([][]byte, error) {
	m.mu.RLock()
	tl := m.timelines[sid]
	m.mu.RUnlock()
	if tl == nil {
		return nil, nil
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.r.all(), nil
}

// LiveSessions implements Store.
func (m *Memory) LiveSessions(context.Context) ([]Record, error) {
	m.mu.RLock()
	sessions := make(map[string]*memSession, len(m.sessions))
	for sid, s := range m.sessions {
		sessions[sid] = s
	}
	m.mu.RUnlock()
	out := make([]Record, 0, len(sessions))
	for sid, s := range sessions {
		s.mu.Lock()
		out = append(out, Record{SessionID: sid, AgentID: s.agent, Version: s.version, Snapshot: s.snapshot})
		s.mu.Unlock()
	}
	return out, nil
}

// Unowned implements Store.
func (m *Memory) Unowned(context.Context) ([]string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []string
	now := time.Now()
	for sid := range m.sessions {
		if l, ok := m.leases[sid]; !ok || !now.Before(l.expires) {
			out = append(out, sid)
		}
	}
	return out, nil
}

// HistoryAgents implements Store.
func (m *Memory) HistoryAgents(context.Context) ([]string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]string, 0, len(m.history))
	for a, refs := range m.history {
		if len(refs) > 0 {
			out = append(out, a)
		}
	}
	return out, nil
}

// AgentSessions implements Store.
func (m *Memory) AgentSessions(_ context.Context, agentID string) ([]SessionRef, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []SessionRef
	for _, r := range m.history[agentID] {
		if time.Since(r.Created) <= m.limits.History {
			out = append(out, r)
		}
	}
	return out, nil
}

// Reply implements Store.
func (m *Memory) Reply(_ context.Context, sid, requestID string) ([]byte, bool, error) {
	s := m.session(sid)
	if s == nil {
		return nil, false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.replies[requestID]; ok && time.Since(r.at) <= m.limits.ReplyTTL {
		return r.msg, true, nil
	}
	return nil, false, nil
}

// End implements Store.
func (m *Memory) End(_ context.Context, agentID, sid string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.agents[agentID] == sid {
		delete(m.agents, agentID)
	}
	delete(m.sessions, sid)
	delete(m.leases, sid)
	return nil
}

// Ping implements Store.
func (m *Memory) Ping(context.Context) error { return nil }

// Close implements Store.
func (m *Memory) Close() error { return nil }

// Outbox implements Store: a process's memory dies with its webhook relay,
// so nothing is kept beside it.
func (m *Memory) Outbox(context.Context, string) ([]OutboxEntry, error) { return nil, nil }

// AckOutbox implements Store.
func (m *Memory) AckOutbox(context.Context, string, string) error { return nil }
