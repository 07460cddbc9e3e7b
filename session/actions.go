package session

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/channel"
	"github.com/ctibroker/ctibroker/protocol"
)

// Supervisor actions: a supervisor (or admin) sets a team member's state
// or logs a channel out. The action runs in the agent's session, on the
// node that owns it: here, or forwarded through the bus to the owner's
// node topic, whose answer comes back on this node's topic once the owner
// applied and stored the change. The desktop sees who did it (changedBy).

// action is a supervisor action as it travels between nodes.
type action struct {
	Kind    string              `json:"kind"` // "action", "result", "takeover" or "moved"
	ID      string              `json:"id"`
	From    string              `json:"from,omitempty"` // the requesting node
	Agent   string              `json:"agent,omitempty"`
	Command string              `json:"command,omitempty"`
	Data    json.RawMessage     `json:"data,omitempty"`
	By      *protocol.ChangedBy `json:"by,omitempty"`
	Failure *protocol.Failure   `json:"failure,omitempty"`
}

// cmdSupervisorAction runs supervisor.agent.setstate and supervisor.agent.logout.
func (s *Session) cmdSupervisorAction(r *request) (json.RawMessage, *protocol.Failure) {
	var d struct {
		AgentID string `json:"agentId"`
	}
	if f := decodeData(r, &d); f != nil {
		return nil, f
	}
	if protocol.ValidateID(d.AgentID) != nil {
		return nil, protocol.Failf(protocol.CodeInvalidRequest, "agentId: required, an agent id")
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.m.opts.StoreTimeout)
	view, err := s.m.AgentView(ctx, d.AgentID)
	cancel()
	if err != nil {
		return nil, protocol.Failf(protocol.CodeUnavailable, "the agents' state is unavailable: %v", err)
	}
	if view == nil {
		return nil, protocol.Failf(protocol.CodeNotFound, "agent %s has no live session", d.AgentID)
	}
	if s.ident.Role != RoleAdmin && !s.ident.AllTeams && !slices.ContainsFunc(view.Teams, func(t string) bool { return slices.Contains(s.ident.Teams, t) }) {
		return nil, protocol.Failf(protocol.CodeForbidden, "agent %s is not in your teams", d.AgentID)
	}
	by := &protocol.ChangedBy{Role: s.ident.Role, ID: s.ident.AgentID}
	f := s.m.supervisorAction(view.SessionID, action{Agent: d.AgentID, Command: r.Command, Data: r.Data, By: by})
	if f != nil {
		return nil, f
	}
	return r.Data, nil
}

// supervisorAction runs a on the agent's session, here or on its owner.
func (m *Manager) supervisorAction(sid string, a action) *protocol.Failure {
	wait := m.opts.StoreTimeout + m.opts.AdapterTimeout
	if s := m.byIDLocal(sid); s != nil {
		res := make(chan *protocol.Failure, 1)
		if s.post(func(s *Session) { res <- s.applySupervisorAction(a) }) {
			select {
			case f := <-res:
				return f
			case <-s.done:
			case <-time.After(wait):
				return protocol.Failf(protocol.CodeTimeout, "the agent's session did not answer within %v", wait)
			}
		}
		return protocol.Failf(protocol.CodeNotFound, "agent %s has no live session", a.Agent)
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.opts.StoreTimeout)
	owner, err := m.store.Owner(ctx, sid)
	cancel()
	if err != nil || owner == "" {
		return protocol.Failf(protocol.CodeUnavailable, "the owner of the agent's session is unknown: %v", err)
	}
	a.Kind, a.ID, a.From = "action", newID(), m.opts.Node
	res := make(chan *protocol.Failure, 1)
	m.pendingActions.Store(a.ID, res)
	defer m.pendingActions.Delete(a.ID)
	payload, _ := json.Marshal(a)
	if err := m.bus.Publish(context.Background(), nodeTopic(owner), payload); err != nil {
		return protocol.Failf(protocol.CodeUnavailable, "could not reach node %s: %v", owner, err)
	}
	select {
	case f := <-res:
		return f
	case <-time.After(wait):
		return protocol.Failf(protocol.CodeTimeout, "node %s did not answer within %v", owner, wait)
	}
}

