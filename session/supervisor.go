package session

import (
	"context"
	"encoding/json"
	"slices"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/channel"
	"github.com/ctibroker/ctibroker/protocol"
)

// subscription is one supervisor.subscribe of a session.
type subscription struct {
	filter protocol.WatchFilter
	cancel func()
}

type savedSubscription struct {
	ID     string               `json:"id"`
	Filter protocol.WatchFilter `json:"filter"`
}

func (s *Session) cmdSubscribe(r *request) (json.RawMessage, *protocol.Failure) {
	var f protocol.WatchFilter
	if fail := protocol.DecodeData(r.Data, &f); fail != nil {
		return nil, fail
	}
	if len(s.subs) >= protocol.MaxSubscriptions {
		return nil, protocol.Failf(protocol.CodeInvalidState, "at most %d subscriptions per session", protocol.MaxSubscriptions)
	}
	id := newID()[:12]
	if fail := s.startSubscription(id, f, protocol.SnapshotSubscribed); fail != nil {
		return nil, fail
	}
	data, _ := protocol.Marshal(protocol.SubscribeReply{SubscriptionID: id})
	return data, nil
}

func (s *Session) cmdUnsubscribe(r *request) (json.RawMessage, *protocol.Failure) {
	var d protocol.UnsubscribeData
	if fail := protocol.DecodeData(r.Data, &d); fail != nil {
		return nil, fail
	}
	sub, ok := s.subs[d.SubscriptionID]
	if !ok {
		return nil, protocol.Failf(protocol.CodeNotFound, "no subscription %q", d.SubscriptionID)
	}
	sub.cancel()
	delete(s.subs, d.SubscriptionID)
	s.journal.force = true
	return r.Data, nil
}

// Scope restricts a watch filter to what an identity may see: supervisors
// their teams, agents themselves, admins everything.
func Scope(id Identity, f protocol.WatchFilter) (protocol.WatchFilter, *protocol.Failure) {
	switch {
	case !id.Supervisor():
		if len(f.Agents) != 1 || f.Agents[0] != id.AgentID {
			return f, protocol.Failf(protocol.CodeForbidden, "agents may only watch themselves (agents: [%q])", id.AgentID)
		}
	case id.AllTeams:
	default:
		allowed := id.Teams
		if len(f.Teams) == 0 {
			f.Teams = slices.Clone(allowed)
		} else {
			for _, t := range f.Teams {
				if !slices.Contains(allowed, t) {
					return f, protocol.Failf(protocol.CodeForbidden, "team %q is not one of your teams", t)
				}
			}
		}
		if len(f.Teams) == 0 {
			return f, protocol.Failf(protocol.CodeForbidden, "your token names no teams to watch")
		}
	}
	return f, nil
}

// startSubscription registers a watcher on the board and emits the snapshot.
func (s *Session) startSubscription(id string, requested protocol.WatchFilter, reason string) *protocol.Failure {
	f, fail := Scope(s.ident, requested)
	if fail != nil {
		return fail
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.m.opts.StoreTimeout+s.m.opts.LeaseTTL)
	defer cancel()
	subJSON := protocol.AppendString(nil, id)
	agents, stop, err := s.m.board.watch(ctx, MatchFilter(f), func(c Change) {
		s.post(func(s *Session) { s.onAgentChanged(id, subJSON, c) })
	})
	if err != nil {
		return protocol.Failf(protocol.CodeUnavailable, "the agent board is not available: %v", err)
	}
	if s.subs == nil {
		s.subs = map[string]*subscription{}
	}
	s.subs[id] = &subscription{filter: requested, cancel: stop}
	var sum protocol.Summary
	for _, a := range agents {
		sum.Add(a.Status)
	}
	s.emit(s.id, protocol.EvSupervisorSnapshot, protocol.SupervisorSnapshot{SubscriptionID: id, Reason: reason,
		Agents: nonNil(agents), Summary: sum})
	s.journal.force = true
	return nil
}

// rescopeSubscriptions restarts every subscription under the session's
// current rights, each with a resync snapshot. A subscription whose
// requested teams are no longer allowed at all ends with an empty resync
// snapshot: the supervisor's view of it is empty and stays so.
func (s *Session) rescopeSubscriptions() {
	for id, sub := range s.subs {
		sub.cancel()
		delete(s.subs, id)
		requested := sub.filter
		if len(requested.Teams) > 0 && !s.ident.AllTeams {
			requested.Teams = slices.DeleteFunc(slices.Clone(requested.Teams), func(t string) bool { return !slices.Contains(s.ident.Teams, t) })
			if len(requested.Teams) == 0 {
				s.emit(s.id, protocol.EvSupervisorSnapshot, protocol.SupervisorSnapshot{SubscriptionID: id, Reason: protocol.SnapshotResync,
					Agents: []protocol.AgentView{}})
				continue
			}
		}
		if f := s.startSubscription(id, requested, protocol.SnapshotResync); f != nil {
			s.logf(zap.WarnLevel, "could not scope a subscription again", zap.String("subscription", id), zap.String("failure", f.Error()))
			s.emit(s.id, protocol.EvSupervisorSnapshot, protocol.SupervisorSnapshot{SubscriptionID: id, Reason: protocol.SnapshotResync,
				Agents: []protocol.AgentView{}})
		}
	}
	s.journal.force = true
}

func (s *Session) onAgentChanged(id string, subJSON []byte, c Change) {
	if _, ok := s.subs[id]; !ok {
		return
	}
	s.journal.emit(s.id, protocol.EvSupervisorAgentChanged, c.AppendData(nil, subJSON))
}

// Watch registers notify for changes of the agents matching f (already
// scoped) and returns their current views. notify must not block.
func (m *Manager) Watch(ctx context.Context, f protocol.WatchFilter, notify func(Change)) ([]protocol.AgentView, func(), error) {
	return m.board.watch(ctx, MatchFilter(f), notify)
}

// snapshotView builds an agent's view from a stored session snapshot; false
// for supervisor sessions and undecodable records.
func snapshotView(sid string, raw []byte) (*protocol.AgentView, uint64, bool) {
	var snap snapshot
	if json.Unmarshal(raw, &snap) != nil || snap.Role == RoleSupervisor || snap.Role == RoleAdmin {
		return nil, 0, false
	}
	v := &protocol.AgentView{AgentID: snap.AgentID, SessionID: sid, Teams: nonNil(snap.Teams), StatusSince: snap.StatusSince,
		Channels: make([]protocol.ChannelState, 0, len(snap.Channels))}
	for _, saved := range snap.Channels {
		c, err := channel.Restore(saved, 2)
		if err != nil {
			continue
		}
		v.Channels = append(v.Channels, c.Snapshot())
	}
	v.Status = protocol.AggregateStatus(v.Channels)
	return v, snap.Seq, true
}
