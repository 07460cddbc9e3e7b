package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/protocol"
)

// Multi-connect policies.
const (
	MultiConnectTakeover = "takeover"
	MultiConnectReject   = "reject"
)

// On-expire policies.
const (
	OnExpireDeactivate = "deactivate"
	OnExpireKeep       = "keep"
)

// ACW "then" policies.
const (
	ACWThenReady    = "ready"
	ACWThenPrevious = "previous"
)

// ACWPolicy is the after-call-work behaviour of one channel type.
type ACWPolicy struct {
	// Timeout returns the agent from after-call work by itself; 0 disables it.
	Timeout time.Duration `koanf:"timeout"`
	// Auto enters after-call work when the last interaction ends.
	Auto bool `koanf:"auto"`
	// Then is where the timeout returns the agent: "ready" or "previous"
	// (the ready/not-ready status the agent had before).
	Then string `koanf:"then"`
}

// Options configure sessions. The broker's configuration holds the defaults.
type Options struct {
	Grace          time.Duration
	OnExpire       string
	MultiConnect   string
	HistorySize    int
	TimelineSize   int
	InboxSize      int
	AdapterTimeout time.Duration
	RequestIDTTL   time.Duration
	RequestIDLimit int
	// ACW maps a lower-case channel type to its policy; "default" applies to
	// types without an entry.
	ACW map[string]ACWPolicy
	// AddressBookInterval is the minimum time between two real-time address
	// book updates to one session.
	AddressBookInterval time.Duration
	// DefaultHandleTime seeds the per-skill average handle time used for EWT.
	DefaultHandleTime time.Duration
}

// Identity is who a connection authenticated as.
type Identity struct {
	AgentID string
	Role    string
	Teams   []string
}

// Conn is a client connection as a session sees it.
type Conn interface {
	// Send queues an encoded message without blocking. It returns false when
	// the connection's queue overflowed; the connection then closes itself as
	// a slow consumer and must be considered detached.
	Send(msg []byte) bool
	// Close closes the connection after the messages already queued.
	Close(code protocol.CloseCode, reason string)
	// RemoteAddr is for logs.
	RemoteAddr() string
}

// Errors returned by Attach and Submit.
var (
	ErrAlreadyConnected = errors.New("the agent already has a live connection")
	ErrSessionEnded     = errors.New("session ended")
	ErrShuttingDown     = errors.New("broker is shutting down")
)

// Manager owns all sessions of this broker node.
type Manager struct {
	opts    Options
	adapter adapters.Adapter
	log     *zap.Logger
	audit   *zap.Logger
	dir     *directory

	mu      sync.Mutex
	byAgent map[string]*Session
	byID    map[string]*Session

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// NewManager creates a manager. audit receives state changes and must not be
// sampled.
func NewManager(opts Options, adapter adapters.Adapter, log, audit *zap.Logger) *Manager {
	return &Manager{opts: opts, adapter: adapter, log: log, audit: audit,
		dir:     newDirectory(opts.DefaultHandleTime),
		byAgent: map[string]*Session{}, byID: map[string]*Session{},
		stop: make(chan struct{})}
}

// Run routes switch events to sessions until ctx ends, Shutdown is called or
// the adapter closes its event stream.
func (m *Manager) Run(ctx context.Context) {
	events := m.adapter.Events()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return
			}
			m.dispatch(ev)
		case <-ctx.Done():
			return
		case <-m.stop:
			return
		}
	}
}

func (m *Manager) dispatch(ev adapters.Event) {
	switch ev.Kind {
	case adapters.EndpointTaken:
		m.dir.claim(ev.Endpoint, "switch:"+ev.Holder, true)
	case adapters.EndpointFreed:
		m.dir.release(ev.Endpoint, "switch:"+ev.Holder)
	case adapters.CatalogChanged, adapters.AddressBookChanged:
		for _, s := range m.sessions() {
			s.post(func(s *Session) { s.onSwitchEvent(ev) })
		}
	default:
		s := m.byAgentID(ev.AgentID)
		if s == nil {
			m.log.Debug("switch event for an agent without a session", zap.String("agent", ev.AgentID), zap.String("event", string(ev.Kind)))
			return
		}
		s.post(func(s *Session) { s.onSwitchEvent(ev) })
	}
}

func (m *Manager) sessions() []*Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Session, 0, len(m.byID))
	for _, s := range m.byID {
		out = append(out, s)
	}
	return out
}

func (m *Manager) byAgentID(agent string) *Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.byAgent[agent]
}

// SessionCount returns the number of live sessions.
func (m *Manager) SessionCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.byID)
}

// Presences returns every live agent's presence.
func (m *Manager) Presences() []Presence { return m.dir.presences() }

// owner returns the agent owning a session id, or "" when none is alive.
func (m *Manager) owner(sessionID string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.byID[sessionID]; s != nil {
		return s.agentID
	}
	return ""
}

// Attach connects conn to the agent's session, creating it when none is
// alive, and sends the initial events. since, when set, asks for a replay of
// the events after that seq.
func (m *Manager) Attach(ctx context.Context, id Identity, conn Conn, since *uint64) (*Session, error) {
	// A session found in the registry may end before it sees the attach (it
	// expired, logged out): then retry with a fresh one.
	for range 3 {
		s, created, err := m.sessionFor(id)
		if err != nil {
			return nil, err
		}
		res := make(chan error, 1)
		if !s.post(func(s *Session) { res <- s.attach(conn, since, created) }) {
			continue
		}
		select {
		case err := <-res:
			if err != nil {
				return nil, err
			}
			return s, nil
		case <-s.done:
			if s.err != nil {
				return nil, s.err
			}
		case <-ctx.Done():
			s.Detach(conn)
			return nil, ctx.Err()
		}
	}
	return nil, ErrSessionEnded
}

func (m *Manager) sessionFor(id Identity) (*Session, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.stop:
		return nil, false, ErrShuttingDown
	default:
	}
	if s := m.byAgent[id.AgentID]; s != nil {
		return s, false, nil
	}
	s := newSession(m, newID(), id)
	m.byAgent[id.AgentID] = s
	m.byID[s.id] = s
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		s.run()
	}()
	return s, true, nil
}

func (m *Manager) remove(s *Session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.byAgent[s.agentID] == s {
		delete(m.byAgent, s.agentID)
	}
	delete(m.byID, s.id)
}

// Shutdown stops every session goroutine without touching the switch: agents
// stay logged in and a restarted node (or another node) picks them up.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.stopOnce.Do(func() { close(m.stop) })
	done := make(chan struct{})
	go func() {
		m.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("sessions did not stop: %w", ctx.Err())
	}
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
