package session

import (
	"encoding/json"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/channel"
	"github.com/ctibroker/ctibroker/protocol"
)

// Command is one command of the protocol: everything dispatch, authorization,
// the README and `ctibroker commands` know about it. Adding a command means
// one entry here, its handler, its golden transcript and its README row.
type Command struct {
	Name   string
	Target protocol.TargetKind
	// Roles may send it; a session of another role gets FORBIDDEN.
	Roles []string
	// Mutates: it changes the agent's channels (on the switch too).
	Mutates bool
	// Catalog: the reason catalogs are loaded before it runs.
	Catalog bool
	// Cacheable: a repeated requestId gets the first reply again instead of
	// running it again. Reads are not remembered: they are safe to repeat
	// and their replies can be large.
	Cacheable bool
	// Doc says what it does, in one line.
	Doc    string
	handle func(s *Session, r *request) (json.RawMessage, *protocol.Failure)
}

// request is a command being handled: the request, its parsed target, and
// what dispatch looked up for it.
type request struct {
	protocol.Request
	target  protocol.Target
	channel *channel.Channel     // the target channel (channel and interaction commands)
	ix      *channel.Interaction // the target interaction (interaction commands)
	catalog *channel.Catalog     // the reason catalogs (commands with Catalog)
}

var (
	agents      = []string{RoleAgent}
	everyone    = []string{RoleAgent, RoleSupervisor, RoleAdmin}
	supervisors = []string{RoleSupervisor, RoleAdmin}
)

