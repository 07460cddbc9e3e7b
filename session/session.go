package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/time/rate"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/channel"
	"github.com/ctibroker/ctibroker/history"
	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/store"
)

// Frame is one client message as read off its connection. The session
// decodes it: the connection's reader stays shallow (see the broker's
// runConn), and decoding is work like the rest of the command.
type Frame struct {
	Data     []byte
	Binary   bool // not a text frame: refused, the protocol is JSON text
	Received time.Time
	// Done is called once the command has been answered: its reply written
	// or dropped. The connection reads its next frame then.
	Done func()
}

func (f *Frame) answered() {
	if f.Done != nil {
		f.Done()
	}
}

func (f *Frame) decode() protocol.Inbound {
	if f.Binary {
		return protocol.RejectFrame(f.Data, "binary frames are not accepted: send JSON text frames")
	}
	return protocol.DecodeRequest(f.Data)
}

type command struct {
	conn  Conn
	frame Frame
}

// op is one unit of work for the session: a client command, or a note (a
// function run on the session).
type op struct {
	note func(*Session)
	cmd  command
}

// Session is one agent's session. See the package doc for ownership.
type Session struct {
	m     *Manager
	id    string
	key   string // registry and store key (see Identity.key)
	ident Identity
	teams []string

	// The mailbox, guarded by mu. A goroutine runs only while ops are
	// queued (running); an idle session has none.
	mu      sync.Mutex
	queue   []op
	done    chan struct{}
	err     error // why the session could not start; set before done closes
	running bool
	closed  bool

	// leaseGone: the session stopped renewing its lease (Manager.leaseMu).
	leaseGone bool
	abDirty   atomic.Bool

	// Owned by the goroutine running the session's ops.
	conn     Conn
	channels []*channel.Channel
	groups   []string
	created  int64 // Unix ms, as the snapshot and the timeline keep it
	// seq is the last seq handed out; committed the last one stored. Events
	// in outbox (seq committed+1..seq) are delivered only once committed.
	seq       uint64
	committed uint64
	version   uint64
	outbox    []store.Event
	outboxBuf *[]store.Event // outbox's buffer, lent by outboxes while busy
	// wire collects the messages of the current op for the connection, sent
	// as one batch at the end of the op; replyDone is the command's Done.
	wire      [][]byte
	replyDone func()
	timeline  [][]byte // timeline entries not yet committed
	record    *store.Record
	restored  time.Time
	// status and statusSince: the aggregate status and when it started.
	status      string
	statusSince time.Time
	subs        map[string]*subscription // supervisor subscriptions by id
	topics      []string
	envPrefix   []byte
	replies     replies
	// limiter bounds the session's commands per second, whatever the
	// connection: reconnecting does not refill it. Nil: no limit.
	limiter *rate.Limiter
	catalog *channel.Catalog
	ab      *addressBookState // made by the first address book request
	// grace runs while no connection is attached; graceGen tells a stale
	// expiry (the timer fired as a connection attached) from the current one.
	grace     *time.Timer
	graceGen  uint64
	acwGen    map[string]uint64
	acwTimers map[string]*time.Timer
	started   map[string]time.Time // interaction id -> start, for handle times
	endWith   *protocol.CloseCode  // end the session after this op's messages

	// inDoubt: commits that failed without an answer and may still land
	// (see resolveInDoubt).
	inDoubt []inDoubtCommit

	// Flags, together to save the padding each would cost.
	unsynced bool // a commit failed; retrySync is scheduled
	// forcePersist commits the snapshot even without events (supervisor
	// subscriptions changed).
	forcePersist bool
	stateDirty   bool
	presenceSent bool
	ended        bool
	// handedOver: another node owns the session now (or this node is
	// shutting down): keep it in the store.
	handedOver bool
}

// addressBookState is what a session keeps of the address book it sent;
// most agents never ask for one.
type addressBookState struct {
	book     *protocol.AddressBooks
	realtime bool // refreshed when presence changes
	last     []byte
	lastAt   time.Time
}

func newSession(m *Manager, id string, ident Identity) *Session {
	s := &Session{
		m: m, id: id, key: ident.key(), ident: ident, teams: ident.Teams, created: time.Now().UnixMilli(),
		done:    make(chan struct{}),
		replies: newReplies(m.opts.RequestIDTTL, m.opts.RequestIDLimit),
	}
	if m.opts.CommandRate > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(m.opts.CommandRate), max(m.opts.CommandBurst, 1))
	}
	s.setTopics()
	return s
}

// setTopics computes the bus topics of the session's events and the prefix
// of their envelope, once per team change.
func (s *Session) setTopics() {
	s.topics = nil // a supervisor's events are its own: not published
	if !s.ident.Supervisor() {
		s.topics = append([]string{AgentTopic(s.ident.AgentID), AllTopic}, s.teamTopics()...)
	}
	agent, _ := json.Marshal(s.ident.AgentID)
	s.envPrefix = []byte(`{"agent":` + string(agent) + `,"session":"` + s.id + `","seq":`)
}

func (s *Session) teamTopics() []string {
	out := make([]string, len(s.teams))
	for i, t := range s.teams {
		out[i] = TeamTopic(t)
	}
	return out
}

