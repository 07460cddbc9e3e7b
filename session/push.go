package session

import (
	"context"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/channel"
	"github.com/ctibroker/ctibroker/history"
	"github.com/ctibroker/ctibroker/protocol"
)

// Pusher receives what back offices are told (webhooks): an agent's status
// changes and interaction events as encoded protocol.WebhookRecords, each
// op's once committed (with the commit, in the session's outbox: ids
// "<version>-<i>"), in order. Push must not block. When the relay has
// appended them to its own outbox it acknowledges them with
// store.AckOutbox; a session restored on another node pushes what was not
// acknowledged again (the same messages: receivers deduplicate on ids).
type Pusher interface {
	Push(sid, agent string, ids []string, records [][]byte)
}

// Webhook message types.
const (
	PushAgentStatus  = "agent.status"
	PushRinging      = "interaction.ringing"
	PushDialing      = "interaction.dialing"
	PushCreated      = "interaction.created"
	PushEstablished  = "interaction.established"
	PushHeld         = "interaction.held"
	PushRetrieved    = "interaction.retrieved"
	PushReleased     = "interaction.released"
	PushPartyAdded   = "interaction.party.added"
	PushPartyRemoved = "interaction.party.removed"
	PushPartyChanged = "interaction.party.changed"
	PushDataChanged  = "interaction.data.changed"
	PushDTMFSent     = "interaction.dtmf.sent"
	PushCompleted    = "interaction.completed"
	PushTalkRecord   = "interaction.talkrecord"
	PushStateChanged = "interaction.changed"
)

// StatusPush is the data of agent.status: one channel's change.
type StatusPush struct {
	Channel   protocol.ChannelSpec `json:"channel"`
	Group     string               `json:"group,omitempty"`
	Previous  PushedStatus         `json:"previous"`
	Current   PushedStatus         `json:"current"`
	Since     int64                `json:"since"`
	ChangedBy *protocol.ChangedBy  `json:"changedBy,omitempty"`
	// Interaction: the channel's first interaction in progress, if any.
	Interaction *PushedInteraction `json:"interaction,omitempty"`
}

// PushedStatus is a channel's state, status and reason.
type PushedStatus struct {
	State      string `json:"state"`
	Status     string `json:"status"`
	ReasonCode string `json:"reasonCode,omitempty"`
	ReasonName string `json:"reasonName,omitempty"`
}

// PushedInteraction names an interaction.
type PushedInteraction struct {
	ID        string `json:"id"`
	Direction string `json:"direction"`
}

// InteractionPush is the data of the interaction.* messages.
type InteractionPush struct {
	Channel     string                `json:"channel"`
	Interaction *protocol.Interaction `json:"interaction"`
	// Previous: the state before (interaction.changed and the state
	// changes).
	Previous string `json:"previous,omitempty"`
	// Member: the party added, removed or changed.
	Member *protocol.Member `json:"member,omitempty"`
	Digits string           `json:"digits,omitempty"`
}

func pushedStatus(i protocol.ChannelInfo) PushedStatus {
	return PushedStatus{State: i.State, Status: i.AgentStatus.Status, ReasonCode: i.AgentStatus.LastReasonCode, ReasonName: i.AgentStatus.LastReasonName}
}

// push queues a message for back offices; it goes with the op's commit.
func (s *Session) push(typ string, data any) {
	if s.m.opts.Pusher == nil || s.ident.Supervisor() {
		return
	}
	raw, err := protocol.Marshal(data)
	if err != nil {
		s.logf(zap.ErrorLevel, "cannot encode a webhook message", zap.String("type", typ), zap.Error(err))
		return
	}
	rec, err := protocol.Marshal(protocol.WebhookRecord{Teams: s.teams,
		Msg: protocol.WebhookMessage{ID: newID(), Type: typ, Time: time.Now().UnixMilli(), AgentID: s.ident.AgentID, Data: raw}})
	if err != nil {
		return
	}
	s.journal.pushes = append(s.journal.pushes, rec)
}

// flushPushes hands the last commit's webhook records to the pusher.
func (s *Session) flushPushes() {
	recs, version := s.journal.takeRelay()
	if len(recs) == 0 {
		return
	}
	ids := make([]string, len(recs))
	for i := range recs {
		ids[i] = strconv.FormatUint(version, 10) + "-" + strconv.Itoa(i)
	}
	s.m.opts.Pusher.Push(s.id, s.ident.AgentID, ids, recs)
}

