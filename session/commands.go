package session

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/channel"
	"github.com/ctibroker/ctibroker/protocol"
)

// sessionCommand runs a session.* command; data is the success reply's data.
func (s *Session) sessionCommand(req protocol.Request) (json.RawMessage, *protocol.Failure) {
	switch req.Command {
	case protocol.CmdAddChannel:
		var d protocol.AddChannelData
		if f := protocol.DecodeData(req.Data, &d); f != nil {
			return nil, f
		}
		if d.Channel == nil {
			return nil, protocol.Failf(protocol.CodeInvalidRequest, "field \"data.channel\" is required")
		}
		if f := s.checkNewChannels("", []protocol.ChannelSpec{*d.Channel}); f != nil {
			return nil, f
		}
		s.addChannel(*d.Channel, "")
		return req.Data, nil
	case protocol.CmdAddChannelGroup:
		var d protocol.AddChannelGroupData
		if f := protocol.DecodeData(req.Data, &d); f != nil {
			return nil, f
		}
		if d.ChannelGroup == nil {
			return nil, protocol.Failf(protocol.CodeInvalidRequest, "field \"data.channelGroup\" is required")
		}
		g := d.ChannelGroup
		if err := protocol.ValidateID(g.ID); err != nil {
			return nil, protocol.Failf(protocol.CodeInvalidRequest, "data.channelGroup.id: %v", err)
		}
		if s.hasGroup(g.ID) {
			return nil, protocol.Failf(protocol.CodeInvalidState, "channel group %s already exists", g.ID)
		}
		if len(s.groups) >= s.m.opts.MaxGroups {
			return nil, protocol.Failf(protocol.CodeInvalidRequest, "at most %d channel groups per session (limits.groups)", s.m.opts.MaxGroups)
		}
		if len(g.Name) > protocol.MaxNameLength {
			return nil, protocol.Failf(protocol.CodeInvalidRequest, "field \"data.channelGroup.name\" is at most %d bytes", protocol.MaxNameLength)
		}
		if f := s.checkNewChannels("data.channelGroup.", g.Channels); f != nil {
			return nil, f
		}
		s.groups = append(s.groups, g.ID)
		for _, spec := range g.Channels {
			s.addChannel(spec, g.ID)
		}
		return req.Data, nil
	case protocol.CmdRemoveChannel:
		return req.Data, s.removeChannel(req.Data)
	case protocol.CmdLogout:
		return req.Data, s.logout(req.Data)
	case protocol.CmdNotReadyReasons, protocol.CmdLogoutReasons:
		var d struct{}
		if f := protocol.DecodeData(req.Data, &d); f != nil {
			return nil, f
		}
		s.catalog = nil // an explicit request always reads the switch
		cat, f := s.loadCatalog()
		if f != nil {
			return nil, f
		}
		s.emitCatalog(req.Command, cat)
		return req.Data, nil
	case protocol.CmdAddressBook:
		var d protocol.AddressBookRequest
		if f := protocol.DecodeData(req.Data, &d); f != nil {
			return nil, f
		}
		msg, f := s.addressBook()
		if f != nil {
			return nil, f
		}
		s.ab.realtime = d.Realtime // addressBook made s.ab
		s.m.dir.setRealtime(s, d.Realtime)
		s.ab.last, s.ab.lastAt = msg, time.Now()
		return msg, nil
	}
	return nil, protocol.Failf(protocol.CodeUnknownCommand, "unknown command %q", req.Command)
}

