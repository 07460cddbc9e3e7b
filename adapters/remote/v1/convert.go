package adapterv1

import (
	"encoding/json"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/protocol"
)

// Conversions between the protocol's messages and the adapters package's
// types, for both sides (the broker's client and the SDK's server).

// Version is the protocol version this package speaks.
const Version = 1

// FromRef converts a channel reference.
func FromRef(r adapters.ChannelRef) *ChannelRef {
	return &ChannelRef{AgentId: r.AgentID, GroupId: r.GroupID, Channel: FromSpec(r.Channel)}
}

// ToRef converts a channel reference; nil gives the zero reference.
func ToRef(r *ChannelRef) adapters.ChannelRef {
	if r == nil {
		return adapters.ChannelRef{}
	}
	return adapters.ChannelRef{AgentID: r.AgentId, GroupID: r.GroupId, Channel: ToSpec(r.Channel)}
}

func FromSpec(s protocol.ChannelSpec) *ChannelSpec {
	return &ChannelSpec{Id: s.ID, Name: s.Name, Type: s.Type}
}

func ToSpec(s *ChannelSpec) protocol.ChannelSpec {
	if s == nil {
		return protocol.ChannelSpec{}
	}
	return protocol.ChannelSpec{ID: s.Id, Name: s.Name, Type: s.Type}
}

func FromLogin(l adapters.Login) *Login {
	return &Login{GroupId: l.GroupID, GroupName: l.GroupName, Channel: FromSpec(l.Channel), State: l.State, Status: l.Status,
		ReasonCode: l.ReasonCode, Queues: l.Queues}
}

func ToLogin(l *Login) adapters.Login {
	return adapters.Login{GroupID: l.GetGroupId(), GroupName: l.GetGroupName(), Channel: ToSpec(l.GetChannel()), State: l.GetState(),
		Status: l.GetStatus(), ReasonCode: l.GetReasonCode(), Queues: l.GetQueues()}
}

// FromEvent converts a switch event; an interaction is encoded as JSON.
func FromEvent(e adapters.Event) (*Event, error) {
	out := &Event{Kind: string(e.Kind), AgentId: e.AgentID, ChannelId: e.ChannelID, InteractionId: e.InteractionID,
		State: e.State, Status: e.Status, ReasonCode: e.ReasonCode, Holder: e.Holder, Error: e.Error, Cause: e.Cause, Data: e.Data}
	if e.Endpoint != (adapters.Endpoint{}) {
		out.Endpoint = &Endpoint{Type: e.Endpoint.Type, Name: e.Endpoint.Name}
	}
	if e.Interaction != nil {
		raw, err := protocol.Marshal(e.Interaction)
		if err != nil {
			return nil, err
		}
		out.InteractionJson = raw
	}
	return out, nil
}

// ToEvent converts a switch event, decoding its interaction.
func ToEvent(e *Event) (adapters.Event, error) {
	out := adapters.Event{Kind: adapters.EventKind(e.GetKind()), AgentID: e.GetAgentId(), ChannelID: e.GetChannelId(),
		InteractionID: e.GetInteractionId(), State: e.GetState(), Status: e.GetStatus(), ReasonCode: e.GetReasonCode(),
		Holder: e.GetHolder(), Error: e.GetError(), Cause: e.GetCause(), Data: e.GetData()}
	if ep := e.GetEndpoint(); ep != nil {
		out.Endpoint = adapters.Endpoint{Type: ep.Type, Name: ep.Name}
	}
	if len(e.GetInteractionJson()) > 0 {
		var ix protocol.Interaction
		if err := json.Unmarshal(e.GetInteractionJson(), &ix); err != nil {
			return out, err
		}
		out.Interaction = &ix
	}
	return out, nil
}