// onNodeAction serves a message of the node topic: a request to hand a
// session over and its answer when the owner keeps it, an action to apply
// here, or the result of one this node forwarded.
func (m *Manager) onNodeAction(payload []byte) {
	var a action
	if json.Unmarshal(payload, &a) != nil || a.ID == "" {
		m.log.Warn("ignoring a malformed node message")
		return
	}
	switch a.Kind {
	case "takeover":
		if s := m.byIDLocal(a.ID); s != nil {
			s.post(func(s *Session) { s.onTakeover(a.From) })
		}
	case "moved":
		if ch, ok := m.pendingTakeovers.Load(a.ID); ok {
			var url string
			_ = json.Unmarshal(a.Data, &url)
			select {
			case ch.(chan *MovedError) <- &MovedError{Node: a.From, URL: url}:
			default:
			}
		}
	case "result":
		if ch, ok := m.pendingActions.Load(a.ID); ok {
			select {
			case ch.(chan *protocol.Failure) <- a.Failure:
			default:
			}
		}
	case "action":
		go func() { // it waits for the session: not on the manager's loop
			ctx, cancel := context.WithTimeout(context.Background(), m.opts.StoreTimeout)
			sid, err := m.store.SessionOf(ctx, a.Agent)
			cancel()
			f := protocol.Failf(protocol.CodeNotFound, "agent %s has no live session", a.Agent)
			if err == nil && sid != "" && m.byIDLocal(sid) != nil {
				f = m.supervisorAction(sid, a)
			}
			reply, _ := json.Marshal(action{Kind: "result", ID: a.ID, Failure: f})
			if err := m.bus.Publish(context.Background(), nodeTopic(a.From), reply); err != nil {
				m.log.Warn("could not answer a forwarded supervisor action", zap.Error(err))
			}
		}()
	}
}

// onTakeover: node from asks for the session. Under share, while agents'
// connections are here, the session stays and from's connection is sent
// here instead (one owner serves every connection, so that each sees the
// events in the same order, replies before their events).
func (s *Session) onTakeover(from string) {
	if s.sharing() && s.conn != nil && from != "" {
		url, _ := json.Marshal(s.m.opts.URL)
		msg, _ := json.Marshal(action{Kind: "moved", ID: s.id, From: s.m.opts.Node, Data: url})
		ctx, cancel := context.WithTimeout(context.Background(), s.m.opts.StoreTimeout)
		err := s.m.bus.Publish(ctx, nodeTopic(from), msg)
		cancel()
		if err == nil {
			s.logf(zap.InfoLevel, "kept a shared session; the other node's connection comes here", zap.String("node", from))
			return
		}
	}
	s.handOver("taken over by another node")
}

// applySupervisorAction sets the agent's channels' state as a supervisor
// asked: every ACTIVE channel, or the one named.
func (s *Session) applySupervisorAction(a action) *protocol.Failure {
	var d struct {
		Channel    string `json:"channel"`
		Status     string `json:"status"`
		ReasonCode string `json:"reasoncode"`
		Reason     string `json:"reason"`
	}
	if len(a.Data) > 0 && json.Unmarshal(a.Data, &d) != nil {
		return protocol.Failf(protocol.CodeInvalidRequest, "data: not an object")
	}
	var targets []*channel.Channel
	for _, c := range s.channels {
		if (d.Channel == "" && c.Active()) || c.ID() == d.Channel {
			targets = append(targets, c)
		}
	}
	if len(targets) == 0 {
		return protocol.Failf(protocol.CodeNotFound, "agent %s has no such ACTIVE channel", a.Agent)
	}
	// Reasons come from the catalogs (a supervisor may use the system ones
	// agents cannot select); anything else is refused, not stored.
	cat, f := s.loadCatalog()
	if f != nil {
		return f
	}
	var in channel.Intent
	switch {
	case a.Command == protocol.CmdSupervisorLogout:
		r, f := cat.LogoutReason(d.Reason)
		if f != nil {
			return f
		}
		in = channel.Intent{Command: a.Command, Event: channel.EvDeactivate, Reason: r}
	case d.Status == protocol.StatusReady:
		in = channel.Intent{Command: a.Command, Event: channel.EvReady}
	case d.Status == protocol.StatusNotReady:
		code := d.ReasonCode
		if code == "" {
			code = s.m.opts.SupervisorReason
		}
		r, ok := cat.Find(code)
		if !ok && d.ReasonCode != "" {
			return protocol.Failf(protocol.CodeInvalidReason, "reasoncode %q is not in the not-ready catalog", d.ReasonCode)
		}
		if !ok {
			r = channel.Reason{Code: code} // the configured system reason, missing from the switch's catalog
		}
		in = channel.Intent{Command: a.Command, Event: channel.EvNotReady, Reason: r}
	default:
		return protocol.Failf(protocol.CodeInvalidRequest, "status: ready or not_ready")
	}
	s.changedBy = a.By
	defer func() {
		s.takeIntervals() // the history entries of the change name who made it
		s.changedBy = nil
	}()
	for _, c := range targets {
		if in.Event == channel.EvReady || in.Event == channel.EvNotReady {
			if ix := s.awaitingDisposition(c); ix != nil {
				return protocol.Failf(protocol.CodeInvalidState, "interaction %s awaits its disposition", ix.ID())
			}
		}
		if f := s.apply(c, in, fmt.Sprintf("supervisor:%s", a.By.ID), true); f != nil {
			return f
		}
	}
	s.m.audit.Info("supervisor action", zap.String("by", a.By.ID), zap.String("agent", a.Agent), zap.String("command", a.Command))
	return nil
}
