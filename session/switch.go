package session

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/channel"
	"github.com/ctibroker/ctibroker/protocol"
)

// onSwitchEvent applies something that happened on the switch.
func (s *Session) onSwitchEvent(ev adapters.Event) {
	switch ev.Kind {
	case adapters.InteractionStarted, adapters.InteractionEnded, adapters.InteractionAnswered,
		adapters.InteractionChanged, adapters.InteractionDataChanged:
		s.onInteraction(ev)
	case adapters.StatusForced:
		s.onStatusForced(ev)
	case adapters.AgentLegFailed:
		s.emit(s.id, protocol.EvAgentLegFailed, protocol.AgentLegFailed{Error: ev.Error, Channel: ev.ChannelID})
		s.m.audit.Info("agent leg failed", zap.String("agent", s.ident.AgentID), zap.String("session", s.id), zap.String("error", ev.Error))
	case adapters.CatalogChanged:
		s.catalog = nil
		cat, f := s.loadCatalog()
		if f != nil {
			s.logf(zap.WarnLevel, "could not reload the reason catalogs", zap.String("failure", f.Error()))
			return
		}
		s.emitCatalog(protocol.CmdNotReadyReasons, cat)
		s.emitCatalog(protocol.CmdLogoutReasons, cat)
	case adapters.AddressBookChanged:
		if s.ab != nil {
			s.ab.book = nil
		}
		s.refreshAddressBook()
	case adapters.LinkChanged:
		s.onLinkChanged(ev.Error)
	}
}

// onLinkChanged tells the desktop the CTI link went down (why) or came
// back (why is empty); when it is back, the switch is the truth: the
// session registers again and takes the switch's state.
func (s *Session) onLinkChanged(why string) {
	if s.ident.Supervisor() {
		return
	}
	switch {
	case why != "" && !s.linkDown:
		s.linkDown = true
		s.emit(s.id, protocol.EvSessionCTILinkChanged, protocol.CTILinkChanged{Reason: why})
	case why == "" && s.linkDown:
		// Up again after this session saw it down (an up for a session
		// that never did is the adapter's first word: nothing to say).
		s.linkDown = false
		s.emit(s.id, protocol.EvSessionCTILinkChanged, protocol.CTILinkChanged{Up: true})
		s.resyncFromSwitch()
	}
}

// resyncFromSwitch reads the agent's logins and interactions from the
// switch again (registering the agent with the adapter) and emits what
// differs as ordinary events.
func (s *Session) resyncFromSwitch() {
	var logins []adapters.Login
	if f := s.call(func(ctx context.Context) (err error) {
		logins, err = s.m.adapter.Logins(ctx, s.ident.AgentID)
		return err
	}); f != nil {
		s.logf(zap.WarnLevel, "could not read the agent's state from the switch again", zap.String("failure", f.Error()))
		return
	}
	for _, c := range s.channels {
		i := slices.IndexFunc(logins, func(l adapters.Login) bool { return l.Channel.ID == c.ID() })
		info := c.Info()
		switch {
		case i < 0 || logins[i].State != protocol.StateActive:
			if c.Active() {
				s.onStatusForced(adapters.Event{Kind: adapters.StatusForced, ChannelID: c.ID(), State: protocol.StateInactive, Status: protocol.StatusNotReady})
			}
		case !c.Active() || info.AgentStatus.Status != logins[i].Status || info.AgentStatus.LastReasonCode != logins[i].ReasonCode:
			s.onStatusForced(adapters.Event{Kind: adapters.StatusForced, ChannelID: c.ID(), State: protocol.StateActive,
				Status: logins[i].Status, ReasonCode: logins[i].ReasonCode})
		}
	}
	s.initInteractionsFromSwitch()
}

func (s *Session) onStatusForced(ev adapters.Event) {
	c := s.channel(ev.ChannelID)
	if c == nil {
		s.logf(zap.WarnLevel, "forced status on an unknown channel", zap.String("channel", ev.ChannelID))
		return
	}
	state, err := channel.MachineState(ev.State, ev.Status)
	if err != nil {
		s.logf(zap.WarnLevel, "switch forced an unknown status", zap.Error(err))
		return
	}
	ep := endpointOf(c.Spec())
	before := c.Info()
	if ev.State == protocol.StateActive {
		s.m.dir.claim(ep, s.ident.AgentID, true)
	}
	if c.Force(state, s.reasonFor(ev.ReasonCode), time.Now()) {
		s.changed(c, before, "switch.forced")
	}
	if ev.State != protocol.StateActive {
		s.m.dir.release(ep, s.ident.AgentID)
	}
}

