package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/channel"
	"github.com/ctibroker/ctibroker/history"
	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/store"
)

// A session's life: started (restored from the store, or built from the
// switch), connections attached and detached, the grace period, and its
// end (logout, expiry, hand-over to another node, shutdown).

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
	s.wire, s.wireTo = nil, nil
	s.closeAll(protocol.CloseTakenOver, reason)
	s.journal.drop()
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
	dropOps(s.mb.close())
	s.m.leaseMu.Lock()
	s.leaseGone = true // before Release: the renewer must not re-take it
	s.m.leaseMu.Unlock()
	// The store first: once the session leaves the registry, a new attach
	// may open it from the store.
	ctx, cancel := context.WithTimeout(context.Background(), s.m.opts.StoreTimeout)
	s.unwatchAll()
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
		if err := s.restore(*s.record); err != nil {
			return err
		}
		s.register()
		s.pushLeftovers()
		return nil
	}
	if !s.ident.Supervisor() {
		if err := s.initFromSwitch(); err != nil {
			return err
		}
		s.journal.timeline = append([][]byte{s.entry(history.Entry{Kind: history.KindStart, Teams: s.teams, At: s.created})}, s.journal.timeline...)
	}
	s.takeIntervals()
	s.journal.force = true
	if _, err := s.journal.commit(s.snapshot, nil); err != nil {
		return fmt.Errorf("storing the new session: %w", err)
	}
	return nil
}

// register tells an adapter that routes events by agent (a remote one)
// that this node serves the agent now. A new session registers as it
// reads the agent's logins; a restored one (taken over, failed over) here.
// Failing, the session runs on: the adapter's link is down, and the agent
// is registered again when it comes back.
func (s *Session) register() {
	r, ok := s.m.adapter.(adapters.Registrar)
	if !ok || s.ident.Supervisor() {
		return
	}
	if f := s.call(func(ctx context.Context) error { return r.Register(ctx, s.ident.AgentID) }); f != nil {
		s.logf(zap.WarnLevel, "could not register the agent with the adapter", zap.String("failure", f.Error()))
		if f.Code == protocol.CodeCTILinkDown {
			s.onLinkChanged(f.Message) // registers when the link is back
		}
	}
}

// snapshot is a session's persistent state (the store's record).
type snapshot struct {
	SessionID   string          `json:"sessionId"`
	AgentID     string          `json:"agentId"`
	DisplayName string          `json:"displayName,omitempty"`
	Teams       []string        `json:"teams,omitempty"`
	Created     int64           `json:"created"`
	Seq         uint64          `json:"seq"`
	Groups      []string        `json:"groups,omitempty"`
	Channels    []channel.Saved `json:"channels"`
	// StatusSince is when the aggregate status started, Unix ms.
	StatusSince int64 `json:"statusSince"`
	// Supervisor sessions: role and subscriptions.
	Interactions  []protocol.Interaction `json:"interactions,omitempty"`
	Today         protocol.CallCounters  `json:"today,omitzero"`
	Role          string                 `json:"role,omitempty"`
	AllTeams      bool                   `json:"allTeams,omitempty"`
	Subscriptions []savedSubscription    `json:"subscriptions,omitempty"`
}

func (s *Session) snapshot() []byte {
	snap := snapshot{SessionID: s.id, AgentID: s.ident.AgentID, DisplayName: s.displayName, Teams: s.teams, Created: s.created,
		Seq: s.journal.seq, Groups: s.groups, Channels: make([]channel.Saved, len(s.channels)),
		StatusSince: s.statusSince.UnixMilli(), Role: s.ident.Role, AllTeams: s.ident.AllTeams}
	for id, sub := range s.subs {
		snap.Subscriptions = append(snap.Subscriptions, savedSubscription{ID: id, Filter: sub.filter})
	}
	for i, c := range s.channels {
		snap.Channels[i] = c.Save()
	}
	for _, ix := range s.sortedInteractions() {
		snap.Interactions = append(snap.Interactions, ix.Info())
	}
	snap.Today = s.today
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
	for _, info := range snap.Interactions {
		if s.ixs == nil {
			s.ixs = map[string]*channel.Interaction{}
		}
		s.ixs[info.ID] = channel.RestoreInteraction(info)
	}
	s.groups, s.today, s.displayName = snap.Groups, snap.Today, snap.DisplayName
	s.journal.seq, s.journal.committed, s.journal.version = snap.Seq, snap.Seq, rec.Version
	s.created, s.restored = snap.Created, time.Now()
	s.statusSince = time.UnixMilli(snap.StatusSince)
	if len(s.teams) == 0 && len(snap.Teams) > 0 {
		s.teams = snap.Teams
	}
	st := s.state()
	s.status = st.Status
	if !s.ident.Supervisor() {
		s.publishPresence(st)
	}
	// Changes may have happened while the session moved: every
	// subscription starts again from a snapshot that says so, once a
	// connection attaches.
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
	}
	if d, ok := s.m.adapter.(adapters.Directory); ok {
		// A name is for supervisors' eyes: without one the agent's id does.
		_ = s.call(func(ctx context.Context) (err error) {
			s.displayName, err = d.DisplayName(ctx, s.ident.AgentID)
			return err
		})
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
	s.initInteractionsFromSwitch()
	s.publishPresence(s.state())
	return nil
}

