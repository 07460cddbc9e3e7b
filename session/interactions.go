package session

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/channel"
	"github.com/ctibroker/ctibroker/history"
	"github.com/ctibroker/ctibroker/protocol"
)

// Interactions: a channel holds interactions (calls, chats, e-mails); each
// runs its own state machine (channel.Interaction). The switch reports
// offers, answers and ends; the agent's commands change them through the
// adapter's CallControl, and the broker applies a change only once the
// switch accepted it (as for channel states). An ended interaction stays,
// awaiting wrap-up, until it is completed: by interaction.complete, or when
// its channel leaves after-call work (policy none or optional: then with
// an interaction.completed event without disposition, never silently). All
// owned by the goroutine running the session's ops.

// Disposition policies (acw.<type>.disposition).
const (
	DispositionNone     = "none"
	DispositionOptional = "optional"
	DispositionRequired = "required"
)

// callControl returns the adapter's call control, or UNSUPPORTED.
func (s *Session) callControl() (adapters.CallControl, *protocol.Failure) {
	cc, ok := adapters.SupportsCallControl(s.m.adapter)
	if !ok {
		return nil, protocol.Failf(protocol.CodeNotSupported, "the switch adapter does not support interaction control")
	}
	return cc, nil
}

// sortedInteractions returns the session's interactions, oldest first.
func (s *Session) sortedInteractions() []*channel.Interaction {
	out := make([]*channel.Interaction, 0, len(s.ixs))
	for _, ix := range s.ixs {
		out = append(out, ix)
	}
	slices.SortFunc(out, func(a, b *channel.Interaction) int {
		return cmp.Or(cmp.Compare(a.Created(), b.Created()), strings.Compare(a.ID(), b.ID()))
	})
	return out
}

// channelInteractions returns the channel's interactions, oldest first.
func (s *Session) channelInteractions(c *channel.Channel) []*channel.Interaction {
	return slices.DeleteFunc(s.sortedInteractions(), func(ix *channel.Interaction) bool { return ix.Channel() != c.ID() })
}

// liveInteractions counts c's interactions in progress (not ended).
func (s *Session) liveInteractions(c *channel.Channel) int {
	n := 0
	for _, ix := range s.channelInteractions(c) {
		if ix.Live() {
			n++
		}
	}
	return n
}

func (s *Session) ixTarget(c *channel.Channel, ix *channel.Interaction) string {
	return s.channelTarget(c) + "." + ix.ID()
}

func (s *Session) capacity(c *channel.Channel) int {
	if n := s.m.opts.Capacity[strings.ToUpper(c.Spec().Type)]; n > 0 {
		return n
	}
	return 1
}

// resolveInteraction finds a command's interaction.
func (s *Session) resolveInteraction(raw string) (*channel.Channel, *channel.Interaction, *protocol.Failure) {
	t, err := protocol.ParseInteractionTarget(raw)
	if err != nil {
		return nil, nil, protocol.Failf(protocol.CodeInvalidTarget, "%v", err)
	}
	c, f := s.resolve(t.Target)
	if f != nil {
		return nil, nil, f
	}
	ix := s.ixs[t.Interaction]
	if ix == nil || ix.Channel() != c.ID() {
		return nil, nil, protocol.Failf(protocol.CodeNotFound, "no interaction %s on channel %s", t.Interaction, c.ID())
	}
	return c, ix, nil
}

