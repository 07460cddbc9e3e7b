package session

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/channel"
	"github.com/ctibroker/ctibroker/protocol"
)

// subscription is one supervisor.subscribe of a session. Its watch on the
// board runs while a connection is attached (live is nil otherwise).
type subscription struct {
	filter protocol.WatchFilter
	live   *liveSub
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
	if f.Format != "" && f.Format != protocol.FormatFull && f.Format != protocol.FormatCompact {
		return nil, protocol.Failf(protocol.CodeInvalidRequest, "field \"data.format\": %q is neither %q nor %q", protocol.CutEncoded(f.Format, 32), protocol.FormatFull, protocol.FormatCompact)
	}
	if len(s.subs) >= protocol.MaxSubscriptions {
		return nil, protocol.Failf(protocol.CodeInvalidState, "at most %d subscriptions per session", protocol.MaxSubscriptions)
	}
	if fail := s.checkQueues(f.Queues); fail != nil {
		return nil, fail
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
	s.stopWatch(sub)
	delete(s.subs, d.SubscriptionID)
	s.journal.force = true
	return r.Data, nil
}

// checkQueues refuses a subscription to queues the switch does not report
// or the supervisor may not see.
func (s *Session) checkQueues(names []string) *protocol.Failure {
	if names == nil {
		return nil
	}
	if !s.ident.Supervisor() {
		return protocol.Failf(protocol.CodeForbidden, "queues are for supervisors and admins")
	}
	if len(names) > protocol.MaxViewQueues {
		return protocol.Failf(protocol.CodeInvalidRequest, "field \"data.queues\": at most %d queues", protocol.MaxViewQueues)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.m.opts.StoreTimeout+s.m.opts.LeaseTTL)
	defer cancel()
	visible, err := s.m.Queues(ctx, s.ident)
	if errors.Is(err, ErrNoQueues) {
		return protocol.Failf(protocol.CodeNotSupported, "%v", err)
	}
	if err != nil {
		return protocol.Failf(protocol.CodeUnavailable, "the queue figures are not available: %v", err)
	}
	for _, n := range names {
		if !slices.ContainsFunc(visible, func(q protocol.QueueFigures) bool { return q.Name == n }) {
			return protocol.Failf(protocol.CodeForbidden, "queue %q is not one of the queues you may see", protocol.CutEncoded(n, protocol.MaxNameLength))
		}
	}
	return nil
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

// startSubscription records a subscription and, with a connection
// attached, starts its watch: its snapshot, then its changes, through the
// session's feed.
func (s *Session) startSubscription(id string, requested protocol.WatchFilter, reason string) *protocol.Failure {
	if _, fail := Scope(s.ident, requested); fail != nil {
		return fail
	}
	sub := &subscription{filter: requested}
	if s.conn != nil {
		if fail := s.startWatch(id, sub, reason); fail != nil {
			return fail
		}
	}
	if s.subs == nil {
		s.subs = map[string]*subscription{}
	}
	s.subs[id] = sub
	s.journal.force = true
	return nil
}

// startWatch starts the subscription's watch on the board and queues its
// snapshot ahead of its changes. The feed holds them until this op's
// messages (a subscribe's reply) are sent.
func (s *Session) startWatch(id string, sub *subscription, reason string) *protocol.Failure {
	f, fail := Scope(s.ident, sub.filter)
	if fail != nil {
		return fail
	}
	if s.feed == nil {
		s.feed = newFeed(s)
		s.feed.setConn(s.conn)
	}
	s.feed.hold()
	s.feedHeld = true
	ctx, cancel := context.WithTimeout(context.Background(), s.m.opts.StoreTimeout+s.m.opts.LeaseTTL)
	defer cancel()
	live := newLiveSub(s.id, id, f.Format == protocol.FormatCompact)
	watch, agents, err := s.m.board.watch(ctx, MatchFilter(f), live.compact, s.feed.wake)
	if err != nil {
		return protocol.Failf(protocol.CodeUnavailable, "the agent board is not available: %v", err)
	}
	live.watch, sub.live = watch, live
	snap := protocol.SupervisorSnapshot{SubscriptionID: id, Reason: reason, Agents: nonNil(agents)}
	for _, a := range agents {
		snap.Summary.Add(a.Status)
	}
	if f.Queues != nil {
		feed := s.feed
		qw, queues, err := s.m.WatchQueues(ctx, s.ident, f.Queues, func(prev, cur *protocol.QueueFigures) {
			name := cmp.Or(cur, prev).Name
			data, _ := protocol.Marshal(protocol.QueueChanged{SubscriptionID: id, Queue: name, Previous: prev, Current: cur})
			msg, _ := protocol.Marshal(protocol.Event{MessageType: protocol.MessageTypeObjectEvent, Target: s.id, Name: protocol.EvSupervisorQueueChanged,
				Data: data, Timestamp: time.Now().UnixMilli()})
			feed.push(live, msg)
		})
		if err != nil {
			watch.Stop()
			sub.live = nil
			return protocol.Failf(protocol.CodeUnavailable, "the queue figures are not available: %v", err)
		}
		live.queues, snap.Queues = qw, queues
	}
	s.feed.add(live, s.snapshotMessage(snap))
	return nil
}

// stopWatch ends a subscription's watch.
func (s *Session) stopWatch(sub *subscription) {
	if sub.live == nil {
		return
	}
	sub.live.watch.Stop()
	if sub.live.queues != nil {
		sub.live.queues.Stop()
	}
	s.feed.remove(sub.live)
	sub.live = nil
}

// snapshotMessage encodes a supervisor.snapshot: a live message, without a
// seq.
func (s *Session) snapshotMessage(snap protocol.SupervisorSnapshot) []byte {
	data, err := protocol.Marshal(snap)
	if err != nil {
		s.logf(zap.ErrorLevel, "cannot encode a snapshot", zap.Error(err))
		data = []byte("null")
	}
	msg, _ := protocol.Marshal(protocol.Event{MessageType: protocol.MessageTypeObjectEvent, Target: s.id, Name: protocol.EvSupervisorSnapshot,
		Data: data, Timestamp: time.Now().UnixMilli()})
	return msg
}

// watchAll starts every subscription's watch, each with a resync
// snapshot: the connection is new, and what it saw before is stale.
func (s *Session) watchAll() {
	for id, sub := range s.subs {
		s.stopWatch(sub)
		if f := s.startWatch(id, sub, protocol.SnapshotResync); f != nil {
			s.logf(zap.WarnLevel, "could not restart a supervisor subscription", zap.String("subscription", id), zap.String("failure", f.Error()))
			s.endSubscription(id, sub)
		}
	}
}

// unwatchAll stops every watch while no connection is attached.
func (s *Session) unwatchAll() {
	for _, sub := range s.subs {
		s.stopWatch(sub)
	}
}

// resyncSubscriptions restarts every watch with a resync snapshot: the
// feed dropped changes (the connection fell too far behind).
func (s *Session) resyncSubscriptions(why string) {
	if s.conn == nil {
		return
	}
	s.logf(zap.InfoLevel, "supervisor subscriptions resynced", zap.String("why", why))
	s.watchAll()
}

// endSubscription tells the client a subscription it can no longer have
// is empty (an empty resync snapshot), and forgets it.
func (s *Session) endSubscription(id string, sub *subscription) {
	s.stopWatch(sub)
	delete(s.subs, id)
	if s.conn != nil && s.feed != nil {
		s.feed.hold()
		s.feedHeld = true
		s.feed.queueSnapshot(s.snapshotMessage(protocol.SupervisorSnapshot{SubscriptionID: id, Reason: protocol.SnapshotResync, Agents: []protocol.AgentView{}}))
	}
	s.journal.force = true
}

// rescopeSubscriptions restarts every subscription under the session's
// current rights, each with a resync snapshot. A subscription whose
// requested teams are no longer allowed at all ends with an empty resync
// snapshot: the supervisor's view of it is empty and stays so.
func (s *Session) rescopeSubscriptions() {
	for id, sub := range s.subs {
		if len(sub.filter.Teams) > 0 && !s.ident.AllTeams {
			sub.filter.Teams = slices.DeleteFunc(slices.Clone(sub.filter.Teams), func(t string) bool { return !slices.Contains(s.ident.Teams, t) })
			if len(sub.filter.Teams) == 0 {
				s.endSubscription(id, sub)
				continue
			}
		}
		if s.conn == nil {
			continue
		}
		s.stopWatch(sub)
		if f := s.startWatch(id, sub, protocol.SnapshotResync); f != nil {
			s.logf(zap.WarnLevel, "could not scope a subscription again", zap.String("subscription", id), zap.String("failure", f.Error()))
			s.endSubscription(id, sub)
		}
	}
	s.journal.force = true
}

// Watch starts a watch of the agents matching f (already scoped): their
// current views, then their changes through the returned Watch. wake is
// called when changes may be waiting; it must not block.
func (m *Manager) Watch(ctx context.Context, f protocol.WatchFilter, wake func()) (*Watch, []protocol.AgentView, error) {
	return m.board.watch(ctx, MatchFilter(f), false, wake)
}

// snapshotView builds an agent's view from a stored session snapshot; false
// for supervisor sessions and undecodable records.
func snapshotView(sid string, raw []byte) (*protocol.AgentView, uint64, bool) {
	var snap snapshot
	if json.Unmarshal(raw, &snap) != nil || snap.Role == RoleSupervisor || snap.Role == RoleAdmin {
		return nil, 0, false
	}
	v := &protocol.AgentView{AgentID: snap.AgentID, DisplayName: snap.DisplayName, SessionID: sid, Teams: nonNil(snap.Teams), StatusSince: snap.StatusSince,
		Channels: make([]protocol.ChannelState, 0, len(snap.Channels))}
	for _, saved := range snap.Channels {
		c, err := channel.Restore(saved, 2)
		if err != nil {
			continue
		}
		cs := c.Snapshot()
		for _, ix := range snap.Interactions {
			if ix.Channel == cs.ID && ix.State != protocol.IxEnded && ix.State != protocol.IxCompleted {
				cs.Interactions = append(cs.Interactions, protocol.InteractionSummary{ID: ix.ID, Direction: ix.Direction,
					State: ix.State, Queue: ix.Queue, StateSince: ix.StateSince})
			}
		}
		v.Channels = append(v.Channels, cs)
	}
	v.Status = protocol.AggregateStatus(v.Channels)
	if snap.Today.Day != "" && snap.Today.Day == time.Now().UTC().Format(time.DateOnly) {
		today := snap.Today
		v.Today = &today
	}
	return v, snap.Seq, true
}
