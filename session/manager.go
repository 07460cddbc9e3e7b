package session

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/bus"
	"github.com/ctibroker/ctibroker/metrics"
	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/store"
)

// Multi-connect policies.
const (
	MultiConnectTakeover = "takeover"
	MultiConnectReject   = "reject"
	// MultiConnectShare: an agent's connections share its session; a
	// supervisor's new connection takes over (its live view is one
	// connection's).
	MultiConnectShare = "share"
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
	// Disposition: none, optional or required (no leaving wrap-up for an
	// interaction until interaction.complete gave it a code).
	Disposition string `koanf:"disposition"`
}

// Options configure sessions. The broker's configuration holds the defaults.
type Options struct {
	Grace        time.Duration
	OnExpire     string
	MultiConnect string
	HistorySize  int
	TimelineSize int
	// CommandRate (per second) and CommandBurst bound a session's commands,
	// whatever its connections; 0: no limit.
	CommandRate  float64
	CommandBurst int
	// ConnectRate (per second) and ConnectBurst bound how fast the
	// connections of an agent whose session this node holds come; 0: no
	// limit.
	ConnectRate  float64
	ConnectBurst int
	// MaxChannels and MaxGroups bound a session's channels and groups.
	MaxChannels int
	MaxGroups   int
	// SupervisorReason is the not-ready reason of a supervisor's action
	// that names none (supervisor.reasoncode).
	SupervisorReason string
	// Capacity is how many interactions a channel of a type (upper case)
	// holds at once; 1 for types without an entry.
	Capacity       map[string]int
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
	// Node identifies this broker node in session leases.
	Node string
	// URL is this node's WebSocket URL, given to connections of shared
	// sessions it serves that reached another node (empty: none).
	URL string
	// LeaseTTL is how long a session's lease lasts without renewal; the
	// owner renews it every LeaseTTL/3. It bounds how long a dead node's
	// sessions stay unreachable.
	LeaseTTL time.Duration
	// NodeTTL is how long this node's liveness lasts without a heartbeat
	// (every NodeTTL/3). Another node takes the sessions of a node whose
	// liveness lapsed as soon as their agents reconnect to it, without
	// waiting for LeaseTTL.
	NodeTTL time.Duration
	// StoreTimeout bounds every store call.
	StoreTimeout time.Duration
	// HealthInterval is how often the store is pinged for readiness.
	HealthInterval time.Duration
	// QueueInterval: a queue's time-based figures alone (longest wait,
	// speed of answer, service level) change for supervisors at most this
	// often; counts change at once.
	QueueInterval time.Duration
	// Pusher receives webhook messages; nil: none are made.
	Pusher Pusher
	// Queues reports the switch's queue figures; nil: the adapter, if it
	// is an adapters.QueueReporter.
	Queues adapters.QueueReporter
	// Metrics records commands and events; nil records nothing.
	Metrics *metrics.Metrics
}

// Identity is who a connection authenticated as.
type Identity struct {
	AgentID string
	Role    string
	Teams   []string
	// AllTeams: a supervisor who may see every team (role admin, or a
	// supervisor in auth.mode none).
	AllTeams bool
}

// Roles.
const (
	RoleAgent      = "agent"
	RoleSupervisor = "supervisor"
	RoleAdmin      = "admin"
)

// Supervisor reports whether the identity gets a supervisor session (no
// channels, read-only, can watch agents).
func (id Identity) Supervisor() bool { return id.Role == RoleSupervisor || id.Role == RoleAdmin }

// key is the identity's registry and store key. Agents and supervisors
// live in separate namespaces that no id can cross: an agent's key is its
// id, a supervisor's is "sup." and its id, and ids never contain '.'
// (protocol.ValidateID), so no agent id can name a supervisor's session or
// the reverse.
func (id Identity) key() string {
	if id.Supervisor() {
		return supervisorKeyPrefix + id.AgentID
	}
	return id.AgentID
}

const supervisorKeyPrefix = "sup."

// isAgentKey tells an agent's key from a supervisor's.
func isAgentKey(key string) bool { return !strings.Contains(key, ".") }

// Message is one message for a connection: Head followed by Body, written
// as one WebSocket message (AppendTo). Body may be shared by many
// connections (a supervisor change is encoded once for all its
// subscribers): nobody modifies it.
//
// A change folded for one watch has no Body: it differs per watch (its
// previous view and count), so the writer encodes it straight into its
// frame from the log's shared encodings rather than each subscriber
// holding a copy until its batch is written.
type Message struct {
	Head, Body []byte
	folded     foldedChange
}