// pushLeftovers pushes again what a session restored here had committed
// but its previous node's relay had not acknowledged (it died between).
func (s *Session) pushLeftovers() {
	if s.m.opts.Pusher == nil || s.ident.Supervisor() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.m.opts.StoreTimeout)
	defer cancel()
	left, err := s.m.store.Outbox(ctx, s.id)
	if err != nil {
		s.logf(zap.WarnLevel, "cannot read the webhook messages the last node left; they stay for the next restore", zap.Error(err))
		return
	}
	if len(left) == 0 {
		return
	}
	ids, recs := make([]string, len(left)), make([][]byte, len(left))
	for i, e := range left {
		ids[i], recs[i] = e.ID, e.Data
	}
	s.m.opts.Pusher.Push(s.id, s.ident.AgentID, ids, recs)
}

// pushStatus tells back offices a channel's state changed.
func (s *Session) pushStatus(c *channel.Channel, before, after protocol.ChannelInfo) {
	if s.m.opts.Pusher == nil {
		return
	}
	p := StatusPush{Channel: c.Spec(), Group: c.Group(), Previous: pushedStatus(before), Current: pushedStatus(after),
		Since: time.Now().UnixMilli(), ChangedBy: after.ChangedBy}
	for _, ix := range s.channelInteractions(c) {
		if ix.Live() {
			p.Interaction = &PushedInteraction{ID: ix.ID(), Direction: ix.Direction()}
			break
		}
	}
	s.push(PushAgentStatus, p)
}

// pushInteraction tells back offices what an interaction event means.
func (s *Session) pushInteraction(name string, ev protocol.InteractionEvent) {
	if s.m.opts.Pusher == nil || ev.Interaction == nil {
		return
	}
	ix := ev.Interaction
	data := InteractionPush{Channel: ix.Channel, Interaction: ix, Previous: ev.Previous}
	prev := s.pushedIx[ix.ID]
	switch name {
	case protocol.EvInteractionCreated:
		switch ix.State {
		case protocol.IxAlerting:
			s.push(PushRinging, data)
		case protocol.IxDialing:
			s.push(PushDialing, data)
		default:
			s.push(PushCreated, data)
		}
	case protocol.EvInteractionInfoChanged:
		switch {
		case ev.Previous == protocol.IxHeld && ix.State == protocol.IxStarted:
			s.push(PushRetrieved, data)
		case ix.State == protocol.IxHeld && ev.Previous != protocol.IxHeld:
			s.push(PushHeld, data)
		case ix.State == protocol.IxStarted && ev.Previous != protocol.IxStarted && ev.Previous != "":
			s.push(PushEstablished, data)
		case ev.Previous != "" && ev.Previous != ix.State:
			s.push(PushStateChanged, data)
		}
		if prev != nil {
			s.pushMembers(data, prev.Members, ix.Members)
		}
	case protocol.EvInteractionDataChanged:
		s.push(PushDataChanged, data)
	case protocol.EvInteractionEnded:
		s.push(PushReleased, data)
	case protocol.EvInteractionCompleted:
		s.push(PushCompleted, data)
		delete(s.pushedIx, ix.ID)
		return
	}
	if s.pushedIx == nil {
		s.pushedIx = map[string]*protocol.Interaction{}
	}
	s.pushedIx[ix.ID] = ix
}

// pushMembers tells parties added, removed and changed.
func (s *Session) pushMembers(data InteractionPush, before, after []protocol.Member) {
	for i := range after {
		j := slices.IndexFunc(before, func(m protocol.Member) bool { return m.ID == after[i].ID })
		m := after[i]
		switch {
		case j < 0:
			data.Member = &m
			s.push(PushPartyAdded, data)
		case before[j] != after[i]:
			data.Member = &m
			s.push(PushPartyChanged, data)
		}
	}
	for i := range before {
		if !slices.ContainsFunc(after, func(m protocol.Member) bool { return m.ID == before[i].ID }) {
			m := before[i]
			data.Member = &m
			s.push(PushPartyRemoved, data)
		}
	}
}

// pushTalkRecord sends a completed interaction's talk record.
func (s *Session) pushTalkRecord(rec history.TalkRecord) {
	s.push(PushTalkRecord, rec)
}
