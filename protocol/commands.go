package protocol

// Command names. What each command does, who may send it and how it is
// handled is the session package's command table.
const (
	CmdAddChannel        = "session.addchannel"
	CmdAddChannelGroup   = "session.addchannelgroup"
	CmdRemoveChannel     = "session.removechannel"
	CmdLogout            = "session.logout"
	CmdNotReadyReasons   = "session.request.externalnotreadyreasons"
	CmdLogoutReasons     = "session.request.externallogoutreasons"
	CmdAddressBook       = "session.request.incontact.addressbook"
	CmdChannelActivate   = "channel.activate"
	CmdChannelDeactivate = "channel.deactivate"
	CmdChannelReady      = "channel.ready"
	CmdChannelNotReady   = "channel.notready"

	// Interactions.
	CmdChannelDial          = "channel.dial"
	CmdDispositions         = "channel.request.externaldispositions"
	CmdInteractionAccept    = "interaction.accept"
	CmdInteractionReject    = "interaction.reject"
	CmdInteractionHold      = "interaction.hold"
	CmdInteractionRetrieve  = "interaction.retrieve"
	CmdInteractionRelease   = "interaction.release"
	CmdInteractionBlindXfer = "interaction.blindtransfer"
	CmdInteractionConsult   = "interaction.consult"
	CmdInteractionConsXfer  = "interaction.consulttransfer"
	CmdInteractionConsConf  = "interaction.consultconference"
	CmdInteractionSendDTMF  = "interaction.senddtmf"
	CmdInteractionSetData   = "interaction.setdata"
	CmdInteractionComplete  = "interaction.complete"

	// Supervisor actions on an agent.
	CmdSupervisorSetState = "supervisor.agent.setstate"
	CmdSupervisorLogout   = "supervisor.agent.logout"

	// The full protocol's spellings of session.logout and session.addchannel.
	CmdLogoutAlias     = "session.request.logout"
	CmdAddChannelAlias = "session.request.addchannel"
)

// Event names.
const (
	EvSessionInitialized = "session.initialized"
	EvSessionEnded       = "session.ended"
	// EvSessionConnectionsChanged: under session.multiconnect share, a
	// connection of the session came or went (to the others; no seq).
	EvSessionConnectionsChanged = "session.connections.changed"
	// EvSessionCTILinkChanged: the CTI adapter or its link to the switch
	// went down or came back.
	EvSessionCTILinkChanged  = "session.ctilink.changed"
	EvChannelCreated         = "channel.created"
	EvChannelInfoChanged     = "channel.infochanged"
	EvChannelInitialized     = "channel.initialized"
	EvChannelRemoved         = "channel.removed"
	EvStateUpdated           = "state.updated"
	EvNotReadyReasonsUpdated = "session.externalnotreadyreasons.updated"
	EvLogoutReasonsUpdated   = "session.externallogoutreasons.updated"
	EvAddressBookUpdated     = "session.incontact.addressbook.updated"
	EvAgentLegFailed         = "session.incontact.agentleg.failed"

	EvInteractionCreated     = "interaction.created"
	EvInteractionInfoChanged = "interaction.infochanged"
	EvInteractionDataChanged = "interaction.datachanged"
	EvInteractionEnded       = "interaction.ended"
	EvInteractionCompleted   = "interaction.completed"
	EvDispositionsUpdated    = "channel.externaldispositions.updated"
)

// EventDoc describes an event: Live events are a view (no seq, not
// replayed); the others are the session's history.
type EventDoc struct {
	Name string
	Live bool
	// Data is a zero value of the event's data type (for generated client
	// types).
	Data any
}

// eventTable lists every event the broker sends: the one place the
// clients' types and the transcripts' coverage are checked against.
var eventTable = []EventDoc{
	{EvSessionInitialized, false, SessionInitialized{}}, {EvSessionEnded, false, SessionEnded{}},
	{EvSessionConnectionsChanged, true, Connections{}}, {EvSessionCTILinkChanged, false, CTILinkChanged{}},
	{EvChannelCreated, false, ChannelCreated{}}, {EvChannelInfoChanged, false, ChannelInfo{}},
	{EvChannelInitialized, false, ChannelCreated{}}, {EvChannelRemoved, false, ChannelRemoved{}},
	{EvStateUpdated, false, StateUpdated{}}, {EvNotReadyReasonsUpdated, false, NotReadyReasons{}},
	{EvLogoutReasonsUpdated, false, LogoutReasons{}}, {EvAddressBookUpdated, false, AddressBooks{}},
	{EvAgentLegFailed, false, AgentLegFailed{}}, {EvInteractionCreated, false, InteractionEvent{}},
	{EvInteractionInfoChanged, false, InteractionEvent{}}, {EvInteractionDataChanged, false, InteractionEvent{}},
	{EvInteractionEnded, false, InteractionEvent{}}, {EvInteractionCompleted, false, InteractionEvent{}},
	{EvDispositionsUpdated, false, DispositionsUpdated{}},
	{EvSupervisorSnapshot, true, SupervisorSnapshot{}}, {EvSupervisorAgentChanged, true, AgentChanged{}},
	{EvSupervisorQueueChanged, true, QueueChanged{}},
}

// Events lists every event.
func Events() []EventDoc { return append([]EventDoc(nil), eventTable...) }

// TargetKind says what a command addresses.
type TargetKind int

// Target kinds.
const (
	TargetSession TargetKind = iota + 1
	TargetChannel
	TargetInteraction
)

func (k TargetKind) String() string {
	switch k {
	case TargetSession:
		return "session"
	case TargetChannel:
		return "channel"
	case TargetInteraction:
		return "interaction"
	}
	return "unknown"
}