// AppendTo appends the message to dst.
func (m *Message) AppendTo(dst []byte) []byte {
	dst = append(dst, m.Head...)
	if m.folded.last != nil {
		return m.folded.appendTo(dst)
	}
	return append(dst, m.Body...)
}

// Len is the message's length, or a bound of it for a folded change: it
// bounds queues and frames.
func (m *Message) Len() int {
	if m.folded.last != nil {
		return len(m.Head) + m.folded.len()
	}
	return len(m.Head) + len(m.Body)
}

// Conn is a client connection as a session sees it.
type Conn interface {
	// Send queues encoded messages, to be written in order and together,
	// without blocking; done (when set) is called once they are written or
	// dropped. It returns false when the connection's queue overflowed or it
	// is closing: it closes itself as a slow consumer and must be considered
	// detached.
	Send(msgs []Message, done func()) bool
	// Close closes the connection after the messages already queued.
	Close(code protocol.CloseCode, reason string)
	// RemoteAddr is for logs.
	RemoteAddr() string
	// UserAgent is its client's, bounded; shown to the session's other
	// connections under share.
	UserAgent() string
}

// Errors returned by Attach and Submit.
var (
	ErrAlreadyConnected = errors.New("the agent already has a live connection")
	ErrMoved            = errors.New("the session is served by another node")
	ErrSessionEnded     = errors.New("session ended")
	ErrShuttingDown     = errors.New("broker is shutting down")
	// errRoleChanged: the connecting identity has another role than the
	// session's; the session ends and a new one starts.
	errRoleChanged      = errors.New("the role changed")
	ErrStoreUnavailable = errors.New("the session store is unavailable")
)

// MovedError: under session.multiconnect share, the agent's session is
// served by another node, with connections: the new connection belongs
// there (protocol.CloseMoved).
type MovedError struct {
	Node, URL string
}

func (e *MovedError) Error() string { return "the session is served by node " + e.Node }

// Unwrap makes errors.Is(err, ErrMoved) work.
func (e *MovedError) Unwrap() error { return ErrMoved }

// Manager owns all sessions of this broker node.
type Manager struct {
	opts    Options
	adapter adapters.Adapter
	store   store.Store
	bus     bus.Bus
	log     *zap.Logger
	audit   *zap.Logger
	dir     *directory
	board   *board
	queues  *queueBoard
	healthy atomic.Bool

	mu      sync.Mutex
	byAgent map[string]*Session
	byID    map[string]*Session
	opening map[string]chan struct{} // agents whose session is being opened
	// pendingActions: supervisor actions forwarded to another node, by id,
	// waiting for its answer (chan *protocol.Failure).
	pendingActions sync.Map
	// pendingTakeovers: sessions this node asked another to hand over, by
	// id, waiting in acquire (chan *MovedError: the owner keeps it).
	pendingTakeovers sync.Map
	// attaching admits attaches (protocol.MaxOpeningPerCPU per CPU).
	attaching chan struct{}

	// leaseMu orders lease renewal against sessions giving their lease up:
	// the renewer holds it for a whole round, a session sets leaseGone under
	// it before releasing, so no renewal re-takes a released lease. It also
	// guards leases, the round's list, kept between rounds: an idle node
	// makes no garbage.
	leaseMu sync.Mutex
	leases  []store.Lease
	// orphanSuspects are the sessions the last sweep found without a
	// lease; owned by the sweep that runs (one at a time).
	orphanSuspects map[string]bool

	stop     chan struct{}
	stopOnce sync.Once
	// wg counts live sessions (from registration to cleanup) and the
	// board's goroutines.
	wg sync.WaitGroup
}

// NewManager creates a manager. audit receives state changes and must not be
// sampled.
func NewManager(opts Options, adapter adapters.Adapter, st store.Store, b bus.Bus, log, audit *zap.Logger) *Manager {
	m := &Manager{opts: opts, adapter: adapter, store: st, bus: b, log: log, audit: audit,
		dir:     newDirectory(opts.DefaultHandleTime),
		byAgent: map[string]*Session{}, byID: map[string]*Session{}, opening: map[string]chan struct{}{},
		attaching: make(chan struct{}, protocol.MaxOpeningPerCPU*runtime.GOMAXPROCS(0)),
		stop:      make(chan struct{})}
	m.healthy.Store(true)
	m.board = newBoard(m)
	m.queues = newQueueBoard(m)
	return m
}