func (s *Session) emitCatalog(command string, cat *channel.Catalog) {
	if command == protocol.CmdNotReadyReasons {
		s.emit(s.id, protocol.EvNotReadyReasonsUpdated, protocol.NotReadyReasons{ReasonCodes: nonNil(cat.NotReady)})
	} else {
		s.emit(s.id, protocol.EvLogoutReasonsUpdated, protocol.LogoutReasons{LogoutReasons: nonNil(cat.Logout)})
	}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// checkNewChannels validates channel specs about to be added.
func (s *Session) checkNewChannels(field string, specs []protocol.ChannelSpec) *protocol.Failure {
	if n := len(s.channels) + len(specs); n > s.m.opts.MaxChannels {
		return protocol.Failf(protocol.CodeInvalidRequest, "at most %d channels per session (limits.channels)", s.m.opts.MaxChannels)
	}
	seen := map[string]bool{}
	for i, spec := range specs {
		prefix := "data.channel"
		if field != "" {
			prefix = fmt.Sprintf("%schannels[%d]", field, i)
		}
		if err := protocol.ValidateID(spec.ID); err != nil {
			return protocol.Failf(protocol.CodeInvalidRequest, "%s.id: %v", prefix, err)
		}
		if strings.TrimSpace(spec.Name) == "" {
			return protocol.Failf(protocol.CodeInvalidRequest, "field \"%s.name\" (the switch endpoint) is required", prefix)
		}
		if strings.TrimSpace(spec.Type) == "" {
			return protocol.Failf(protocol.CodeInvalidRequest, "field \"%s.type\" is required (TELEPHONY, EMAIL, CHAT or a custom type)", prefix)
		}
		if len(spec.Name) > protocol.MaxNameLength || len(spec.Type) > protocol.MaxNameLength || len(spec.ModelType) > protocol.MaxNameLength {
			return protocol.Failf(protocol.CodeInvalidRequest, "fields \"%s.name\", \"type\" and \"modelType\" are at most %d bytes", prefix, protocol.MaxNameLength)
		}
		if s.channel(spec.ID) != nil || seen[spec.ID] {
			return protocol.Failf(protocol.CodeInvalidState, "channel %s already exists", spec.ID)
		}
		seen[spec.ID] = true
	}
	return nil
}

func (s *Session) newChannel(spec protocol.ChannelSpec, group string, now time.Time) *channel.Channel {
	c := channel.New(spec, group, now, s.m.opts.TimelineSize)
	s.channels = append(s.channels, c)
	s.m.dir.watch(endpointOf(c.Spec()), s)
	return c
}

// addChannel creates an INACTIVE channel (UNAVAILABLE when another agent holds
// its endpoint) and emits its creation events.
func (s *Session) addChannel(spec protocol.ChannelSpec, group string) {
	now := time.Now()
	c := s.newChannel(spec, group, now)
	if h := s.m.dir.holder(endpointOf(c.Spec())); h != "" && h != s.ident.AgentID {
		_, _ = c.Fire(channel.Intent{Event: channel.EvEndpointTaken}, now, nil)
	}
	s.m.audit.Info("channel created", s.auditFields(c, "agent")...)
	s.emitCreated(c)
	s.stateDirty = true
}

// emitCreated emits channel.created, channel.infochanged, channel.initialized.
func (s *Session) emitCreated(c *channel.Channel) {
	parent := s.id
	if c.Group() != "" {
		parent = s.id + "." + c.Group()
	}
	s.emit(parent, protocol.EvChannelCreated, protocol.ChannelCreated{Channel: c.Spec()})
	s.emit(s.channelTarget(c), protocol.EvChannelInfoChanged, c.Info())
	s.emit(s.channelTarget(c), protocol.EvChannelInitialized, protocol.ChannelCreated{Channel: c.Spec()})
}

func (s *Session) removeChannel(data json.RawMessage) *protocol.Failure {
	var d protocol.RemoveChannelData
	if f := protocol.DecodeData(data, &d); f != nil {
		return f
	}
	if d.Channel == nil || d.Channel.ID == "" {
		return protocol.Failf(protocol.CodeInvalidRequest, "field \"data.channel.id\" is required")
	}
	t := protocol.Target{Session: s.id, Channel: d.Channel.ID}
	if d.ChannelGroup != nil {
		t.Group = d.ChannelGroup.ID
	}
	c, f := s.resolve(t)
	if f != nil {
		return f
	}
	if c.Active() {
		in := channel.Intent{Command: protocol.CmdRemoveChannel, Event: channel.EvDeactivate}
		if f := s.apply(c, in, "agent", true); f != nil {
			return f
		}
	}
	ep := endpointOf(c.Spec())
	s.m.dir.unwatch(ep, s)
	s.m.dir.release(ep, s.ident.AgentID)
	s.stopACWTimer(c)
	for i, x := range s.channels {
		if x == c {
			s.channels = append(s.channels[:i], s.channels[i+1:]...)
			break
		}
	}
	s.m.audit.Info("channel removed", s.auditFields(c, "agent")...)
	s.emit(s.channelTarget(c), protocol.EvChannelRemoved, protocol.ChannelRemoved{Channel: protocol.IDRef{ID: c.ID()}})
	s.stateDirty = true
	return nil
}

// logout deactivates every channel and ends the session. If the switch
// refuses one, the session stays (the agent is still logged in there) and
// the failure names the channels that could not be deactivated.
func (s *Session) logout(data json.RawMessage) *protocol.Failure {
	var d protocol.LogoutData
	if f := protocol.DecodeData(data, &d); f != nil {
		return f
	}
	var reason channel.Reason
	if d.Reason != "" {
		cat, f := s.loadCatalog()
		if f != nil {
			return f
		}
		if reason, f = cat.LogoutReason(string(d.Reason)); f != nil {
			return f
		}
	}
	var failed []string
	var first *protocol.Failure
	for _, c := range s.channels {
		if !c.Active() {
			continue
		}
		in := channel.Intent{Command: protocol.CmdLogout, Event: channel.EvDeactivate, Reason: reason}
		if f := s.apply(c, in, "agent", true); f != nil {
			failed = append(failed, c.ID()+": "+f.Message)
			if first == nil {
				first = f
			}
		}
	}
	if first != nil {
		return &protocol.Failure{Code: first.Code, Message: fmt.Sprintf("logout incomplete: %d channel(s) could not be deactivated", len(failed)),
			Context: strings.Join(failed, "; ")}
	}
	s.stateUpdated()
	s.recordEnd(time.Now())
	s.emit(s.id, protocol.EvSessionEnded, protocol.SessionEnded{Reason: "logout", LogoutCode: reason.Code})
	s.m.audit.Info("session logged out", zap.String("agent", s.ident.AgentID), zap.String("session", s.id), zap.String("reason", reason.Code))
	code := protocol.CloseSessionEnded
	s.endWith = &code
	return nil
}

// channelCommand runs a channel.* command on c.
func (s *Session) channelCommand(c *channel.Channel, req protocol.Request) *protocol.Failure {
	cat := &channel.Catalog{}
	if req.Command == protocol.CmdChannelNotReady || req.Command == protocol.CmdChannelDeactivate {
		var f *protocol.Failure
		if cat, f = s.loadCatalog(); f != nil {
			return f
		}
	}
	in, f := channel.ParseCommand(req.Command, req.Data, cat)
	if f != nil {
		return f
	}
	return s.apply(c, in, "agent", true)
}

// apply runs in on c: the channel's machine decides whether it is legal and
// whether it changes anything; a change that comes from the broker
// (viaSwitch) is made on the switch first, and the channel changes only if
// the switch accepted it. Then the change's events are emitted. cause names
// who asked, for the audit log.
func (s *Session) apply(c *channel.Channel, in channel.Intent, cause string, viaSwitch bool) *protocol.Failure {
	before := c.Info()
	var effect func() error
	if viaSwitch {
		effect = func() error {
			if f := s.switchCall(c, in); f != nil {
				return f
			}
			return nil
		}
	}
	changed, err := c.Fire(in, time.Now(), effect)
	if err != nil {
		if f, ok := err.(*protocol.Failure); ok {
			return f
		}
		return protocol.Failf(protocol.CodeInternal, "channel %s: %v", c.ID(), err)
	}
	if in.Event == channel.EvDeactivate {
		s.m.dir.release(endpointOf(c.Spec()), s.ident.AgentID)
	}
	if changed {
		s.changed(c, before, cause)
	}
	return nil
}

// switchCall makes the change in on the switch.
func (s *Session) switchCall(c *channel.Channel, in channel.Intent) *protocol.Failure {
	ref := s.ref(c)
	ad := s.m.adapter
	switch in.Event {
	case channel.EvActivate:
		ep := endpointOf(c.Spec())
		if holder, ok := s.m.dir.claim(ep, s.ident.AgentID, false); !ok {
			return protocol.Failf(protocol.CodeInvalidState, "%s is not allowed: endpoint %s %s is in use by %s", in.Command, ep.Type, ep.Name, holder)
		}
		f := s.call(func(ctx context.Context) error { return ad.Activate(ctx, ref, in.Queues) })
		if f != nil {
			s.m.dir.release(ep, s.ident.AgentID)
		}
		return f
	case channel.EvDeactivate:
		return s.call(func(ctx context.Context) error { return ad.Deactivate(ctx, ref, in.Reason.Code) })
	case channel.EvReady:
		return s.call(func(ctx context.Context) error { return ad.SetReady(ctx, ref) })
	case channel.EvNotReady, channel.EvACW:
		return s.call(func(ctx context.Context) error { return ad.SetNotReady(ctx, ref, in.Reason.Code) })
	}
	return protocol.Failf(protocol.CodeInternal, "no switch operation for %s", in.Event)
}

// changed emits the events of a channel change and logs it unsampled.
func (s *Session) changed(c *channel.Channel, before protocol.ChannelInfo, cause string) {
	info := c.Info()
	// Check first: building the fields costs allocations even when the
	// level filters the line out. When enabled, every change is logged.
	if ce := s.m.audit.Check(zap.InfoLevel, "channel state changed"); ce != nil {
		ce.Write(append(s.auditFields(c, cause),
			zap.String("from_state", before.State), zap.String("from_status", before.AgentStatus.Status),
			zap.String("from_reason", before.AgentStatus.LastReasonCode))...)
	}
	s.emit(s.channelTarget(c), protocol.EvChannelInfoChanged, info)
	s.stateDirty = true
	s.syncACWTimer(c)
}

func (s *Session) auditFields(c *channel.Channel, cause string) []zap.Field {
	info := c.Info()
	return []zap.Field{zap.String("agent", s.ident.AgentID), zap.String("session", s.id), zap.String("channel", c.ID()),
		zap.String("group", c.Group()), zap.String("state", info.State), zap.String("status", info.AgentStatus.Status),
		zap.String("reason", info.AgentStatus.LastReasonCode), zap.String("cause", cause)}
}