// commandTable is the protocol's commands, in documentation order.
var commandTable = []Command{
	{Name: protocol.CmdAddChannel, Target: protocol.TargetSession, Roles: agents, Mutates: true, Cacheable: true,
		Doc: "add a channel (INACTIVE; UNAVAILABLE while another holds its endpoint)", handle: (*Session).cmdAddChannel},
	{Name: protocol.CmdAddChannelGroup, Target: protocol.TargetSession, Roles: agents, Mutates: true, Cacheable: true,
		Doc: "add a channel group and its channels", handle: (*Session).cmdAddChannelGroup},
	{Name: protocol.CmdRemoveChannel, Target: protocol.TargetSession, Roles: agents, Mutates: true, Cacheable: true,
		Doc: "remove a channel, logging it out first when ACTIVE", handle: (*Session).cmdRemoveChannel},
	{Name: protocol.CmdLogout, Target: protocol.TargetSession, Roles: everyone, Mutates: true, Cacheable: true,
		Doc: "log every channel out and end the session", handle: (*Session).cmdLogout},
	{Name: protocol.CmdNotReadyReasons, Target: protocol.TargetSession, Roles: everyone, Catalog: true,
		Doc: "send the not-ready reason catalog", handle: (*Session).cmdCatalog},
	{Name: protocol.CmdLogoutReasons, Target: protocol.TargetSession, Roles: everyone, Catalog: true,
		Doc: "send the logout reason catalog", handle: (*Session).cmdCatalog},
	{Name: protocol.CmdAddressBook, Target: protocol.TargetSession, Roles: everyone,
		Doc: "send the address book with live states, optionally as they change", handle: (*Session).cmdAddressBook},
	{Name: protocol.CmdChannelActivate, Target: protocol.TargetChannel, Roles: agents, Mutates: true, Cacheable: true,
		Doc: "log the channel in on queues (ACTIVE, not ready)", handle: (*Session).cmdChannel},
	{Name: protocol.CmdChannelDeactivate, Target: protocol.TargetChannel, Roles: agents, Mutates: true, Catalog: true, Cacheable: true,
		Doc: "log the channel out, with an optional logout reason", handle: (*Session).cmdChannel},
	{Name: protocol.CmdChannelReady, Target: protocol.TargetChannel, Roles: agents, Mutates: true, Cacheable: true,
		Doc: "make the agent ready on the channel", handle: (*Session).cmdChannel},
	{Name: protocol.CmdChannelNotReady, Target: protocol.TargetChannel, Roles: agents, Mutates: true, Catalog: true, Cacheable: true,
		Doc: "make the agent not ready with a reason code (acw: after-call work)", handle: (*Session).cmdChannel},
	{Name: protocol.CmdChannelDial, Target: protocol.TargetChannel, Roles: agents, Mutates: true, Cacheable: true,
		Doc: "start an outbound interaction: {destination, data?} (DIALING, then STARTED or ended with a cause)", handle: (*Session).cmdDial},
	{Name: protocol.CmdDispositions, Target: protocol.TargetChannel, Roles: agents,
		Doc: "send the channel's disposition (wrap-up code) catalog", handle: (*Session).cmdDispositions},
	{Name: protocol.CmdInteractionAccept, Target: protocol.TargetInteraction, Roles: agents, Mutates: true, Cacheable: true,
		Doc: "answer an ALERTING interaction", handle: (*Session).cmdInteraction},
	{Name: protocol.CmdInteractionReject, Target: protocol.TargetInteraction, Roles: agents, Mutates: true, Cacheable: true,
		Doc: "decline an ALERTING interaction: it goes back to its queue and the agent is made not ready (missed)", handle: (*Session).cmdInteraction},
	{Name: protocol.CmdInteractionHold, Target: protocol.TargetInteraction, Roles: agents, Mutates: true, Cacheable: true,
		Doc: "put a STARTED interaction on hold", handle: (*Session).cmdInteraction},
	{Name: protocol.CmdInteractionRetrieve, Target: protocol.TargetInteraction, Roles: agents, Mutates: true, Cacheable: true,
		Doc: "take a HELD interaction back", handle: (*Session).cmdInteraction},
	{Name: protocol.CmdInteractionRelease, Target: protocol.TargetInteraction, Roles: agents, Mutates: true, Cacheable: true,
		Doc: "hang up / end the interaction (then wrap-up per policy)", handle: (*Session).cmdInteraction},
	{Name: protocol.CmdInteractionBlindXfer, Target: protocol.TargetInteraction, Roles: agents, Mutates: true, Cacheable: true,
		Doc: "transfer to {destination} (an agent or a queue) without consulting", handle: (*Session).cmdInteractionData},
	{Name: protocol.CmdInteractionConsult, Target: protocol.TargetInteraction, Roles: agents, Mutates: true, Cacheable: true,
		Doc: "hold the interaction and open a consult leg to {destination} (an agent)", handle: (*Session).cmdConsult},
	{Name: protocol.CmdInteractionConsXfer, Target: protocol.TargetInteraction, Roles: agents, Mutates: true, Cacheable: true,
		Doc: "complete a consult as a transfer: the far party goes to the consulted agent", handle: (*Session).cmdConsult},
	{Name: protocol.CmdInteractionConsConf, Target: protocol.TargetInteraction, Roles: agents, Mutates: true, Cacheable: true,
		Doc: "complete a consult as a conference of the three", handle: (*Session).cmdConsult},
	{Name: protocol.CmdInteractionSendDTMF, Target: protocol.TargetInteraction, Roles: agents, Mutates: true, Cacheable: true,
		Doc: "send {digits} (0-9 * # A-D) on a STARTED interaction", handle: (*Session).cmdInteractionData},
	{Name: protocol.CmdInteractionSetData, Target: protocol.TargetInteraction, Roles: agents, Mutates: true, Cacheable: true,
		Doc: "merge {data} into the attached data (an empty value deletes a key)", handle: (*Session).cmdInteractionData},
	{Name: protocol.CmdInteractionComplete, Target: protocol.TargetInteraction, Roles: agents, Mutates: true, Cacheable: true,
		Doc: "end an ENDED interaction's wrap-up, with {disposition?}", handle: (*Session).cmdComplete},
	{Name: protocol.CmdAddChannelAlias, Target: protocol.TargetSession, Roles: agents, Mutates: true, Cacheable: true,
		Doc: "the full protocol's spelling of session.addchannel", handle: (*Session).cmdAddChannel},
	{Name: protocol.CmdLogoutAlias, Target: protocol.TargetSession, Roles: everyone, Mutates: true, Cacheable: true,
		Doc: "the full protocol's spelling of session.logout", handle: (*Session).cmdLogout},
	{Name: protocol.CmdSupervisorSetState, Target: protocol.TargetSession, Roles: supervisors, Mutates: true, Cacheable: true,
		Doc: "set a team member's state: {agentId, channel?, status: ready|not_ready, reasoncode?} (any node)", handle: (*Session).cmdSupervisorAction},
	{Name: protocol.CmdSupervisorLogout, Target: protocol.TargetSession, Roles: supervisors, Mutates: true, Cacheable: true,
		Doc: "log a team member's channel(s) out: {agentId, channel?, reason?} (any node)", handle: (*Session).cmdSupervisorAction},
	{Name: protocol.CmdSupervisorSubscribe, Target: protocol.TargetSession, Roles: everyone, Cacheable: true,
		Doc: "watch agents (supervisors: their teams; agents: themselves): a snapshot, then every change", handle: (*Session).cmdSubscribe},
	{Name: protocol.CmdSupervisorUnsubscribe, Target: protocol.TargetSession, Roles: everyone, Cacheable: true,
		Doc: "stop a watch", handle: (*Session).cmdUnsubscribe},
}

// commandsByName indexes the table. It is built in init: the handlers in
// the table reach it (through the op loop), which a variable's initializer
// may not.
var commandsByName = map[string]*Command{}