// Healthy reports whether the session store answered its last ping.
func (m *Manager) Healthy() bool { return m.healthy.Load() }

// nodeTopic is the bus topic on which a node receives takeover requests.
func nodeTopic(node string) string { return "node:" + node }

// Run routes switch events to sessions, serves takeover requests from other
// nodes and watches the store's health, until ctx ends or Shutdown is called.
func (m *Manager) Run(ctx context.Context) error {
	// Without the subscription other nodes cannot ask for a handover (they
	// then wait for the lease to expire): keep trying until it works.
	var sub *bus.Subscription
	var takeovers <-chan bus.Message
	var resync <-chan struct{}
	subscribe := func() {
		sctx, cancel := context.WithTimeout(ctx, m.opts.StoreTimeout)
		defer cancel()
		s, err := m.bus.Subscribe(sctx, nodeTopic(m.opts.Node), protocol.NodeTopicBuffer)
		if err != nil {
			m.log.Warn("cannot subscribe to takeover requests yet", zap.Error(err))
			return
		}
		sub, takeovers, resync = s, s.C, s.Resync
	}
	subscribe()
	defer func() {
		if sub != nil {
			sub.Close()
		}
	}()
	health := time.NewTicker(m.opts.HealthInterval)
	defer health.Stop()
	var heartbeats <-chan time.Time // none without a node TTL (one node, tests)
	if m.opts.NodeTTL > 0 {
		t := time.NewTicker(m.opts.NodeTTL / 3)
		defer t.Stop()
		heartbeats = t.C
		m.heartbeat(ctx)
	}
	// Only a durable store outlives a node: in memory, sessions die with it.
	var sweeps <-chan time.Time
	if m.store.Durable() {
		t := time.NewTicker(orphanSweep(m.opts.Grace, m.opts.LeaseTTL))
		defer t.Stop()
		sweeps = t.C
	}
	sweeping := make(chan struct{}, 1)        // one sweep at a time, off this loop
	defer func() { sweeping <- struct{}{} }() // waits for a running sweep
	leases := time.NewTicker(max(m.opts.LeaseTTL/3, time.Millisecond))
	defer leases.Stop()
	renewing := make(chan struct{}, 1)        // one round at a time, off this loop
	defer func() { renewing <- struct{}{} }() // waits for a running round
	queuesDone := make(chan struct{})
	queuesCtx, stopQueues := context.WithCancel(ctx)
	go func() {
		defer close(queuesDone)
		m.queues.run(queuesCtx)
	}()
	defer func() { stopQueues(); <-queuesDone }()
	events := m.adapter.Events()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			m.dispatch(ev)
		case msg := <-takeovers:
			m.onNodeAction(msg.Payload)
		case <-resync:
			// A lost takeover request is repeated by the requester, or its
			// lease wait covers it; nothing to recover.
		case <-leases.C:
			select {
			case renewing <- struct{}{}:
				go func() {
					defer func() { <-renewing }()
					m.renewLeases()
				}()
			default: // the last round is still running: the store is slow
			}
		case <-sweeps:
			select {
			case sweeping <- struct{}{}:
				go func() {
					defer func() { <-sweeping }()
					m.adoptOrphans(ctx)
				}()
			default: // the last sweep is still running
			}
		case <-heartbeats:
			m.heartbeat(ctx)
		case <-health.C:
			m.checkHealth(ctx)
			if sub == nil {
				subscribe()
			}
		case <-ctx.Done():
			return nil
		case <-m.stop:
			return nil
		}
	}
}

// orphanSweep is how often a node looks for sessions no node holds: at
// least a lease apart, so that a live owner's renewal (every third of a
// lease) re-takes a lease that lapsed in a Redis outage before the next
// sweep could count the session an orphan.
func orphanSweep(grace, leaseTTL time.Duration) time.Duration {
	return max(min(max(grace/2, time.Second), protocol.MaxOrphanSweepSeconds*time.Second), leaseTTL)
}