// addInteraction starts tracking an interaction on c and tells the desktop.
func (s *Session) addInteraction(c *channel.Channel, info protocol.Interaction, cause string) *protocol.Failure {
	if s.ixs[info.ID] != nil {
		return protocol.Failf(protocol.CodeInvalidState, "interaction %s exists", info.ID)
	}
	if len(s.ixs) >= protocol.MaxInteractions {
		return protocol.Failf(protocol.CodeInvalidState, "the session holds %d interactions, at most %d", len(s.ixs), protocol.MaxInteractions)
	}
	now := time.Now()
	info.Channel = c.ID()
	if info.MediaType == "" {
		info.MediaType = c.Spec().Type
	}
	ix, err := channel.NewInteraction(info, now.UnixMilli())
	if err != nil {
		return protocol.Failf(protocol.CodeInvalidRequest, "%v", err)
	}
	before := c.Info()
	changed, err := c.StartInteraction(info.ID, now)
	if err != nil {
		return protocol.Failf(protocol.CodeInvalidState, "%v", err)
	}
	if s.ixs == nil {
		s.ixs = map[string]*channel.Interaction{}
	}
	s.ixs[info.ID] = ix
	s.recordInteraction(c, info.ID, history.InteractionStart, now)
	s.emit(s.channelTarget(c), protocol.EvInteractionCreated, protocol.InteractionEvent{Interaction: ptr(ix.Info())})
	s.journal.force = true
	s.stateDirty = true // state.updated and the supervisors' view list it
	if changed {
		s.changed(c, before, cause)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// fireInteraction moves ix and tells the desktop.
func (s *Session) fireInteraction(c *channel.Channel, ix *channel.Interaction, ev channel.IxEvent) *protocol.Failure {
	prev, err := ix.Fire(ev, "", time.Now().UnixMilli())
	if err != nil {
		return protocol.Failf(protocol.CodeInvalidState, "%v", err)
	}
	if ev == channel.IxAccept || ev == channel.IxConnect {
		s.recordInteraction(c, ix.ID(), history.InteractionAnswer, time.Now())
	}
	s.emit(s.ixTarget(c, ix), protocol.EvInteractionInfoChanged, protocol.InteractionEvent{Interaction: ptr(ix.Info()), Previous: prev})
	s.journal.force = true
	s.stateDirty = true
	return nil
}

// endInteraction ends ix with cause: the channel leaves busy (into
// after-call work per policy), and an interaction that needs no wrap-up is
// completed at once.
func (s *Session) endInteraction(c *channel.Channel, ix *channel.Interaction, cause string) {
	now := time.Now()
	// After-call work follows an interaction, and an outbound attempt
	// whatever its outcome (agents log failed calls too); not an inbound
	// offer that rang out, was rejected or abandoned: nothing to wrap up.
	unanswered := cause == protocol.CauseNoAnswer || cause == protocol.CauseRejected || cause == protocol.CauseAbandoned
	wrapUp := ix.Direction() == protocol.DirOutbound || !unanswered
	if _, err := ix.Fire(channel.IxEnd, cause, now.UnixMilli()); err != nil {
		return // already over
	}
	s.emit(s.ixTarget(c, ix), protocol.EvInteractionEnded, protocol.InteractionEvent{Interaction: ptr(ix.Info())})
	s.journal.force = true
	s.stateDirty = true
	before := c.Info()
	policy := s.acwPolicy(c)
	changed, err := c.EndInteraction(ix.ID(), policy.Auto && wrapUp, s.reasonFor(protocol.ReasonACW), now)
	if err == nil {
		s.m.dir.observeHandleTime(c.Queues(), now.Sub(time.UnixMilli(ix.Created())))
		s.recordInteraction(c, ix.ID(), history.InteractionEnd, now)
	}
	switch {
	case !wrapUp || ix.Parent() != "": // a consult leg is wrapped up with its call
		s.completeInteraction(c, ix, "")
	case c.InAfterCallWork():
		ix.EnterACW(now.UnixMilli())
	case policy.Disposition != DispositionRequired:
		s.completeInteraction(c, ix, "")
	}
	if changed {
		s.changed(c, before, "interaction."+cause)
	}
}

// completeInteraction ends ix's wrap-up and forgets it.
func (s *Session) completeInteraction(c *channel.Channel, ix *channel.Interaction, disposition string) {
	ix.SetDisposition(disposition)
	if _, err := ix.Fire(channel.IxComplete, "", time.Now().UnixMilli()); err != nil {
		return
	}
	info := ix.Info()
	s.emit(s.ixTarget(c, ix), protocol.EvInteractionCompleted, protocol.InteractionEvent{Interaction: &info})
	talk := history.Entry{Kind: history.KindTalk, Channel: c.ID(), Group: c.Group(), Type: c.Spec().Type, Interaction: info.ID, Record: &info, At: info.Completed}
	s.journal.timeline = append(s.journal.timeline, s.entry(talk))
	rec := history.TalkRecords([]history.Entry{talk})[0]
	s.count(rec)
	if s.m.opts.Pusher != nil {
		s.pushTalkRecord(rec)
	}
	delete(s.ixs, ix.ID())
	s.journal.force = true
}

// awaitingDisposition returns the first ended interaction of c whose
// wrap-up needs a disposition it has not had.
func (s *Session) awaitingDisposition(c *channel.Channel) *channel.Interaction {
	if s.acwPolicy(c).Disposition != DispositionRequired {
		return nil
	}
	for _, ix := range s.channelInteractions(c) {
		if ix.State() == protocol.IxEnded {
			return ix
		}
	}
	return nil
}

// leftAfterCallWork completes the wrap-up of c's ended interactions once
// the channel is out of after-call work (policy none or optional): each
// with an interaction.completed event, so a status chosen during wrap-up
// never completes one silently.
func (s *Session) leftAfterCallWork(c *channel.Channel) {
	if c.InAfterCallWork() || c.InInteraction() {
		return
	}
	for _, ix := range s.channelInteractions(c) {
		if ix.State() == protocol.IxEnded && (s.acwPolicy(c).Disposition != DispositionRequired || !c.Active()) {
			s.completeInteraction(c, ix, "")
		}
	}
}

// onInteraction applies what the switch reported about an interaction.
func (s *Session) onInteraction(ev adapters.Event) {
	c := s.channel(ev.ChannelID)
	if c == nil {
		s.logf(zap.WarnLevel, "interaction on an unknown channel", zap.String("channel", ev.ChannelID), zap.String("interaction", ev.InteractionID))
		return
	}
	ix := s.ixs[ev.InteractionID]
	var f *protocol.Failure
	switch ev.Kind {
	case adapters.InteractionStarted:
		info := protocol.Interaction{ID: ev.InteractionID, State: protocol.IxAlerting, Direction: protocol.DirInbound}
		if ev.Interaction != nil {
			info = *ev.Interaction
			info.ID = ev.InteractionID
		}
		if protocol.ValidateID(info.ID) != nil {
			s.logf(zap.WarnLevel, "ignoring an interaction with an invalid id from the switch", zap.String("interaction", info.ID))
			return
		}
		f = s.addInteraction(c, info, "switch."+string(ev.Kind))
	case adapters.InteractionAnswered, adapters.InteractionChanged:
		if ix == nil {
			break
		}
		if ev.Interaction != nil {
			ix.SetMembers(ev.Interaction.Members)
		}
		if ix.Can(channel.IxConnect) == nil && (ev.Kind == adapters.InteractionAnswered || ev.Interaction == nil || ev.Interaction.State == protocol.IxStarted) {
			f = s.fireInteraction(c, ix, channel.IxConnect)
		} else {
			s.emit(s.ixTarget(c, ix), protocol.EvInteractionInfoChanged, protocol.InteractionEvent{Interaction: ptr(ix.Info()), Previous: ix.State()})
			s.journal.force = true
		}
	case adapters.InteractionDataChanged:
		if ix != nil && protocol.ValidateData(ev.Data) == nil && ix.MergeData(ev.Data) {
			s.emit(s.ixTarget(c, ix), protocol.EvInteractionDataChanged, protocol.InteractionEvent{Interaction: ptr(ix.Info())})
			s.journal.force = true
		}
	case adapters.InteractionEnded:
		if ix != nil {
			s.endInteraction(c, ix, cmp.Or(ev.Cause, protocol.CauseRemote))
		}
	}
	if f != nil {
		s.logf(zap.WarnLevel, "switch interaction event does not fit the session", zap.String("interaction", ev.InteractionID), zap.String("failure", f.Error()))
	}
}

// interactionCommand describes an interaction command that moves the
// machine: the event it fires and the switch call that must succeed first.
type interactionCommand struct {
	event channel.IxEvent
	cause string // for the commands that end it
	call  func(cc adapters.CallControl, ctx context.Context, ref adapters.ChannelRef, id string) error
}

var interactionCommands = map[string]interactionCommand{
	protocol.CmdInteractionAccept:   {event: channel.IxAccept, call: adapters.CallControl.Accept},
	protocol.CmdInteractionReject:   {event: channel.IxEnd, cause: protocol.CauseRejected, call: adapters.CallControl.Reject},
	protocol.CmdInteractionHold:     {event: channel.IxHold, call: adapters.CallControl.Hold},
	protocol.CmdInteractionRetrieve: {event: channel.IxRetrieve, call: adapters.CallControl.Retrieve},
	protocol.CmdInteractionRelease:  {event: channel.IxEnd, cause: protocol.CauseReleased, call: adapters.CallControl.Release},
}

// cmdInteraction runs accept, reject, hold, retrieve and release.
func (s *Session) cmdInteraction(r *request) (json.RawMessage, *protocol.Failure) {
	cc, f := s.callControl()
	if f != nil {
		return nil, f
	}
	def := interactionCommands[r.Command]
	if r.ix.Can(def.event) != nil || (r.Command == protocol.CmdInteractionReject && r.ix.State() != protocol.IxAlerting) {
		return nil, protocol.Failf(protocol.CodeInvalidState, "%s is not allowed: interaction %s is %s", r.Command, r.ix.ID(), r.ix.State())
	}
	ref := s.ref(r.channel)
	if f := s.call(func(ctx context.Context) error { return def.call(cc, ctx, ref, r.ix.ID()) }); f != nil {
		return nil, f
	}
	if def.event == channel.IxEnd {
		s.endInteraction(r.channel, r.ix, def.cause)
		return nil, nil
	}
	return nil, s.fireInteraction(r.channel, r.ix, def.event)
}

// cmdDial starts an outbound interaction on a channel.
func (s *Session) cmdDial(r *request) (json.RawMessage, *protocol.Failure) {
	cc, f := s.callControl()
	if f != nil {
		return nil, f
	}
	var d struct {
		Destination string            `json:"destination"`
		Data        map[string]string `json:"data"`
	}
	if f := decodeData(r, &d); f != nil {
		return nil, f
	}
	if f := checkDestination(d.Destination); f != nil {
		return nil, f
	}
	if err := protocol.ValidateData(d.Data); err != nil {
		return nil, protocol.Failf(protocol.CodeInvalidRequest, "data: %v", err)
	}
	c := r.channel
	if !c.Active() {
		return nil, protocol.Failf(protocol.CodeInvalidState, "%s is not allowed: channel %s is %s", r.Command, c.ID(), c.Info().State)
	}
	if n := s.liveInteractions(c); n >= s.capacity(c) {
		return nil, protocol.Failf(protocol.CodeInvalidState, "%s is not allowed: channel %s is at its capacity (%d in progress)", r.Command, c.ID(), n)
	}
	if ix := s.awaitingDisposition(c); ix != nil {
		return nil, protocol.Failf(protocol.CodeInvalidState, "%s is not allowed: interaction %s awaits its disposition", r.Command, ix.ID())
	}
	ref := s.ref(c)
	var id string
	if f := s.call(func(ctx context.Context) (err error) {
		id, err = cc.Dial(ctx, ref, d.Destination, d.Data)
		return err
	}); f != nil {
		return nil, f
	}
	if protocol.ValidateID(id) != nil {
		return nil, protocol.Failf(protocol.CodeAdapterError, "the switch returned an invalid interaction id")
	}
	info := protocol.Interaction{ID: id, Direction: protocol.DirOutbound, State: protocol.IxDialing, From: c.Spec().Name,
		To: d.Destination, Data: d.Data, Members: []protocol.Member{{ID: "remote", Role: protocol.RoleCaller, Address: d.Destination, State: protocol.MemberRinging}}}
	if f := s.addInteraction(c, info, "agent.dial"); f != nil {
		return nil, f
	}
	out, _ := json.Marshal(map[string]string{"interaction": s.channelTarget(c) + "." + id})
	return out, nil
}

// cmdInteractionData runs blindtransfer, senddtmf and setdata.
func (s *Session) cmdInteractionData(r *request) (json.RawMessage, *protocol.Failure) {
	cc, f := s.callControl()
	if f != nil {
		return nil, f
	}
	var d struct {
		Destination string            `json:"destination"`
		Digits      string            `json:"digits"`
		Data        map[string]string `json:"data"`
	}
	if f := decodeData(r, &d); f != nil {
		return nil, f
	}
	ref, id := s.ref(r.channel), r.ix.ID()
	switch r.Command {
	case protocol.CmdInteractionBlindXfer:
		if f := checkDestination(d.Destination); f != nil {
			return nil, f
		}
		if st := r.ix.State(); st != protocol.IxStarted && st != protocol.IxHeld {
			return nil, protocol.Failf(protocol.CodeInvalidState, "%s is not allowed: interaction %s is %s", r.Command, id, st)
		}
		if f := s.call(func(ctx context.Context) error { return cc.BlindTransfer(ctx, ref, id, d.Destination) }); f != nil {
			return nil, f
		}
		s.endInteraction(r.channel, r.ix, protocol.CauseTransferred)
	case protocol.CmdInteractionSendDTMF:
		if d.Digits == "" || len(d.Digits) > protocol.MaxDTMFDigits || strings.Trim(d.Digits, "0123456789*#ABCDabcd") != "" {
			return nil, protocol.Failf(protocol.CodeInvalidRequest, "digits: 1 to %d of 0-9 * # A-D", protocol.MaxDTMFDigits)
		}
		if st := r.ix.State(); st != protocol.IxStarted {
			return nil, protocol.Failf(protocol.CodeInvalidState, "%s is not allowed: interaction %s is %s", r.Command, id, st)
		}
		if f := s.call(func(ctx context.Context) error { return cc.SendDTMF(ctx, ref, id, d.Digits) }); f != nil {
			return nil, f
		}
		s.push(PushDTMFSent, InteractionPush{Channel: r.channel.ID(), Interaction: ptr(r.ix.Info()), Digits: d.Digits})
	case protocol.CmdInteractionSetData:
		if len(d.Data) == 0 {
			return nil, protocol.Failf(protocol.CodeInvalidRequest, "data: an object of keys to set (an empty value deletes one)")
		}
		if err := protocol.ValidateData(d.Data); err != nil {
			return nil, protocol.Failf(protocol.CodeInvalidRequest, "data: %v", err)
		}
		if !r.ix.Live() {
			return nil, protocol.Failf(protocol.CodeInvalidState, "%s is not allowed: interaction %s is %s", r.Command, id, r.ix.State())
		}
		if f := s.call(func(ctx context.Context) error { return cc.SetData(ctx, ref, id, d.Data) }); f != nil {
			return nil, f
		}
		if r.ix.MergeData(d.Data) {
			s.emit(s.ixTarget(r.channel, r.ix), protocol.EvInteractionDataChanged, protocol.InteractionEvent{Interaction: ptr(r.ix.Info())})
			s.journal.force = true
		}
	}
	return nil, nil
}

// cmdComplete ends an interaction's wrap-up, with its disposition.
func (s *Session) cmdComplete(r *request) (json.RawMessage, *protocol.Failure) {
	cc, f := s.callControl()
	if f != nil {
		return nil, f
	}
	var d struct {
		Disposition string `json:"disposition"`
	}
	if f := decodeData(r, &d); f != nil {
		return nil, f
	}
	if st := r.ix.State(); st != protocol.IxEnded {
		return nil, protocol.Failf(protocol.CodeInvalidState, "%s is not allowed: interaction %s is %s", r.Command, r.ix.ID(), st)
	}
	policy := s.acwPolicy(r.channel).Disposition
	if d.Disposition == "" && policy == DispositionRequired {
		return nil, protocol.Failf(protocol.CodeInvalidRequest, "disposition: required for %s interactions", strings.ToLower(r.channel.Spec().Type))
	}
	if d.Disposition != "" {
		cat, f := s.dispositionsFor(r.channel, true)
		if f != nil {
			return nil, f
		}
		info := r.ix.Info()
		if !slices.ContainsFunc(cat, func(x protocol.Disposition) bool { return x.Code == d.Disposition && x.AppliesTo(&info) }) {
			return nil, protocol.Failf(protocol.CodeInvalidRequest, "disposition: %q is not a code for this interaction (channel.request.externaldispositions lists them)", d.Disposition)
		}
	}
	ref, id := s.ref(r.channel), r.ix.ID()
	if f := s.call(func(ctx context.Context) error { return cc.Complete(ctx, ref, id, d.Disposition) }); f != nil {
		return nil, f
	}
	s.completeInteraction(r.channel, r.ix, d.Disposition)
	return nil, nil
}

// dispositionsFor returns the wrap-up codes for c's media type, read from
// the switch once per session (fresh: read again).
func (s *Session) dispositionsFor(c *channel.Channel, cached bool) ([]protocol.Disposition, *protocol.Failure) {
	if s.dispositions == nil || !cached {
		cc, f := s.callControl()
		if f != nil {
			return nil, f
		}
		var all []protocol.Disposition
		if f := s.call(func(ctx context.Context) (err error) {
			all, err = cc.Dispositions(ctx, s.ident.AgentID)
			return err
		}); f != nil {
			return nil, f
		}
		s.dispositions = all
	}
	return slices.DeleteFunc(slices.Clone(s.dispositions), func(d protocol.Disposition) bool {
		return d.MediaType != "" && !strings.EqualFold(d.MediaType, c.Spec().Type)
	}), nil
}

// cmdDispositions sends the channel's disposition catalog.
func (s *Session) cmdDispositions(r *request) (json.RawMessage, *protocol.Failure) {
	cat, f := s.dispositionsFor(r.channel, false)
	if f != nil {
		return nil, f
	}
	s.emit(s.channelTarget(r.channel), protocol.EvDispositionsUpdated, protocol.DispositionsUpdated{Dispositions: nonNil(cat)})
	return nil, nil
}

func decodeData(r *request, v any) *protocol.Failure {
	if len(r.Data) == 0 || string(r.Data) == "null" {
		return nil
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		return protocol.Failf(protocol.CodeInvalidRequest, "data: %v", err)
	}
	return nil
}

func checkDestination(d string) *protocol.Failure {
	if d == "" || len(d) > protocol.MaxDestinationLength || strings.ContainsFunc(d, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return protocol.Failf(protocol.CodeInvalidRequest, "destination: 1 to %d printable bytes", protocol.MaxDestinationLength)
	}
	return nil
}

// initInteractionsFromSwitch recreates the interactions the switch reports
// for a new session (calls up while no session existed: a broker restart).
func (s *Session) initInteractionsFromSwitch() {
	cc, ok := adapters.SupportsCallControl(s.m.adapter)
	if !ok {
		return
	}
	var list []protocol.Interaction
	if f := s.call(func(ctx context.Context) (err error) {
		list, err = cc.Interactions(ctx, s.ident.AgentID)
		return err
	}); f != nil {
		s.logf(zap.WarnLevel, "could not read the agent's interactions from the switch", zap.String("failure", f.Error()))
		return
	}
	for _, info := range list {
		c := s.channel(info.Channel)
		if c == nil || !c.Active() || protocol.ValidateID(info.ID) != nil {
			continue
		}
		ix, err := channel.NewInteraction(info, time.Now().UnixMilli())
		if err != nil || len(s.ixs) >= protocol.MaxInteractions {
			continue
		}
		if _, err := c.StartInteraction(info.ID, time.Now()); err != nil && !c.InInteraction() {
			continue
		}
		if s.ixs == nil {
			s.ixs = map[string]*channel.Interaction{}
		}
		s.ixs[info.ID] = ix
	}
}

// emitInteractions sends interaction.created for c's interactions (a full
// state on attach).
func (s *Session) emitInteractions(c *channel.Channel) {
	for _, ix := range s.channelInteractions(c) {
		s.emit(s.channelTarget(c), protocol.EvInteractionCreated, protocol.InteractionEvent{Interaction: ptr(ix.Info())})
	}
}

// dropInteractions ends and completes c's interactions: the channel was
// logged out, and its calls with it.
func (s *Session) dropInteractions(c *channel.Channel) {
	for _, ix := range s.channelInteractions(c) {
		if ix.Live() {
			if _, err := ix.Fire(channel.IxEnd, protocol.CauseReleased, time.Now().UnixMilli()); err == nil {
				s.emit(s.ixTarget(c, ix), protocol.EvInteractionEnded, protocol.InteractionEvent{Interaction: ptr(ix.Info())})
			}
		}
		s.completeInteraction(c, ix, "")
	}
}

// consultLeg returns the consult leg opened about ix on c.
func (s *Session) consultLeg(c *channel.Channel, ix *channel.Interaction) *channel.Interaction {
	for _, k := range s.channelInteractions(c) {
		if k.Parent() == ix.ID() && k.Live() {
			return k
		}
	}
	return nil
}

// cmdConsult runs consult, consulttransfer and consultconference, all on
// the interaction consulted about.
func (s *Session) cmdConsult(r *request) (json.RawMessage, *protocol.Failure) {
	cc, f := s.callControl()
	if f != nil {
		return nil, f
	}
	c, ix, id, ref := r.channel, r.ix, r.ix.ID(), s.ref(r.channel)
	if ix.Parent() != "" {
		return nil, protocol.Failf(protocol.CodeInvalidState, "%s is not allowed: %s is itself a consult leg", r.Command, id)
	}
	leg := s.consultLeg(c, ix)
	if r.Command == protocol.CmdInteractionConsult {
		var d struct {
			Destination string `json:"destination"`
		}
		if f := decodeData(r, &d); f != nil {
			return nil, f
		}
		if f := checkDestination(d.Destination); f != nil {
			return nil, f
		}
		if st := ix.State(); (st != protocol.IxStarted && st != protocol.IxHeld) || leg != nil {
			return nil, protocol.Failf(protocol.CodeInvalidState, "%s is not allowed: interaction %s is %s (or has a consult leg)", r.Command, id, st)
		}
		var kid string
		if f := s.call(func(ctx context.Context) (err error) {
			kid, err = cc.Consult(ctx, ref, id, d.Destination)
			return err
		}); f != nil {
			return nil, f
		}
		if protocol.ValidateID(kid) != nil {
			return nil, protocol.Failf(protocol.CodeAdapterError, "the switch returned an invalid interaction id")
		}
		if ix.State() == protocol.IxStarted {
			if f := s.fireInteraction(c, ix, channel.IxHold); f != nil {
				return nil, f
			}
		}
		info := protocol.Interaction{ID: kid, Direction: protocol.DirInternal, State: protocol.IxDialing, From: c.Spec().Name, To: d.Destination,
			Parent: id, Members: []protocol.Member{{ID: d.Destination, Role: protocol.RoleConsult, Name: d.Destination, State: protocol.MemberRinging}}}
		if f := s.addInteraction(c, info, "agent.consult"); f != nil {
			return nil, f
		}
		out, _ := json.Marshal(map[string]string{"interaction": s.channelTarget(c) + "." + kid})
		return out, nil
	}
	if leg == nil || leg.State() != protocol.IxStarted {
		return nil, protocol.Failf(protocol.CodeInvalidState, "%s is not allowed: interaction %s has no answered consult leg", r.Command, id)
	}
	if r.Command == protocol.CmdInteractionConsXfer {
		if f := s.call(func(ctx context.Context) error { return cc.ConsultTransfer(ctx, ref, id) }); f != nil {
			return nil, f
		}
		s.endInteraction(c, leg, protocol.CauseTransferred)
		s.endInteraction(c, ix, protocol.CauseTransferred)
		return nil, nil
	}
	if f := s.call(func(ctx context.Context) error { return cc.ConsultConference(ctx, ref, id) }); f != nil {
		return nil, f
	}
	members := append(ix.Info().Members, protocol.Member{ID: leg.Info().To, Role: protocol.RoleConsult, Name: leg.Info().To, State: protocol.MemberConnected})
	s.endInteraction(c, leg, protocol.CauseTransferred)
	ix.SetMembers(members)
	if ix.State() == protocol.IxHeld {
		return nil, s.fireInteraction(c, ix, channel.IxRetrieve)
	}
	return nil, nil
}

// count adds a completed interaction to the day's counters (a new UTC day
// starts them again) and has state.updated carry them.
func (s *Session) count(rec history.TalkRecord) {
	st := history.Stats([]history.TalkRecord{rec})
	day := time.Now().UTC().Format(time.DateOnly)
	if s.today.Day != day {
		s.today = protocol.CallCounters{Day: day}
	}
	t := &s.today
	t.Handled += st.Handled
	t.InboundAnswered += st.InboundAnswered
	t.InboundMissed += st.InboundMissed
	t.OutboundAttempted += st.OutboundAttempted
	t.OutboundAnswered += st.OutboundAnswered
	if st.Handled > 0 {
		t.TalkMs += rec.ActiveMs
		t.HoldMs += rec.HeldMs
		t.HandleMs += rec.HandleMs
	}
	s.stateDirty = true
}