func init() {
	for i := range commandTable {
		commandsByName[commandTable[i].Name] = &commandTable[i]
	}
}

// Commands returns the command table, in documentation order.
func Commands() []Command { return slices.Clone(commandTable) }

// metricCommand is a command's metric label: known commands only, so that
// clients cannot grow the metric's cardinality.
func metricCommand(name string) string {
	if _, ok := commandsByName[name]; ok {
		return name
	}
	return "unknown"
}

// execute runs one decoded request and returns its reply. It never panics:
// a panic (an adapter bug, say) is an INTERNAL failure.
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
	data, f := s.dispatch(in.Request)
	if f != nil {
		return protocol.FailureReply(in, f)
	}
	return protocol.SuccessReply(in.Request, data)
}

// dispatch checks a request against the command table, the target and the
// caller's role, then runs the command's handler.
func (s *Session) dispatch(req protocol.Request) (json.RawMessage, *protocol.Failure) {
	if s.journal.unsynced || !s.m.Healthy() {
		// Fail before touching the switch: nothing could be acknowledged.
		return nil, protocol.Failf(protocol.CodeUnavailable, "the session store is unreachable; retry later")
	}
	cmd, ok := commandsByName[req.Command]
	if !ok {
		return nil, protocol.Failf(protocol.CodeUnknownCommand, "unknown command %q", req.Command)
	}
	var tgt protocol.Target
	var err error
	if cmd.Target == protocol.TargetInteraction {
		var it protocol.InteractionTarget
		it, err = protocol.ParseInteractionTarget(req.Target)
		tgt = it.Target
	} else {
		tgt, err = protocol.ParseTarget(req.Target)
	}
	if err != nil {
		return nil, protocol.Failf(protocol.CodeInvalidTarget, "%v", err)
	}
	if tgt.Session != s.id {
		if owner := s.m.owner(tgt.Session); owner != "" && owner != s.ident.AgentID {
			return nil, protocol.Failf(protocol.CodeForbidden, "session %s belongs to another agent", tgt.Session)
		}
		return nil, protocol.Failf(protocol.CodeNotFound, "no session %s", tgt.Session)
	}
	if !slices.Contains(cmd.Roles, s.ident.Role) {
		if s.ident.Supervisor() {
			return nil, protocol.Failf(protocol.CodeForbidden, "supervisor sessions are read-only: %s is for agents", req.Command)
		}
		return nil, protocol.Failf(protocol.CodeForbidden, "%s is for %s", req.Command, strings.Join(cmd.Roles, ", "))
	}
	r := &request{Request: req, target: tgt}
	switch cmd.Target {
	case protocol.TargetSession:
		if !tgt.IsSession() {
			return nil, protocol.Failf(protocol.CodeInvalidTarget, "%s targets a session, not %q", req.Command, req.Target)
		}
	case protocol.TargetChannel:
		if tgt.IsSession() {
			return nil, protocol.Failf(protocol.CodeInvalidTarget, "%s targets a channel: <session>.<channel> or <session>.<group>.<channel>", req.Command)
		}
		var f *protocol.Failure
		if r.channel, f = s.resolve(tgt); f != nil {
			return nil, f
		}
	case protocol.TargetInteraction:
		var f *protocol.Failure
		if r.channel, r.ix, f = s.resolveInteraction(req.Target); f != nil {
			return nil, f
		}
	}
	if cmd.Catalog {
		var f *protocol.Failure
		if r.catalog, f = s.catalogFor(req.Command); f != nil {
			return nil, f
		}
	}
	return cmd.handle(s, r)
}

// catalogFor returns the reason catalogs for a command: an explicit request
// for a catalog always reads the switch; the others use the cached ones,
// and a command that names no reason needs none read.
func (s *Session) catalogFor(command string) (*channel.Catalog, *protocol.Failure) {
	if command == protocol.CmdNotReadyReasons || command == protocol.CmdLogoutReasons {
		s.catalog = nil
	}
	return s.loadCatalog()
}

func (s *Session) cmdAddChannel(r *request) (json.RawMessage, *protocol.Failure) {
	var d protocol.AddChannelData
	if f := protocol.DecodeData(r.Data, &d); f != nil {
		return nil, f
	}
	if d.Channel == nil {
		return nil, protocol.Failf(protocol.CodeInvalidRequest, "field \"data.channel\" is required")
	}
	if f := s.checkNewChannels("", []protocol.ChannelSpec{*d.Channel}); f != nil {
		return nil, f
	}
	s.addChannel(*d.Channel, "")
	return r.Data, nil
}