// logf writes a log line with the session's fields. It costs nothing when
// the level is off (zap's Check): a logger kept per session would cost
// every idle session its fields' buffer.
func (s *Session) logf(level zapcore.Level, msg string, fields ...zap.Field) {
	if ce := s.m.log.Check(level, msg); ce != nil {
		ce.Write(append(fields, zap.String("agent", s.ident.AgentID), zap.String("session", s.id))...)
	}
}

// ID returns the session id.
func (s *Session) ID() string { return s.id }

// AgentID returns the agent owning the session.
func (s *Session) AgentID() string { return s.ident.AgentID }

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Submit queues a client command. A connection has one command in flight
// (it waits for f.Done before it reads the next), so the queue holds at
// most one command per connection.
func (s *Session) Submit(conn Conn, f Frame) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrSessionEnded
	}
	s.queue = append(s.queue, op{cmd: command{conn, f}})
	s.startLocked()
	return nil
}

// Detach tells the session that conn is gone.
func (s *Session) Detach(conn Conn) {
	s.post(func(s *Session) { s.detach(conn) })
}

// post queues a note for the session. It never blocks and returns false
// when the session has ended.
func (s *Session) post(f func(*Session)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.queue = append(s.queue, op{note: f})
	s.startLocked()
	return true
}

// startLocked has the session's ops run unless they are running. s.mu is
// held.
func (s *Session) startLocked() {
	if !s.running {
		s.running = true
		go s.run()
	}
}

