package session

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/channel"
	"github.com/ctibroker/ctibroker/protocol"
)

// The agent's channels: creating them, changing them through their state
// machines (and the switch), and the events and audit lines that follow.

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
		s.dropInteractions(c)
	}
	s.leftAfterCallWork(c)
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
	info.ChangedBy = s.changedBy
	if s.changedBy != nil {
		if s.setBy == nil {
			s.setBy = map[string]*protocol.ChangedBy{}
		}
		s.setBy[c.ID()] = s.changedBy
	} else {
		delete(s.setBy, c.ID())
	}
	s.emit(s.channelTarget(c), protocol.EvChannelInfoChanged, info)
	s.pushStatus(c, before, info)
	s.stateDirty = true
	s.syncACWTimer(c)
}

func (s *Session) auditFields(c *channel.Channel, cause string) []zap.Field {
	info := c.Info()
	return []zap.Field{zap.String("agent", s.ident.AgentID), zap.String("session", s.id), zap.String("channel", c.ID()),
		zap.String("group", c.Group()), zap.String("state", info.State), zap.String("status", info.AgentStatus.Status),
		zap.String("reason", info.AgentStatus.LastReasonCode), zap.String("cause", cause)}
}

func (s *Session) hasGroup(id string) bool {
	for _, g := range s.groups {
		if g == id {
			return true
		}
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
	var internal *adapters.InternalError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return protocol.Failf(protocol.CodeTimeout, "the switch did not answer within %s", s.m.opts.AdapterTimeout)
	case errors.Is(err, adapters.ErrLinkDown):
		return protocol.Failf(protocol.CodeCTILinkDown, "%v; retry once it is back", err)
	case errors.Is(err, adapters.ErrNotSupported):
		return protocol.Failf(protocol.CodeNotSupported, "the switch adapter does not support interaction control")
	case errors.As(err, &internal):
		return &protocol.Failure{Code: protocol.CodeInternal, Message: "internal error; the command was not applied", Context: internal.Context}
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