// onEndpointChanged makes channels UNAVAILABLE while another agent (or a
// device outside the broker) holds their endpoint, and INACTIVE again after.
func (s *Session) onEndpointChanged(ep adapters.Endpoint) {
	holder := s.m.dir.holder(ep)
	for _, c := range s.channels {
		if endpointOf(c.Spec()) != ep {
			continue
		}
		ev := channel.EvEndpointFreed
		if holder != "" && holder != s.ident.AgentID {
			ev = channel.EvEndpointTaken
		}
		// Refused unless it fits (taken only while INACTIVE: an ACTIVE
		// channel keeps its login).
		_ = s.apply(c, channel.Intent{Command: string(ev), Event: ev}, "endpoint:"+holder, false)
	}
}

func (s *Session) acwPolicy(c *channel.Channel) ACWPolicy {
	if p, ok := s.m.opts.ACW[strings.ToLower(c.Spec().Type)]; ok {
		return p
	}
	return s.m.opts.ACW["default"]
}

// syncACWTimer starts the after-call-work timeout when the channel is in
// after-call work, and stops it otherwise.
func (s *Session) syncACWTimer(c *channel.Channel) {
	inACW := c.InAfterCallWork()
	if _, running := s.acwTimers[c.ID()]; running == inACW {
		return
	}
	s.stopACWTimer(c)
	p := s.acwPolicy(c)
	if !inACW || p.Timeout <= 0 {
		return
	}
	id := c.ID()
	if s.acwTimers == nil {
		s.acwGen, s.acwTimers = map[string]uint64{}, map[string]*time.Timer{}
	}
	s.acwGen[id]++
	gen := s.acwGen[id]
	s.acwTimers[id] = time.AfterFunc(p.Timeout, func() {
		s.post(func(s *Session) { s.onACWTimeout(id, gen) })
	})
}

func (s *Session) stopACWTimer(c *channel.Channel) {
	if t, ok := s.acwTimers[c.ID()]; ok {
		t.Stop()
		delete(s.acwTimers, c.ID())
		s.acwGen[c.ID()]++
	}
}

func (s *Session) onACWTimeout(id string, gen uint64) {
	if s.acwGen[id] != gen {
		return // stale: the channel left after-call work meanwhile
	}
	delete(s.acwTimers, id)
	c := s.channel(id)
	if c == nil || !c.InAfterCallWork() {
		return
	}
	if ix := s.awaitingDisposition(c); ix != nil {
		return // wrap-up lasts until the required disposition is given
	}
	in := channel.Intent{Command: protocol.CmdChannelReady, Event: channel.EvReady}
	if s.acwPolicy(c).Then == ACWThenPrevious {
		in = c.PreviousIdle()
	}
	if f := s.apply(c, in, "acw.timeout", true); f != nil && f.Code != protocol.CodeInvalidState {
		s.logf(zap.WarnLevel, "after-call work timeout: the switch refused to end it", zap.String("channel", id), zap.String("failure", f.Error()))
	}
}

// addressBook returns the encoded address book with live properties.
func (s *Session) addressBook() ([]byte, *protocol.Failure) {
	if s.ab == nil {
		s.ab = &addressBookState{}
	}
	if s.ab.book == nil {
		var book protocol.AddressBooks
		if f := s.call(func(ctx context.Context) (err error) {
			book, err = s.m.adapter.AddressBook(ctx, s.ident.AgentID)
			return err
		}); f != nil {
			return nil, f
		}
		if book.AddressBooks == nil {
			book.AddressBooks = []protocol.AddressBook{}
		}
		s.ab.book = &book
	}
	s.m.dir.fillAddressBook(s.ab.book)
	msg, err := protocol.Marshal(s.ab.book)
	if err != nil {
		return nil, protocol.Failf(protocol.CodeInternal, "address book could not be encoded: %v", err)
	}
	return msg, nil
}

// markAddressBookDirty may be called from any goroutine. Updates are
// coalesced: at most one refresh is pending, and refreshes of one session are
// at least AddressBookInterval apart.
func (s *Session) markAddressBookDirty() {
	if !s.abDirty.CompareAndSwap(false, true) {
		return
	}
	s.post(func(s *Session) {
		var last time.Time
		if s.ab != nil {
			last = s.ab.lastAt
		}
		wait := s.m.opts.AddressBookInterval - time.Since(last)
		if wait <= 0 {
			s.refreshAddressBook()
			return
		}
		time.AfterFunc(wait, func() { s.post(func(s *Session) { s.refreshAddressBook() }) })
	})
}

func (s *Session) refreshAddressBook() {
	s.abDirty.Store(false)
	if s.ab == nil || !s.ab.realtime {
		return
	}
	msg, f := s.addressBook()
	if f != nil {
		s.logf(zap.WarnLevel, "could not refresh the address book", zap.String("failure", f.Error()))
		return
	}
	s.ab.lastAt = time.Now()
	if string(msg) == string(s.ab.last) {
		return
	}
	s.ab.last = msg
	s.emit(s.id, protocol.EvAddressBookUpdated, json.RawMessage(msg))
}