// adoptOrphans takes the sessions no node holds (their node died and their
// agent has not come back to another one) and runs their grace period here:
// an agent who never returns is then logged out of the switch and leaves
// the supervisors' views as if its node had lived, instead of staying ready
// on the switch until redis.sessionttl. A session is adopted only when two
// sweeps in a row found it without a lease: after a Redis outage longer than
// a lease, every lease has lapsed, and the live owners re-take theirs
// between the two. Nodes race for an orphan's lease; one wins, the others
// pass.
func (m *Manager) adoptOrphans(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, m.opts.StoreTimeout)
	sids, err := m.store.Unowned(sctx)
	cancel()
	if err != nil {
		m.log.Warn("cannot list the sessions no node holds", zap.Error(err))
		return
	}
	suspects := make(map[string]bool, len(sids))
	for _, sid := range sids {
		suspects[sid] = true
	}
	confirmed := m.orphanSuspects
	m.orphanSuspects = suspects
	for _, sid := range sids {
		if ctx.Err() != nil {
			return
		}
		if !confirmed[sid] {
			continue
		}
		if err := m.adopt(ctx, sid); err != nil {
			m.log.Warn("cannot adopt a session no node holds", zap.String("session", sid), zap.Error(err))
		}
	}
}

// adopt opens the orphaned session sid here, without a connection: its
// grace period starts, and an agent connecting to any node meanwhile takes
// it over as from any live node.
func (m *Manager) adopt(ctx context.Context, sid string) error {
	id, ok, err := m.claimOrphan(ctx, sid)
	if err != nil || !ok {
		return err
	}
	octx, cancel := context.WithTimeout(ctx, m.opts.LeaseTTL+2*m.opts.StoreTimeout)
	s, _, err := m.sessionFor(octx, id)
	cancel()
	if err != nil {
		return fmt.Errorf("opening the session: %w", err)
	}
	m.log.Info("adopted a session no node held", zap.String("session", sid), zap.String("agent", id.AgentID), zap.Duration("grace", m.opts.Grace))
	s.post(func(s *Session) {
		if !s.ended && s.conn == nil && s.grace == nil {
			s.startGrace()
		}
	})
	return nil
}

// claimOrphan takes the lease of the orphaned session sid for this node.
// False: nothing to adopt: the session ended or was replaced, its node died
// before storing it (nobody was told of it), or another node or its agent
// took it first.
func (m *Manager) claimOrphan(ctx context.Context, sid string) (Identity, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, m.opts.StoreTimeout)
	defer cancel()
	rec, found, err := m.store.Load(ctx, sid)
	if err != nil || !found || len(rec.Snapshot) == 0 {
		return Identity{}, false, err
	}
	id, err := identityOf(rec)
	if err != nil {
		return Identity{}, false, err
	}
	if cur, err := m.store.SessionOf(ctx, rec.AgentID); err != nil || cur != sid {
		return Identity{}, false, err
	}
	owner, err := m.store.Acquire(ctx, sid, rec.AgentID, m.opts.Node, m.opts.LeaseTTL)
	return id, err == nil && owner == m.opts.Node, err
}

// identityOf is who a stored session belongs to.
func identityOf(rec store.Record) (Identity, error) {
	var snap snapshot
	if err := json.Unmarshal(rec.Snapshot, &snap); err != nil {
		return Identity{}, fmt.Errorf("stored session %s does not decode: %w", rec.SessionID, err)
	}
	id := Identity{AgentID: snap.AgentID, Role: cmp.Or(snap.Role, RoleAgent), Teams: snap.Teams, AllTeams: snap.AllTeams}
	if id.key() != rec.AgentID {
		return Identity{}, fmt.Errorf("stored session %s belongs to %q, its record to %q", rec.SessionID, id.key(), rec.AgentID)
	}
	return id, nil
}

// renewLeases renews the lease of every live session in one store call and
// hands over the sessions another node took meanwhile.
func (m *Manager) renewLeases() {
	m.leaseMu.Lock()
	defer m.leaseMu.Unlock()
	m.mu.Lock()
	leases := m.leases[:0]
	for _, s := range m.byID {
		if !s.leaseGone {
			leases = append(leases, store.Lease{SessionID: s.id, AgentID: s.key})
		}
	}
	m.mu.Unlock()
	defer func() { clear(leases); m.leases = leases[:0] }()
	if len(leases) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.opts.StoreTimeout)
	lost, err := m.store.Renew(ctx, m.opts.Node, m.opts.LeaseTTL, leases)
	cancel()
	if err != nil {
		m.log.Warn("could not renew the session leases", zap.Int("sessions", len(leases)), zap.Error(err))
	}
	for _, sid := range lost {
		if s := m.byIDLocal(sid); s != nil {
			s.post(func(s *Session) { s.handOver("lease lost to another node") })
		}
	}
}