// run handles the queued ops, in order, until the queue is empty or the
// session ends.
func (s *Session) run() {
	for {
		s.mu.Lock()
		ops := s.queue
		s.queue = nil
		if len(ops) == 0 {
			// Going idle: an idle session keeps no batch buffer (the
			// outbox holds events only while a commit failed).
			if len(s.outbox) == 0 && s.outboxBuf != nil {
				if cap(s.outbox) <= 64 { // a burst's buffer is left to the collector
					*s.outboxBuf = s.outbox[:0]
					outboxes.Put(s.outboxBuf)
				}
				s.outbox, s.outboxBuf = nil, nil
			}
			s.running = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		s.handle(ops)
		if s.ended {
			s.cleanup()
			return
		}
	}
}

// handle runs ops. What each command changes is committed and sent before
// the next one runs; the notes in between are committed together.
func (s *Session) handle(ops []op) {
	for i := range ops {
		if s.ended {
			dropOps(ops[i:]) // their connections are closing
			break
		}
		if ops[i].note != nil {
			s.safely("note", func() { ops[i].note(s) })
			continue
		}
		if s.settle(); s.ended {
			dropOps(ops[i:])
			break
		}
		s.handleCommand(ops[i].cmd)
		s.settle()
	}
	s.settle()
}

// dropOps answers the commands among ops that will not run.
func dropOps(ops []op) {
	for _, o := range ops {
		o.cmd.frame.answered()
	}
}

// settle commits what the ops so far changed, delivers it, and ends the
// session when one of them asked for it.
func (s *Session) settle() {
	s.flush()
	s.sendWire()
	if s.endWith != nil && !s.unsynced && !s.ended {
		s.finish(*s.endWith, "session ended")
	}
}

// start is a new session's first op: it restores or creates the session.
func (s *Session) start() {
	err := errors.New("panic while starting the session")
	s.safely("init", func() { err = s.init() })
	if err != nil {
		s.err = err
		s.logf(zap.WarnLevel, "session could not start", zap.Error(err))
		s.ended = true
		return
	}
	s.logf(zap.InfoLevel, "session started", zap.Bool("restored", s.record != nil))
}

// stop ends the session without touching the switch or the store's record:
// this node is shutting down and another one may take the session over.
func (s *Session) stop() {
	s.handedOver, s.ended = true, true
}

// handOver gives the session up because another node owns it now. Its
// connection is closed with 4001 and nothing is changed in the store.
func (s *Session) handOver(reason string) {
	if s.ended {
		return
	}
	s.logf(zap.InfoLevel, "session handed over", zap.String("reason", reason))
	s.wire = nil
	if s.conn != nil {
		s.conn.Close(protocol.CloseTakenOver, reason)
		s.conn = nil
	}
	s.outbox, s.outboxBuf = nil, nil
	s.handedOver, s.ended = true, true
}

// safely runs f and turns a panic (an adapter bug, say) into a log line.
func (s *Session) safely(what string, f func()) {
	defer func() {
		if r := recover(); r != nil {
			s.logf(zap.ErrorLevel, "panic recovered", zap.String("in", what), zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	f()
}

// cleanup runs once, on the session's goroutine, when it has ended.
func (s *Session) cleanup() {
	defer s.m.wg.Done()
	s.mu.Lock()
	s.closed = true
	dropOps(s.queue)
	s.queue = nil
	s.mu.Unlock()
	s.m.leaseMu.Lock()
	s.leaseGone = true // before Release: the renewer must not re-take it
	s.m.leaseMu.Unlock()
	// The store first: once the session leaves the registry, a new attach
	// may open it from the store.
	ctx, cancel := context.WithTimeout(context.Background(), s.m.opts.StoreTimeout)
	for _, sub := range s.subs {
		sub.cancel()
	}
	if s.handedOver || s.err != nil {
		_ = s.m.store.Release(ctx, s.id, s.m.opts.Node)
	} else if err := s.m.store.End(ctx, s.key, s.id); err != nil {
		s.logf(zap.WarnLevel, "could not delete the ended session from the store; it expires by itself", zap.Error(err))
	}
	cancel()
	s.m.remove(s)
	for _, c := range s.channels {
		s.m.dir.unwatch(endpointOf(c.Spec()), s)
	}
	s.m.dir.setRealtime(s, false)
	if s.presenceSent {
		s.m.dir.publish(Presence{AgentID: s.ident.AgentID})
	}
	for _, t := range s.acwTimers {
		t.Stop()
	}
	if s.grace != nil {
		s.grace.Stop()
	}
	close(s.done)
}

// init restores the session from its stored record, or, for a new session,
// recreates the channels the agent is already logged into on the switch and
// stores the session.
func (s *Session) init() error {
	if s.record != nil {
		return s.restore(*s.record)
	}
	if !s.ident.Supervisor() {
		if err := s.initFromSwitch(); err != nil {
			return err
		}
		s.timeline = append([][]byte{s.entry(history.Entry{Kind: history.KindStart, Teams: s.teams, At: s.created})}, s.timeline...)
	}
	if err := s.persist(nil, true); err != nil {
		return fmt.Errorf("storing the new session: %w", err)
	}
	return nil
}

// snapshot is a session's persistent state (the store's record).
type snapshot struct {
	SessionID string          `json:"sessionId"`
	AgentID   string          `json:"agentId"`
	Teams     []string        `json:"teams,omitempty"`
	Created   int64           `json:"created"`
	Seq       uint64          `json:"seq"`
	Groups    []string        `json:"groups,omitempty"`
	Channels  []channel.Saved `json:"channels"`
	// StatusSince is when the aggregate status started, Unix ms.
	StatusSince int64 `json:"statusSince"`
	// Supervisor sessions: role and subscriptions.
	Role          string              `json:"role,omitempty"`
	AllTeams      bool                `json:"allTeams,omitempty"`
	Subscriptions []savedSubscription `json:"subscriptions,omitempty"`
}

func (s *Session) snapshot() []byte {
	snap := snapshot{SessionID: s.id, AgentID: s.ident.AgentID, Teams: s.teams, Created: s.created,
		Seq: s.seq, Groups: s.groups, Channels: make([]channel.Saved, len(s.channels)),
		StatusSince: s.statusSince.UnixMilli(), Role: s.ident.Role, AllTeams: s.ident.AllTeams}
	for id, sub := range s.subs {
		snap.Subscriptions = append(snap.Subscriptions, savedSubscription{ID: id, Filter: sub.filter})
	}
	for i, c := range s.channels {
		snap.Channels[i] = c.Save()
	}
	b, err := json.Marshal(snap)
	if err != nil {
		panic(fmt.Sprintf("session snapshot does not encode: %v", err)) // only plain data: a bug
	}
	return b
}

func (s *Session) restore(rec store.Record) error {
	var snap snapshot
	if err := json.Unmarshal(rec.Snapshot, &snap); err != nil {
		return fmt.Errorf("stored session %s does not decode: %w", s.id, err)
	}
	for _, saved := range snap.Channels {
		c, err := channel.Restore(saved, s.m.opts.TimelineSize)
		if err != nil {
			return fmt.Errorf("stored session %s: %w", s.id, err)
		}
		s.channels = append(s.channels, c)
		s.m.dir.watch(endpointOf(c.Spec()), s)
		if c.Active() {
			s.m.dir.claim(endpointOf(c.Spec()), s.ident.AgentID, true)
		}
		s.syncACWTimer(c)
	}
	s.groups, s.seq, s.committed, s.version = snap.Groups, snap.Seq, snap.Seq, rec.Version
	s.created, s.restored = snap.Created, time.Now()
	s.statusSince = time.UnixMilli(snap.StatusSince)
	if len(s.teams) == 0 && len(snap.Teams) > 0 {
		s.teams = snap.Teams
		s.setTopics()
	}
	st := s.state()
	s.status = st.Status
	if !s.ident.Supervisor() {
		s.publishPresence(st)
	}
	// Changes may have happened while the session moved: every
	// subscription starts again from a snapshot that says so.
	for _, saved := range snap.Subscriptions {
		if f := s.startSubscription(saved.ID, saved.Filter, protocol.SnapshotResync); f != nil {
			s.logf(zap.WarnLevel, "could not restore a supervisor subscription", zap.String("subscription", saved.ID), zap.String("failure", f.Error()))
		}
	}
	return nil
}

func (s *Session) initFromSwitch() error {
	if len(s.teams) == 0 {
		if f := s.call(func(ctx context.Context) (err error) {
			s.teams, err = s.m.adapter.Teams(ctx, s.ident.AgentID)
			return err
		}); f != nil {
			return fmt.Errorf("reading the agent's teams from the switch: %s", f.Message)
		}
		s.setTopics()
	}
	var logins []adapters.Login
	if f := s.call(func(ctx context.Context) (err error) {
		logins, err = s.m.adapter.Logins(ctx, s.ident.AgentID)
		return err
	}); f != nil {
		return fmt.Errorf("reading the agent's logins from the switch: %s", f.Message)
	}
	now := time.Now()
	for _, l := range logins {
		if protocol.ValidateID(l.Channel.ID) != nil || s.channel(l.Channel.ID) != nil ||
			(l.GroupID != "" && protocol.ValidateID(l.GroupID) != nil) {
			s.logf(zap.WarnLevel, "ignoring an invalid or duplicate login reported by the switch", zap.String("channel", l.Channel.ID), zap.String("group", l.GroupID))
			continue
		}
		if len(s.channels) >= s.m.opts.MaxChannels || (l.GroupID != "" && !s.hasGroup(l.GroupID) && len(s.groups) >= s.m.opts.MaxGroups) {
			s.logf(zap.WarnLevel, "ignoring a login reported by the switch beyond limits.channels or limits.groups", zap.String("channel", l.Channel.ID))
			continue
		}
		if l.GroupID != "" && !s.hasGroup(l.GroupID) {
			s.groups = append(s.groups, l.GroupID)
		}
		c := s.newChannel(l.Channel, l.GroupID, now)
		if l.State == protocol.StateActive {
			state, err := channel.MachineState(l.State, l.Status)
			if err != nil {
				s.logf(zap.WarnLevel, "switch reported an unknown status", zap.String("channel", l.Channel.ID), zap.Error(err))
				state, _ = channel.MachineState(protocol.StateActive, protocol.StatusNotReady)
			}
			s.m.dir.claim(endpointOf(l.Channel), s.ident.AgentID, true)
			c.Force(state, s.reasonFor(l.ReasonCode), now)
			s.syncACWTimer(c)
		}
	}
	s.publishPresence(s.state())
	return nil
}

func (s *Session) hasGroup(id string) bool {
	for _, g := range s.groups {
		if g == id {
			return true
		}
	}
	return false
}

// attach makes conn the session's connection and sends it the initial
// events. The connection's identity applies from now on: a session never
// keeps rights the connecting token no longer grants.
func (s *Session) attach(conn Conn, id Identity, since *uint64, created bool) error {
	if id.Role != s.ident.Role {
		return errRoleChanged
	}
	if s.conn != nil && s.conn != conn {
		if s.m.opts.MultiConnect == MultiConnectReject {
			return ErrAlreadyConnected
		}
		s.logf(zap.InfoLevel, "connection taken over", zap.String("old_remote", s.conn.RemoteAddr()), zap.String("remote", conn.RemoteAddr()))
		s.sendWire()
		s.conn.Close(protocol.CloseTakenOver, "session taken over by another connection")
	}
	s.conn = conn
	s.stopGrace()
	s.logf(zap.InfoLevel, "connection attached", zap.String("remote", conn.RemoteAddr()), zap.Bool("created", created))
	s.applyTeams(id)
	if since != nil && !created && !s.unsynced {
		ctx, cancel := context.WithTimeout(context.Background(), s.m.opts.StoreTimeout)
		missed, ok, err := s.m.store.EventsSince(ctx, s.id, *since, s.committed)
		cancel()
		if err != nil {
			s.logf(zap.WarnLevel, "could not read the event stream; sending full state", zap.Error(err))
		}
		if ok && err == nil {
			for _, msg := range missed {
				s.deliver(msg)
			}
			s.emitInitialized(true)
			return nil
		}
	}
	for _, c := range s.channels {
		s.emitCreated(c)
	}
	s.emitInitialized(!created)
	return nil
}

// applyTeams makes the connecting identity's teams the session's. An
// agent's token without teams keeps the teams the session has (from the
// switch). A supervisor's subscriptions are scoped again, each with a resync
// snapshot.
func (s *Session) applyTeams(id Identity) {
	if s.ident.Supervisor() {
		if sameSet(id.Teams, s.ident.Teams) {
			return
		}
		s.ident.Teams, s.teams = id.Teams, id.Teams
		s.rescopeSubscriptions()
		return
	}
	if len(id.Teams) == 0 || sameSet(id.Teams, s.teams) {
		return
	}
	s.logf(zap.InfoLevel, "the agent's teams changed", zap.Strings("from", s.teams), zap.Strings("to", id.Teams))
	s.ident.Teams, s.teams = id.Teams, id.Teams
	s.setTopics()
	s.timeline = append(s.timeline, s.entry(history.Entry{Kind: history.KindTeams, Teams: s.teams, At: time.Now().UnixMilli()}))
	s.publishPresence(s.state())
	s.forcePersist = true
}

// sameSet reports whether a and b hold the same strings.
func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

func (s *Session) emitInitialized(resumed bool) {
	s.emit(s.id, protocol.EvSessionInitialized, protocol.SessionInitialized{
		SessionID: s.id, AgentID: s.ident.AgentID, Resumed: resumed, Teams: s.teams, Seq: s.seq + 1})
}

func (s *Session) detach(conn Conn) {
	if s.conn != conn {
		return
	}
	s.wire = nil
	s.conn = nil
	s.logf(zap.InfoLevel, "connection detached", zap.String("remote", conn.RemoteAddr()), zap.Duration("grace", s.m.opts.Grace))
	s.startGrace()
}

// startGrace (re)starts the grace period; it ends the session unless a
// connection attaches first.
func (s *Session) startGrace() {
	s.stopGrace()
	gen := s.graceGen
	s.grace = time.AfterFunc(s.m.opts.Grace, func() {
		s.post(func(s *Session) {
			if s.graceGen == gen && s.conn == nil {
				s.safely("expire", s.expire) // ends the session even if it panics
				s.ended = true
			}
		})
	})
}

func (s *Session) stopGrace() {
	s.graceGen++ // an expiry already queued is stale now
	if s.grace != nil {
		s.grace.Stop()
		s.grace = nil
	}
}

// expire ends a session whose grace period passed without a connection.
func (s *Session) expire() {
	if s.m.opts.OnExpire == OnExpireDeactivate {
		for _, c := range s.channels {
			if !c.Active() {
				continue
			}
			if f := s.apply(c, channel.Intent{Command: "session.expire", Event: channel.EvDeactivate}, "session.expired", true); f != nil {
				s.logf(zap.WarnLevel, "could not deactivate channel of expired session", zap.String("channel", c.ID()), zap.String("failure", f.Error()))
			}
		}
	}
	s.recordEnd(time.Now())
	s.m.audit.Info("session expired", zap.String("agent", s.ident.AgentID), zap.String("session", s.id), zap.String("onexpire", s.m.opts.OnExpire))
}

// finish ends the session after its last messages were queued.
func (s *Session) finish(code protocol.CloseCode, reason string) {
	if s.conn != nil {
		s.conn.Close(code, reason)
		s.conn = nil
	}
	s.ended = true
}

// deliver queues an encoded message for the connection, if any; the op's
// messages leave together in sendWire.
func (s *Session) deliver(msg []byte) {
	if s.conn != nil {
		s.wire = append(s.wire, msg)
	}
}

// sendWire hands the op's messages to the connection as one batch; the
// command's Done follows them.
func (s *Session) sendWire() {
	msgs, done := s.wire, s.replyDone
	s.wire, s.replyDone = nil, nil
	if len(msgs) == 0 || s.conn == nil {
		if done != nil {
			done()
		}
		return
	}
	if !s.conn.Send(msgs, done) {
		s.logf(zap.WarnLevel, "slow consumer: connection closed, session kept", zap.String("remote", s.conn.RemoteAddr()))
		s.conn = nil
		s.startGrace()
	}
}

// emit queues an event behind the current op's reply; it is delivered once
// committed. The event is encoded once, by appending (its data is encoded
// by encoding/json, the envelope around it by hand), and the bus envelope
// shares its bytes.
func (s *Session) emit(target, name string, data any) {
	raw, err := protocol.Marshal(data)
	if err != nil {
		s.logf(zap.ErrorLevel, "cannot encode event data", zap.String("event", name), zap.Error(err))
		return
	}
	s.emitRaw(target, name, raw)
}

// emitRaw is emit with the data already encoded (valid JSON).
func (s *Session) emitRaw(target, name string, raw []byte) {
	s.seq++
	// A published event is written once, inside its envelope, and the event
	// itself is a slice of it: one allocation instead of two, and the replay
	// history keeps a single buffer per event.
	size := len(raw) + len(target) + len(name) + 112 // the event's other fields at their widest
	publish := len(s.topics) > 0                     // unpublished events (supervisors') need no envelope
	if publish {
		size += len(s.envPrefix) + 32
	}
	buf := make([]byte, 0, size)
	if publish {
		buf = append(buf, s.envPrefix...)
		buf = strconv.AppendUint(buf, s.seq, 10)
		buf = append(buf, `,"event":`...)
	}
	start := len(buf)
	buf = append(buf, `{"messageType":"objectEvent","target":`...)
	buf = protocol.AppendString(buf, target)
	buf = append(buf, `,"name":`...)
	buf = protocol.AppendString(buf, name)
	buf = append(buf, `,"data":`...)
	buf = append(buf, raw...)
	buf = append(buf, `,"seq":`...)
	buf = strconv.AppendUint(buf, s.seq, 10)
	buf = append(buf, `,"timestamp":`...)
	buf = strconv.AppendInt(buf, time.Now().UnixMilli(), 10)
	buf = append(buf, '}')
	msg := buf[start:len(buf):len(buf)] // capped: an append must not write into the envelope
	var env []byte
	if publish {
		env = append(buf, '}')
	}
	if s.outboxBuf == nil {
		s.outboxBuf = outboxes.Get().(*[]store.Event)
		s.outbox = (*s.outboxBuf)[:0]
	}
	s.outbox = append(s.outbox, store.Event{Seq: s.seq, Payload: msg, Envelope: env})
}

// outboxes lends event batches to busy sessions; run returns them when a
// session goes idle, so thousands of idle sessions hold none, and a busy
// one does not grow a fresh slice for every command.
var outboxes = sync.Pool{New: func() any { b := make([]store.Event, 0, 8); return &b }}

// stateUpdated emits state.updated once after a batch of channel changes.
func (s *Session) stateUpdated() {
	if !s.stateDirty {
		return
	}
	s.stateDirty = false
	st := s.state()
	if st.Status != s.status {
		s.status, s.statusSince = st.Status, time.Now()
	}
	s.emit(s.id, protocol.EvStateUpdated, st)
	s.publishPresence(st)
}

func (s *Session) publishPresence(st protocol.StateUpdated) {
	if s.statusSince.IsZero() {
		s.status, s.statusSince = st.Status, time.Now()
	}
	s.presenceSent = true
	s.m.dir.publish(Presence{AgentID: s.ident.AgentID, SessionID: s.id, Teams: s.teams, Status: st.Status,
		StatusSince: s.statusSince, Channels: st.Channels, Seq: s.seq})
}

func (s *Session) state() protocol.StateUpdated {
	chans := make([]protocol.ChannelState, len(s.channels))
	for i, c := range s.channels {
		chans[i] = c.Snapshot()
	}
	return protocol.StateUpdated{AgentID: s.ident.AgentID, Status: protocol.AggregateStatus(chans), Channels: chans}
}

// flush commits what the op changed and then delivers its events.
func (s *Session) flush() {
	if s.ended && s.handedOver {
		return
	}
	s.stateUpdated()
	if err := s.persist(nil, false); err != nil {
		return
	}
	s.deliverCommitted()
}

func (s *Session) deliverCommitted() {
	for _, e := range s.outbox {
		s.deliver(e.Payload)
	}
	clear(s.outbox)
	s.outbox = s.outbox[:0]
}

// persist commits the outbox, the new timeline intervals and the state
// snapshot (force: even without events). On a store error the events stay
// pending (undelivered) and a retry is scheduled; when another node owns the
// session now, it is handed over.
func (s *Session) persist(replies []store.Reply, force bool) error {
	for _, c := range s.channels {
		for _, iv := range c.TakeNew() {
			s.timeline = append(s.timeline, s.statusEntry(c, iv))
		}
	}
	force = force || s.forcePersist
	if len(s.outbox) == 0 && len(s.timeline) == 0 && !force {
		return nil
	}
	if s.unsynced && !force {
		return errUnsynced
	}
	c := store.Commit{ID: strconv.FormatUint(rand.Uint64(), 36), SessionID: s.id, AgentID: s.key, Node: s.m.opts.Node, Version: s.version,
		Events: s.outbox, Topics: s.topics, Timeline: s.timeline, Replies: replies, LeaseTTL: s.m.opts.LeaseTTL}
	if s.m.store.Durable() {
		c.Snapshot = s.snapshot()
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.m.opts.StoreTimeout)
	err := s.m.store.Commit(ctx, c)
	cancel()
	switch {
	case err == nil:
		s.m.opts.Metrics.EventsCommitted(len(s.outbox))
		s.version++
		s.forcePersist = false
		s.committed = s.seq
		s.timeline = s.timeline[:0]
		s.inDoubt = nil // none of them can land now: the version moved on
		if s.unsynced {
			s.unsynced = false
			s.logf(zap.InfoLevel, "session state stored again after a store outage")
		}
		return nil
	case errors.Is(err, store.ErrConflict) && len(s.inDoubt) > 0:
		// Maybe one of our own commits that timed out landed meanwhile.
		if landed, rerr := s.resolveInDoubt(); rerr == nil && landed {
			return s.persist(replies, force)
		} else if rerr != nil {
			return s.commitFailed(c, rerr)
		}
		s.handOver(err.Error())
		return err
	case errors.Is(err, store.ErrNotOwner), errors.Is(err, store.ErrConflict):
		s.handOver(err.Error())
		return err
	default:
		return s.commitFailed(c, err)
	}
}

// inDoubtCommit is a commit whose outcome is unknown (the store did not
// answer in time): it may still land, so it is remembered until a read-back
// or a later commit settles it.
type inDoubtCommit struct {
	id       string
	lastSeq  uint64 // the last event it carried
	timeline int    // how many timeline entries it carried
}

// commitFailed holds the commit's events until the store is back, and
// remembers it as in doubt.
func (s *Session) commitFailed(c store.Commit, err error) error {
	if !s.unsynced {
		s.logf(zap.ErrorLevel, "could not store the session state; events held until the store is back", zap.Error(err))
	}
	if len(s.inDoubt) < maxInDoubt {
		s.inDoubt = append(s.inDoubt, inDoubtCommit{id: c.ID, lastSeq: s.seq, timeline: len(c.Timeline)})
	}
	s.unsynced = true
	time.AfterFunc(s.m.opts.HealthInterval, func() { s.post(func(s *Session) { s.retrySync() }) })
	return err
}

// maxInDoubt bounds the in-doubt commits remembered; each retry of the same
// change is one, and the store is down meanwhile.
const maxInDoubt = 64

// resolveInDoubt reads the record back after a version conflict: when the
// commit that moved it is one of ours whose outcome was unknown, it landed.
// Its events are delivered (they are stored and were published) and dropped
// from what is pending; the rest is committed again by the caller. It
// reports whether one had landed.
func (s *Session) resolveInDoubt() (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.m.opts.StoreTimeout)
	rec, ok, err := s.m.store.Load(ctx, s.id)
	cancel()
	if err != nil || !ok {
		return false, err
	}
	i := slices.IndexFunc(s.inDoubt, func(d inDoubtCommit) bool { return d.id == rec.LastCommit })
	if i < 0 || rec.Version != s.version+1 {
		return false, nil
	}
	d := s.inDoubt[i]
	s.logf(zap.InfoLevel, "a commit that timed out had landed; its events are delivered", zap.Uint64("seq", d.lastSeq))
	s.version, s.committed, s.inDoubt = rec.Version, d.lastSeq, nil
	n := 0
	for _, e := range s.outbox {
		if e.Seq > d.lastSeq {
			break
		}
		s.deliver(e.Payload)
		n++
	}
	s.m.opts.Metrics.EventsCommitted(n)
	s.outbox = slices.Delete(s.outbox, 0, n)
	s.timeline = slices.Delete(s.timeline, 0, min(d.timeline, len(s.timeline)))
	return true, nil
}

var errUnsynced = errors.New("session state not stored yet")

// retrySync commits the events held during a store outage and delivers them.
func (s *Session) retrySync() {
	if !s.unsynced || s.ended {
		return
	}
	if err := s.persist(nil, true); err == nil {
		s.deliverCommitted()
	}
}

// entry encodes a timeline entry of this session.
func (s *Session) entry(e history.Entry) []byte {
	e.Agent, e.Session = s.ident.AgentID, s.id
	b, _ := json.Marshal(e)
	return b
}

func (s *Session) statusEntry(c *channel.Channel, iv channel.Interval) []byte {
	return s.entry(history.Entry{Channel: c.ID(), Group: c.Group(), Type: c.Spec().Type, State: iv.State,
		Status: iv.Status, ReasonCode: iv.ReasonCode, ReasonName: iv.ReasonName, At: iv.Start.UnixMilli()})
}

// recordInteraction appends an interaction event to the timeline.
func (s *Session) recordInteraction(c *channel.Channel, id, event string, at time.Time) {
	s.timeline = append(s.timeline, s.entry(history.Entry{Kind: history.KindInteraction, Channel: c.ID(),
		Group: c.Group(), Type: c.Spec().Type, Interaction: id, Event: event, At: at.UnixMilli()}))
}

// recordEnd closes the session's intervals in the timeline.
func (s *Session) recordEnd(at time.Time) {
	for _, c := range s.channels {
		for _, iv := range c.TakeNew() {
			s.timeline = append(s.timeline, s.statusEntry(c, iv))
		}
	}
	s.timeline = append(s.timeline, s.entry(history.Entry{Kind: history.KindEnd, At: at.UnixMilli()}))
}

func (s *Session) handleCommand(c command) {
	if c.conn != s.conn {
		c.frame.answered() // from a connection that was taken over or closed
		return
	}
	s.replyDone = c.frame.Done
	in := c.frame.decode()
	if in.Failure == nil && s.limiter != nil && !s.limiter.AllowN(c.frame.Received, 1) {
		in.Failure = protocol.Failf(protocol.CodeRateLimited, "more than the allowed commands per second; slow down")
	}
	now := time.Now()
	id := in.Request.RequestID
	if in.Failure == nil && id != "" {
		if msg, ok := s.rememberedReply(id, now); ok {
			s.deliver(msg)
			return
		}
	}
	reply := s.execute(in)
	msg, err := protocol.Marshal(reply)
	if err != nil {
		s.logf(zap.ErrorLevel, "cannot encode reply", zap.Error(err))
		msg, _ = protocol.Marshal(protocol.FailureReply(in, protocol.Failf(protocol.CodeInternal, "reply could not be encoded")))
	}
	remember := in.Failure == nil && id != "" && cacheable(reply)
	var reps []store.Reply
	if remember {
		reps = []store.Reply{{RequestID: id, Msg: msg}}
	}
	// Nothing is acknowledged that is not stored: commit, then reply.
	s.stateUpdated()
	result := protocol.ResultSuccess
	if reply.Failure != nil {
		result = string(reply.Failure.Code)
	}
	if err := s.persist(reps, false); err != nil {
		if s.handedOver {
			return
		}
		msg, _ = protocol.Marshal(protocol.FailureReply(in, protocol.Failf(protocol.CodeUnavailable,
			"the change could not be stored (%v); its events follow once the store is back", err)))
		s.deliver(msg)
		s.m.opts.Metrics.CommandDone(metricCommand(in), string(protocol.CodeUnavailable), time.Since(c.frame.Received).Seconds())
		return
	}
	if remember {
		s.replies.put(id, msg, now)
	}
	s.deliver(msg)
	s.m.opts.Metrics.CommandDone(metricCommand(in), result, time.Since(c.frame.Received).Seconds())
	s.deliverCommitted()
}

// metricCommand is the command label: known commands only, so that clients
// cannot grow the metric's cardinality.
func metricCommand(in protocol.Inbound) string {
	if _, ok := protocol.LookupCommand(in.Request.Command); ok {
		return in.Request.Command
	}
	return "unknown"
}

// rememberedReply finds the first reply to a requestId: in this node's
// cache, or, for a session this node took over recently, in the store.
func (s *Session) rememberedReply(id string, now time.Time) ([]byte, bool) {
	if msg, ok := s.replies.get(id, now); ok {
		return msg, true
	}
	if s.restored.IsZero() || now.Sub(s.restored) > s.m.opts.RequestIDTTL {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.m.opts.StoreTimeout)
	defer cancel()
	msg, ok, err := s.m.store.Reply(ctx, s.id, id)
	if err != nil || !ok {
		return nil, false
	}
	s.replies.put(id, msg, now)
	return msg, true
}

// cacheable: transient failures are not remembered, so that a retry with the
// same requestId is applied once the switch recovers.
func cacheable(r protocol.Reply) bool { return r.Failure == nil || !r.Failure.Code.Transient() }

func (s *Session) execute(in protocol.Inbound) (reply protocol.Reply) {
	defer func() {
		if r := recover(); r != nil {
			s.logf(zap.ErrorLevel, "panic while handling a command", zap.String("command", in.Request.Command), zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			reply = protocol.FailureReply(in, &protocol.Failure{Code: protocol.CodeInternal,
				Message: "internal error; the command was not applied", Context: fmt.Sprint(r)})
		}
	}()
	if in.Failure != nil {
		return protocol.FailureReply(in, in.Failure)
	}
	if s.unsynced || !s.m.Healthy() {
		// Fail before touching the switch: nothing could be acknowledged.
		return protocol.FailureReply(in, protocol.Failf(protocol.CodeUnavailable, "the session store is unreachable; retry later"))
	}
	req := in.Request
	doc, ok := protocol.LookupCommand(req.Command)
	if !ok {
		return protocol.FailureReply(in, protocol.Failf(protocol.CodeUnknownCommand, "unknown command %q", req.Command))
	}
	tgt, err := protocol.ParseTarget(req.Target)
	if err != nil {
		return protocol.FailureReply(in, protocol.Failf(protocol.CodeInvalidTarget, "%v", err))
	}
	if tgt.Session != s.id {
		if owner := s.m.owner(tgt.Session); owner != "" && owner != s.ident.AgentID {
			return protocol.FailureReply(in, protocol.Failf(protocol.CodeForbidden, "session %s belongs to another agent", tgt.Session))
		}
		return protocol.FailureReply(in, protocol.Failf(protocol.CodeNotFound, "no session %s", tgt.Session))
	}
	var data json.RawMessage
	var f *protocol.Failure
	if s.ident.Supervisor() && mutatesAgentState(req.Command) {
		return protocol.FailureReply(in, protocol.Failf(protocol.CodeForbidden, "supervisor sessions are read-only: %s is for agents", req.Command))
	}
	switch doc.Target {
	case protocol.TargetSession:
		if !tgt.IsSession() {
			return protocol.FailureReply(in, protocol.Failf(protocol.CodeInvalidTarget, "%s targets a session, not %q", req.Command, req.Target))
		}
		if req.Command == protocol.CmdSupervisorSubscribe || req.Command == protocol.CmdSupervisorUnsubscribe {
			data, f = s.supervisorCommand(req)
			break
		}
		data, f = s.sessionCommand(req)
	default:
		if tgt.IsSession() {
			return protocol.FailureReply(in, protocol.Failf(protocol.CodeInvalidTarget, "%s targets a channel: <session>.<channel> or <session>.<group>.<channel>", req.Command))
		}
		var c *channel.Channel
		if c, f = s.resolve(tgt); f == nil {
			f = s.channelCommand(c, req)
			data = req.Data
		}
	}
	if f != nil {
		return protocol.FailureReply(in, f)
	}
	return protocol.SuccessReply(req, data)
}

// mutatesAgentState reports whether a command changes channels; supervisor
// sessions have none and may not.
func mutatesAgentState(command string) bool {
	switch command {
	case protocol.CmdAddChannel, protocol.CmdAddChannelGroup, protocol.CmdRemoveChannel,
		protocol.CmdChannelActivate, protocol.CmdChannelDeactivate, protocol.CmdChannelReady, protocol.CmdChannelNotReady:
		return true
	}
	return false
}

func (s *Session) resolve(t protocol.Target) (*channel.Channel, *protocol.Failure) {
	c := s.channel(t.Channel)
	if c == nil || c.Group() != t.Group {
		if t.Group != "" && !s.hasGroup(t.Group) {
			return nil, protocol.Failf(protocol.CodeNotFound, "no channel group %s in session %s", t.Group, s.id)
		}
		return nil, protocol.Failf(protocol.CodeNotFound, "no channel %s", t.String())
	}
	return c, nil
}

func (s *Session) channel(id string) *channel.Channel {
	for _, c := range s.channels {
		if c.ID() == id {
			return c
		}
	}
	return nil
}

func (s *Session) channelTarget(c *channel.Channel) string {
	if c.Group() == "" {
		return s.id + "." + c.ID()
	}
	return s.id + "." + c.Group() + "." + c.ID()
}

// call runs an adapter call with the adapter deadline and maps its error.
func (s *Session) call(f func(ctx context.Context) error) *protocol.Failure {
	ctx, cancel := context.WithTimeout(context.Background(), s.m.opts.AdapterTimeout)
	defer cancel()
	err := f(ctx)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return protocol.Failf(protocol.CodeTimeout, "the switch did not answer within %s", s.m.opts.AdapterTimeout)
	default:
		return protocol.Failf(protocol.CodeAdapterError, "the switch refused: %v", err)
	}
}

func (s *Session) ref(c *channel.Channel) adapters.ChannelRef {
	return adapters.ChannelRef{AgentID: s.ident.AgentID, GroupID: c.Group(), Channel: c.Spec()}
}

// loadCatalog returns the cached reason catalogs, fetching them once.
func (s *Session) loadCatalog() (*channel.Catalog, *protocol.Failure) {
	if s.catalog != nil {
		return s.catalog, nil
	}
	cat := &channel.Catalog{}
	if f := s.call(func(ctx context.Context) (err error) {
		if cat.NotReady, err = s.m.adapter.NotReadyReasons(ctx, s.ident.AgentID); err != nil {
			return err
		}
		cat.Logout, err = s.m.adapter.LogoutReasons(ctx, s.ident.AgentID)
		return err
	}); f != nil {
		return nil, f
	}
	s.catalog = cat
	return cat, nil
}

// reasonFor names a reason code reported by the switch, best effort.
func (s *Session) reasonFor(code string) channel.Reason {
	if code == "" {
		return channel.Reason{}
	}
	if strings.EqualFold(code, protocol.ReasonACW) {
		r, _ := (&channel.Catalog{}).NotReadyReason(protocol.ReasonACW)
		if cat, f := s.loadCatalog(); f == nil {
			r, _ = cat.NotReadyReason(protocol.ReasonACW)
		}
		return r
	}
	if cat, f := s.loadCatalog(); f == nil {
		if r, ok := cat.Find(code); ok {
			return r
		}
	}
	return channel.Reason{Code: code}
}