func (s *Session) cmdAddChannelGroup(r *request) (json.RawMessage, *protocol.Failure) {
	var d protocol.AddChannelGroupData
	if f := protocol.DecodeData(r.Data, &d); f != nil {
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
	return r.Data, nil
}

func (s *Session) cmdRemoveChannel(r *request) (json.RawMessage, *protocol.Failure) {
	var d protocol.RemoveChannelData
	if f := protocol.DecodeData(r.Data, &d); f != nil {
		return nil, f
	}
	if d.Channel == nil || d.Channel.ID == "" {
		return nil, protocol.Failf(protocol.CodeInvalidRequest, "field \"data.channel.id\" is required")
	}
	t := protocol.Target{Session: s.id, Channel: d.Channel.ID}
	if d.ChannelGroup != nil {
		t.Group = d.ChannelGroup.ID
	}
	c, f := s.resolve(t)
	if f != nil {
		return nil, f
	}
	if c.Active() {
		if f := s.apply(c, channel.Intent{Command: protocol.CmdRemoveChannel, Event: channel.EvDeactivate}, "agent", true); f != nil {
			return nil, f
		}
	}
	ep := endpointOf(c.Spec())
	s.m.dir.unwatch(ep, s)
	s.m.dir.release(ep, s.ident.AgentID)
	s.stopACWTimer(c)
	s.channels = slices.DeleteFunc(s.channels, func(x *channel.Channel) bool { return x == c })
	s.m.audit.Info("channel removed", s.auditFields(c, "agent")...)
	s.emit(s.channelTarget(c), protocol.EvChannelRemoved, protocol.ChannelRemoved{Channel: protocol.IDRef{ID: c.ID()}})
	s.stateDirty = true
	return r.Data, nil
}

// cmdLogout deactivates every channel and ends the session. If the switch
// refuses one, the session stays (the agent is still logged in there) and
// the failure names the channels that could not be deactivated.
func (s *Session) cmdLogout(r *request) (json.RawMessage, *protocol.Failure) {
	var d protocol.LogoutData
	if f := protocol.DecodeData(r.Data, &d); f != nil {
		return nil, f
	}
	var reason channel.Reason
	if d.Reason != "" {
		cat, f := s.loadCatalog()
		if f != nil {
			return nil, f
		}
		if reason, f = cat.LogoutReason(string(d.Reason)); f != nil {
			return nil, f
		}
	}
	var failed []string
	var first *protocol.Failure
	for _, c := range s.channels {
		if !c.Active() {
			continue
		}
		if f := s.apply(c, channel.Intent{Command: protocol.CmdLogout, Event: channel.EvDeactivate, Reason: reason}, "agent", true); f != nil {
			failed = append(failed, c.ID()+": "+f.Message)
			first = cmpOr(first, f)
		}
	}
	if first != nil {
		return nil, &protocol.Failure{Code: first.Code, Message: fmt.Sprintf("logout incomplete: %d channel(s) could not be deactivated", len(failed)),
			Context: strings.Join(failed, "; ")}
	}
	s.stateUpdated()
	s.recordEnd(time.Now())
	s.emit(s.id, protocol.EvSessionEnded, protocol.SessionEnded{Reason: "logout", LogoutCode: reason.Code})
	s.m.audit.Info("session logged out", zap.String("agent", s.ident.AgentID), zap.String("session", s.id), zap.String("reason", reason.Code))
	code := protocol.CloseSessionEnded
	s.endWith = &code
	return r.Data, nil
}

func cmpOr[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

func (s *Session) cmdCatalog(r *request) (json.RawMessage, *protocol.Failure) {
	var d struct{}
	if f := protocol.DecodeData(r.Data, &d); f != nil {
		return nil, f
	}
	s.emitCatalog(r.Command, r.catalog)
	return r.Data, nil
}

func (s *Session) cmdAddressBook(r *request) (json.RawMessage, *protocol.Failure) {
	var d protocol.AddressBookRequest
	if f := protocol.DecodeData(r.Data, &d); f != nil {
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

// cmdChannel runs a channel.* command on its channel.
func (s *Session) cmdChannel(r *request) (json.RawMessage, *protocol.Failure) {
	cat := r.catalog
	if cat == nil {
		cat = &channel.Catalog{}
	}
	in, f := channel.ParseCommand(r.Command, r.Data, cat)
	if f != nil {
		return nil, f
	}
	// A required disposition keeps the agent in wrap-up: only after-call
	// work itself and logging out are allowed until it is given.
	if in.Event == channel.EvReady || in.Event == channel.EvNotReady {
		if ix := s.awaitingDisposition(r.channel); ix != nil {
			return nil, protocol.Failf(protocol.CodeInvalidState, "%s is not allowed: interaction %s awaits its disposition (interaction.complete)", r.Command, ix.ID())
		}
	}
	if f := s.apply(r.channel, in, "agent", true); f != nil {
		return nil, f
	}
	return r.Data, nil
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