// heartbeat renews this node's liveness. It runs on Run's loop: a node
// whose loop is stuck stops looking alive, which is right.
func (m *Manager) heartbeat(ctx context.Context) {
	hctx, cancel := context.WithTimeout(ctx, min(m.opts.StoreTimeout, m.opts.NodeTTL))
	defer cancel()
	if err := m.store.Heartbeat(hctx, m.opts.Node, m.opts.NodeTTL); err != nil {
		m.log.Debug("heartbeat failed", zap.Error(err))
	}
}

func (m *Manager) checkHealth(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, m.opts.StoreTimeout)
	err := m.store.Ping(pctx)
	cancel()
	was := m.healthy.Swap(err == nil)
	switch {
	case err != nil && was:
		m.log.Error("session store unreachable: commands fail with UNAVAILABLE until it is back", zap.Error(err))
	case err == nil && !was:
		m.log.Info("session store reachable again; resyncing sessions")
		for _, s := range m.sessions() {
			s.post(func(s *Session) { s.retrySync() })
		}
	}
}

func (m *Manager) byIDLocal(sid string) *Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.byID[sid]
}

func (m *Manager) dispatch(ev adapters.Event) {
	switch ev.Kind {
	case adapters.EndpointTaken:
		m.dir.claim(ev.Endpoint, "switch:"+ev.Holder, true)
	case adapters.EndpointFreed:
		m.dir.release(ev.Endpoint, "switch:"+ev.Holder)
	case adapters.QueuesChanged:
		m.queues.adapterChanged()
	case adapters.LinkChanged:
		m.queues.adapterChanged()
		fallthrough
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

// byAgentID returns this node's session of an agent key (an agent's id; a
// supervisor's is Identity.key's), nil when it holds none.
func (m *Manager) byAgentID(agent string) *Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.byAgent[agent]
}

// ConnectWait reports how long id must wait before connecting to this node
// again under Options.ConnectRate, or 0 when it may connect now (the
// connection is then counted). Only a session this node holds keeps count:
// an agent's first connection, and a dead node's agents resuming here, never
// wait.
func (m *Manager) ConnectWait(id Identity, now time.Time) time.Duration {
	s := m.byAgentID(id.key())
	if s == nil || s.connects == nil {
		return 0
	}
	r := s.connects.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
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
		return s.ident.AgentID
	}
	return ""
}

