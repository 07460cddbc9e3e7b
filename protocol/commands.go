package protocol

// Command names.
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
)

// Event names.
const (
	EvSessionInitialized     = "session.initialized"
	EvSessionEnded           = "session.ended"
	EvChannelCreated         = "channel.created"
	EvChannelInfoChanged     = "channel.infochanged"
	EvChannelInitialized     = "channel.initialized"
	EvChannelRemoved         = "channel.removed"
	EvStateUpdated           = "state.updated"
	EvNotReadyReasonsUpdated = "session.externalnotreadyreasons.updated"
	EvLogoutReasonsUpdated   = "session.externallogoutreasons.updated"
	EvAddressBookUpdated     = "session.incontact.addressbook.updated"
	EvAgentLegFailed         = "session.incontact.agentleg.failed"
)

// TargetKind says what a command addresses.
type TargetKind int

const (
	TargetSession TargetKind = iota + 1
	TargetChannel
)

// CommandDoc describes one command of the protocol.
type CommandDoc struct {
	Name   string
	Target TargetKind
}

var commands = map[string]CommandDoc{}

func init() {
	for _, c := range []CommandDoc{
		{CmdAddChannel, TargetSession},
		{CmdAddChannelGroup, TargetSession},
		{CmdRemoveChannel, TargetSession},
		{CmdLogout, TargetSession},
		{CmdNotReadyReasons, TargetSession},
		{CmdLogoutReasons, TargetSession},
		{CmdAddressBook, TargetSession},
		{CmdChannelActivate, TargetChannel},
		{CmdChannelDeactivate, TargetChannel},
		{CmdChannelReady, TargetChannel},
		{CmdChannelNotReady, TargetChannel},
	} {
		commands[c.Name] = c
	}
}

// LookupCommand returns the command's description, or false when unknown.
func LookupCommand(name string) (CommandDoc, bool) {
	c, ok := commands[name]
	return c, ok
}