// attach makes conn the session's connection and sends it the initial
// events. The connection's identity applies from now on: a session never
// keeps rights the connecting token no longer grants.
func (s *Session) attach(conn Conn, id Identity, since *uint64, created bool) error {
	if id.Role != s.ident.Role {
		return errRoleChanged
	}
	shared := false
	if s.conn != nil && !s.attached(conn) {
		switch {
		case s.m.opts.MultiConnect == MultiConnectReject:
			return ErrAlreadyConnected
		case s.sharing():
			shared = true
		default:
			s.logf(zap.InfoLevel, "connection taken over", zap.String("old_remote", s.conn.RemoteAddr()), zap.String("remote", conn.RemoteAddr()))
			s.sendWire()
			s.closeAll(protocol.CloseTakenOver, "session taken over by another connection")
		}
	}
	s.addConn(conn)
	if shared {
		// The others know the session's state already: what an attach
		// sends (a replay, the initial events) is the new connection's.
		s.only = conn
		s.connectionsChanged(conn)
	}
	s.stopGrace()
	s.logf(zap.InfoLevel, "connection attached", zap.String("remote", conn.RemoteAddr()), zap.Bool("created", created))
	s.applyTeams(id)
	if since != nil && !created && !s.journal.unsynced {
		ctx, cancel := context.WithTimeout(context.Background(), s.m.opts.StoreTimeout)
		missed, ok, err := s.m.store.EventsSince(ctx, s.id, *since, s.journal.committed)
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
		s.emitInteractions(c)
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
	s.journal.timeline = append(s.journal.timeline, s.entry(history.Entry{Kind: history.KindTeams, Teams: s.teams, At: time.Now().UnixMilli()}))
	s.publishPresence(s.state())
	s.journal.force = true
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
	init := protocol.SessionInitialized{SessionID: s.id, AgentID: s.ident.AgentID, Resumed: resumed, Teams: s.teams, Seq: s.journal.seq + 1}
	if s.sharing() && len(s.conns) > 0 {
		init.ConnectionID, init.Connections = s.conns[len(s.conns)-1].id, s.connections()
	}
	s.emit(s.id, protocol.EvSessionInitialized, init)
}

// attachment is one connection of a session.
type attachment struct {
	conn      Conn
	id        string
	userAgent string
	since     int64 // Unix ms
}

// sharing reports whether the session's connections share it
// (session.multiconnect share; agents only: a supervisor's live view
// follows one connection).
func (s *Session) sharing() bool {
	return s.m.opts.MultiConnect == MultiConnectShare && !s.ident.Supervisor()
}

func (s *Session) attached(c Conn) bool {
	return c != nil && slices.ContainsFunc(s.conns, func(a attachment) bool { return a.conn == c })
}

func (s *Session) addConn(c Conn) {
	if s.attached(c) {
		return
	}
	s.conns = append(s.conns, attachment{conn: c, id: newID()[:8], userAgent: c.UserAgent(), since: time.Now().UnixMilli()})
	s.setConn(c)
}

// removeConn forgets c; the live view moves to the newest left.
func (s *Session) removeConn(c Conn) {
	s.conns = slices.DeleteFunc(s.conns, func(a attachment) bool { return a.conn == c })
	var newest Conn
	if len(s.conns) > 0 {
		newest = s.conns[len(s.conns)-1].conn
	}
	if newest != s.conn {
		s.setConn(newest)
	}
}

// closeAll closes every connection.
func (s *Session) closeAll(code protocol.CloseCode, reason string) {
	for _, a := range s.conns {
		a.conn.Close(code, reason)
	}
	s.conns = nil
	if s.conn != nil {
		s.setConn(nil)
	}
}

func (s *Session) connections() *protocol.Connections {
	cs := &protocol.Connections{Count: len(s.conns), Connections: make([]protocol.ConnectionInfo, len(s.conns))}
	for i, a := range s.conns {
		cs.Connections[i] = protocol.ConnectionInfo{ID: a.id, UserAgent: a.userAgent, Since: a.since}
	}
	return cs
}

// connectionsChanged tells every connection but except that the session's
// connections changed: a live message, without a seq (a connection that
// comes back learns them from session.initialized).
func (s *Session) connectionsChanged(except Conn) {
	data, err := protocol.Marshal(s.connections())
	if err != nil {
		return
	}
	msg, _ := protocol.Marshal(protocol.Event{MessageType: protocol.MessageTypeObjectEvent, Target: s.id,
		Name: protocol.EvSessionConnectionsChanged, Data: data, Timestamp: time.Now().UnixMilli()})
	for _, a := range s.conns {
		if a.conn != except {
			s.deliverTo(a.conn, msg)
		}
	}
}

// setConn makes c the session's connection (nil: none). The live view
// follows the connection: watches run only while one is attached, and a new
// connection gets every subscription again, from a resync snapshot.
func (s *Session) setConn(c Conn) {
	s.conn = c
	if s.feed != nil {
		if c != nil {
			// Nothing live goes before this op's messages (a resumed
			// session's replay and session.initialized).
			s.feed.hold()
			s.feedHeld = true
		}
		s.feed.setConn(c)
	}
	if c == nil {
		s.unwatchAll()
	} else {
		s.watchAll()
	}
}

// detach forgets a connection that is gone; the session waits for the
// grace period once the last one left.
func (s *Session) detach(conn Conn) {
	if !s.attached(conn) {
		return
	}
	s.removeConn(conn)
	if s.conn != nil {
		s.logf(zap.InfoLevel, "connection detached; others remain", zap.String("remote", conn.RemoteAddr()), zap.Int("connections", len(s.conns)))
		s.connectionsChanged(nil)
		return
	}
	s.wire, s.wireTo = nil, nil
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
	s.closeAll(code, reason)
	s.ended = true
}