// Attach connects conn to the agent's session, creating it when none is
// alive, and sends the initial events. since, when set, asks for a replay of
// the events after that seq.
func (m *Manager) Attach(ctx context.Context, id Identity, conn Conn, since *uint64) (*Session, error) {
	select {
	case m.attaching <- struct{}{}:
		defer func() { <-m.attaching }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// A session found in the registry may end before it sees the attach (it
	// expired, logged out): wait until it has left the registry (done is
	// closed last) and open a fresh one.
	for range 3 {
		s, created, err := m.sessionFor(ctx, id)
		if err != nil {
			return nil, err
		}
		res := make(chan error, 1)
		if s.post(func(s *Session) { res <- s.attach(conn, id, since, created) }) {
			select {
			case err := <-res:
				if errors.Is(err, errRoleChanged) {
					s.post(func(s *Session) { s.finish(protocol.CloseTakenOver, "session ended: the role changed") })
					break // wait for it to end, then open a new one
				}
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
		// The session ended before it took the attach. One that could not
		// start is reported as when it ends while the attach waits: a fresh
		// one would hide the failure, and on a one-off switch fault it
		// would attach the connection after all, depending on timing.
		select {
		case <-s.done:
			if s.err != nil {
				return nil, s.err
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return nil, ErrSessionEnded
}

// sessionFor returns the agent's local session, opening it (from the store,
// or new) when there is none. Opening one agent's session is single-flight.
func (m *Manager) sessionFor(ctx context.Context, id Identity) (*Session, bool, error) {
	for {
		m.mu.Lock()
		select {
		case <-m.stop:
			m.mu.Unlock()
			return nil, false, ErrShuttingDown
		default:
		}
		if s := m.byAgent[id.key()]; s != nil {
			m.mu.Unlock()
			return s, false, nil
		}
		if wait, busy := m.opening[id.key()]; busy {
			m.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
		}
		done := make(chan struct{})
		m.opening[id.key()] = done
		m.mu.Unlock()

		s, created, err := m.open(ctx, id)

		m.mu.Lock()
		delete(m.opening, id.key())
		close(done)
		if err == nil {
			m.byAgent[id.key()] = s
			m.byID[s.id] = s
			m.wg.Add(1)
			s.post((*Session).start)
			select {
			case <-m.stop: // Shutdown's round of stops may have missed it
				s.post((*Session).stop)
			default:
			}
		}
		m.mu.Unlock()
		return s, created, err
	}
}

// open finds the agent's live session in the store (or registers a new one)
// and takes its lease, asking the current owner to hand it over.
func (m *Manager) open(ctx context.Context, id Identity) (*Session, bool, error) {
	if !m.Healthy() {
		return nil, false, ErrStoreUnavailable
	}
	sctx, cancel := context.WithTimeout(ctx, m.opts.StoreTimeout)
	sid, err := m.store.SessionOf(sctx, id.key())
	if err == nil && sid == "" {
		sid, err = m.store.Claim(sctx, id.key(), newID())
	}
	cancel()
	if err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrStoreUnavailable, err)
	}
	if err := m.acquire(ctx, sid, id.key()); err != nil {
		return nil, false, err
	}
	sctx, cancel = context.WithTimeout(ctx, m.opts.StoreTimeout)
	rec, found, err := m.store.Load(sctx, sid)
	cancel()
	if err != nil {
		m.release(sid)
		return nil, false, fmt.Errorf("%w: %v", ErrStoreUnavailable, err)
	}
	s := newSession(m, sid, id)
	if found && len(rec.Snapshot) > 0 {
		s.record = &rec
		return s, false, nil
	}
	s.journal.version = rec.Version
	return s, true, nil
}

// acquire takes the session's lease. When another node holds it, that node is
// asked to hand the session over; if it is dead, its lease expires.
func (m *Manager) acquire(ctx context.Context, sid, agent string) error {
	deadline := time.Now().Add(m.opts.LeaseTTL + m.opts.StoreTimeout)
	asked := ""
	// Under share, an owner whose agent has connections keeps the session.
	kept := make(chan *MovedError, 1)
	m.pendingTakeovers.Store(sid, kept)
	defer m.pendingTakeovers.CompareAndDelete(sid, kept)
	poll := time.Duration(protocol.AcquirePollMs) * time.Millisecond
	for {
		sctx, cancel := context.WithTimeout(ctx, m.opts.StoreTimeout)
		owner, err := m.store.Acquire(sctx, sid, agent, m.opts.Node, m.opts.LeaseTTL)
		cancel()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrStoreUnavailable, err)
		}
		if owner == m.opts.Node {
			return nil
		}
		if owner != asked {
			m.log.Info("session owned by another node; asking it to hand over", zap.String("session", sid), zap.String("owner", owner))
			req, _ := json.Marshal(action{Kind: "takeover", ID: sid, From: m.opts.Node})
			_ = m.bus.Publish(ctx, nodeTopic(owner), req)
			asked = owner
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("session %s is still owned by node %s", sid, owner)
		}
		// Full jitter over the current step spreads a storm's retries.
		wait := poll/2 + mrand.N(poll/2+1)
		poll = min(2*poll, protocol.AcquirePollMaxMs*time.Millisecond)
		select {
		case <-time.After(wait):
		case moved := <-kept:
			return moved
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (m *Manager) release(sid string) {
	ctx, cancel := context.WithTimeout(context.Background(), m.opts.StoreTimeout)
	defer cancel()
	_ = m.store.Release(ctx, sid, m.opts.Node)
}

func (m *Manager) remove(s *Session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.byAgent[s.key] == s {
		delete(m.byAgent, s.key)
	}
	delete(m.byID, s.id)
}

// Shutdown stops every session goroutine without touching the switch: agents
// stay logged in and a restarted node (or another node) picks them up.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.stopOnce.Do(func() {
		close(m.stop)
		m.mu.Lock()
		for _, s := range m.byID {
			s.post((*Session).stop)
		}
		m.mu.Unlock()
	})
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
