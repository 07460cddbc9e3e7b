// Package adapters defines the contract between the broker and a CTI adapter:
// the calls the broker makes to apply a change on the telephony switch, and the
// events the switch pushes to the broker.
//
// Contract for adapter authors:
//   - Every call gets a context with the adapter.timeout deadline; return
//     promptly when it expires (the broker answers TIMEOUT). The broker changes
//     its state only after a call returned nil.
//   - Calls for one agent are never concurrent (the agent's session makes them
//     one at a time); calls for different agents are.
//   - A panic in a call is recovered and answered INTERNAL, but is a bug.
//   - Events() is read by one broker goroutine until Close; send without
//     holding locks the broker might need, and close the channel in Close.
package adapters

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/ctibroker/ctibroker/protocol"
)

// ErrLinkDown: the adapter cannot reach the switch (or the broker cannot
// reach the adapter). The broker answers CTI_LINK_DOWN, a transient
// failure, without waiting for a deadline.
var ErrLinkDown = errors.New("the CTI link is down")

// ErrNotSupported: the adapter does not implement the call (a remote
// adapter without call control or queue figures). The broker answers
// NOT_SUPPORTED.
var ErrNotSupported = errors.New("the adapter does not support this")

// InternalError: the adapter failed unexpectedly (a remote adapter's call
// panicked); Context says how. The broker answers INTERNAL, as for a panic
// of an adapter in its own process.
type InternalError struct{ Context string }

func (e *InternalError) Error() string { return "the adapter failed unexpectedly: " + e.Context }

// ChannelRef identifies a channel of an agent on the switch.
type ChannelRef struct {
	AgentID string
	GroupID string
	Channel protocol.ChannelSpec
}

// Login is a channel the agent is already logged into on the switch, reported
// when a session starts so that the broker can recreate it.
type Login struct {
	GroupID   string
	GroupName string
	Channel   protocol.ChannelSpec
	// State and Status are wire values (ACTIVE, ready, ...).
	State      string
	Status     string
	ReasonCode string
	Queues     []string
}

// Adapter bridges the broker to a telephony switch.
type Adapter interface {
	// Logins returns the channels the agent is logged into on the switch.
	Logins(ctx context.Context, agentID string) ([]Login, error)
	Activate(ctx context.Context, ch ChannelRef, queues []string) error
	Deactivate(ctx context.Context, ch ChannelRef, logoutReason string) error
	SetReady(ctx context.Context, ch ChannelRef) error
	// SetNotReady sets a not-ready reason; protocol.ReasonACW enters after-call work.
	SetNotReady(ctx context.Context, ch ChannelRef, reasonCode string) error
	NotReadyReasons(ctx context.Context, agentID string) ([]protocol.ReasonCode, error)
	LogoutReasons(ctx context.Context, agentID string) ([]protocol.LogoutReason, error)
	// AddressBook returns the static address book; agent entries carry
	// Properties.AgentID and skill entries Properties.Skill so that the broker
	// can fill in live state.
	AddressBook(ctx context.Context, agentID string) (protocol.AddressBooks, error)
	// Teams returns the teams the switch assigns the agent to; used when the
	// agent's token names none.
	Teams(ctx context.Context, agentID string) ([]string, error)
	// Events streams what happens on the switch.
	Events() <-chan Event
	Close() error
}

// CallControl is what an adapter implements to let desktops control their
// interactions. The broker changes an interaction only after a call
// returned nil (as for channel states); what happens without the agent
// asking (an offer, the far end answering or hanging up, a ring timeout) the
// switch reports with events carrying the interaction. An adapter without
// it answers every interaction command UNSUPPORTED.
type CallControl interface {
	// Dial starts an outbound interaction and returns its id; the switch
	// then reports it answered (InteractionChanged, STARTED) or ended.
	Dial(ctx context.Context, ch ChannelRef, destination string, data map[string]string) (string, error)
	Accept(ctx context.Context, ch ChannelRef, interactionID string) error
	// Reject declines an offered interaction: the switch puts it back in
	// its queue and forces the agent not ready (protocol.ReasonNoAnswer).
	Reject(ctx context.Context, ch ChannelRef, interactionID string) error
	Hold(ctx context.Context, ch ChannelRef, interactionID string) error
	Retrieve(ctx context.Context, ch ChannelRef, interactionID string) error
	Release(ctx context.Context, ch ChannelRef, interactionID string) error
	// BlindTransfer hands the interaction to destination (an agent id or a
	// queue name) without consulting.
	BlindTransfer(ctx context.Context, ch ChannelRef, interactionID, destination string) error
	// Consult puts the interaction on hold and opens a consult leg to
	// destination (an agent), returning the leg's id; the switch reports it
	// answered (InteractionChanged) or ended.
	Consult(ctx context.Context, ch ChannelRef, interactionID, destination string) (string, error)
	// ConsultTransfer hands the interaction's far party to the consulted
	// agent; ConsultConference joins the three. Both end the consult leg
	// on this agent's side.
	ConsultTransfer(ctx context.Context, ch ChannelRef, interactionID string) error
	ConsultConference(ctx context.Context, ch ChannelRef, interactionID string) error
	SendDTMF(ctx context.Context, ch ChannelRef, interactionID, digits string) error
	SetData(ctx context.Context, ch ChannelRef, interactionID string, data map[string]string) error
	// Complete reports the wrap-up done, with its disposition code.
	Complete(ctx context.Context, ch ChannelRef, interactionID, disposition string) error
	// Dispositions returns the wrap-up codes the agent may use.
	Dispositions(ctx context.Context, agentID string) ([]protocol.Disposition, error)
	// Interactions returns the agent's interactions in progress, to
	// recreate when a session starts while calls are up.
	Interactions(ctx context.Context, agentID string) ([]protocol.Interaction, error)
}

// QueueReporter is what an adapter implements to report its queues' live
// figures; the broker adds the agents' counts, shares the figures between
// its nodes, and sends QueuesChanged's changes to supervisors.
type QueueReporter interface {
	// Queues returns the figures of the queues this adapter sees.
	Queues(ctx context.Context) ([]protocol.QueueFigures, error)
	// QueueView names what Queues reports. Adapters of several broker nodes
	// that see one switch report the same view under the same name, and
	// the broker takes the latest; views of different names are parts of
	// the floor (a simulated switch per process) and are added up.
	QueueView() string
}

// Directory is an adapter that knows agents' names (for supervisors'
// views); "" when it does not know one.
type Directory interface {
	DisplayName(ctx context.Context, agentID string) (string, error)
}

// Registrar is an adapter that sends an agent's events only to the broker
// node that registered the agent last (a remote adapter serving several
// nodes). The broker registers an agent when its session starts on a node
// (Logins does it for a new session; Register for one taken over or failed
// over) and again when the CTI link comes back.
type Registrar interface {
	Register(ctx context.Context, agentID string) error
}

// Capabilities is implemented by an adapter whose optional parts depend on
// what it reaches (a remote adapter implements CallControl and
// QueueReporter, and asks its process whether it does).
type Capabilities interface {
	HasCallControl() bool
	HasQueues() bool
}

// SupportsCallControl returns a's call control, if it has one.
func SupportsCallControl(a Adapter) (CallControl, bool) {
	cc, ok := a.(CallControl)
	if c, probe := a.(Capabilities); ok && probe && !c.HasCallControl() {
		return nil, false
	}
	return cc, ok
}

// EventKind says what happened on the switch.
type EventKind string

// Switch events.
const (
	InteractionStarted EventKind = "interaction.start"
	// InteractionAnswered: the agent answered (ring time ends, talk starts).
	InteractionAnswered EventKind = "interaction.answer"
	InteractionEnded    EventKind = "interaction.end"
	// InteractionChanged: its state (the far end answered: STARTED) or
	// members changed on the switch.
	InteractionChanged EventKind = "interaction.change"
	// InteractionDataChanged: its attached data changed (Data: the keys).
	InteractionDataChanged EventKind = "interaction.data"
	// StatusForced: the switch changed the agent's state or status itself
	// (supervisor action on the switch, hard phone button).
	StatusForced EventKind = "status.forced"
	// EndpointTaken / EndpointFreed: someone outside this broker logged into
	// or out of an endpoint (Endpoint, by Holder).
	EndpointTaken  EventKind = "endpoint.taken"
	EndpointFreed  EventKind = "endpoint.freed"
	AgentLegFailed EventKind = "agentleg.failed"
	CatalogChanged EventKind = "catalog.changed"
	// QueuesChanged: a queue's figures changed (a QueueReporter's); the
	// broker reads them again. It names no agent.
	QueuesChanged EventKind = "queues.changed"
	// LinkChanged: the CTI link went down or came back (Error: why it is
	// down; empty when up). It names no agent; when the link is back the
	// broker registers its agents again and re-reads their state.
	LinkChanged        EventKind = "link.changed"
	AddressBookChanged EventKind = "addressbook.changed"
)

// Endpoint is a switch endpoint: a channel type and name (an extension).
type Endpoint struct {
	Type string `json:"type"`
	Name string `json:"name"`
}

// Event is one thing that happened on the switch.
type Event struct {
	Kind          EventKind
	AgentID       string
	ChannelID     string
	InteractionID string
	// State, Status, ReasonCode: for StatusForced, wire values.
	State      string
	Status     string
	ReasonCode string
	Endpoint   Endpoint
	Holder     string
	Error      string
	// Interaction: for InteractionStarted and InteractionChanged, what the
	// switch knows of it (nil: a bare interaction, ALERTING, inbound).
	Interaction *protocol.Interaction
	// Cause: for InteractionEnded (protocol.Cause*).
	Cause string
	Data  map[string]string
}

// Kind is one kind of adapter: how it is configured and built. An adapter
// package registers its kind from its init function (Register); the broker
// compiles in the kinds broker/adapters.go imports, and adapter.kind picks
// one. Its settings are the config section adapter.<kind>, with their
// defaults in broker/defaults.yaml.
type Kind struct {
	// Config returns a new, empty configuration (a pointer to a struct with
	// koanf tags) for the section to decode into.
	Config func() any
	// Validate checks a decoded configuration; its errors name the key
	// (without the adapter.<kind> prefix, which the caller adds).
	Validate func(cfg any, env Env) error
	// New builds the adapter from a validated configuration. It may reach
	// out (dial the switch); ctx bounds that, not the adapter's life.
	New func(cfg any, env Env) (Adapter, error)
	// Simulated: the kind talks to no real switch (a warning is logged
	// when agents authenticate, as in production).
	Simulated bool
}

// Env is what the broker tells an adapter about its setting.
type Env struct {
	// Authenticated: agents authenticate with tokens (auth.mode jwt);
	// otherwise the broker listens on loopback for development.
	Authenticated bool
	// Capacity is how many interactions a channel of a type (upper case)
	// holds at once (capacity.<type>): a switch routes only to channels
	// with room.
	Capacity map[string]int
	// Node is the broker node's id (node.id).
	Node string
	// Timeout is adapter.timeout, every call's deadline.
	Timeout time.Duration
}

var registry = map[string]Kind{}

// Register makes a kind of adapter available under name. It is called from
// init functions; a duplicate name is a programming error and panics.
func Register(name string, k Kind) {
	if _, dup := registry[name]; dup {
		panic("adapters: kind " + name + " registered twice")
	}
	registry[name] = k
}

// Lookup returns the kind registered under name.
func Lookup(name string) (Kind, bool) {
	k, ok := registry[name]
	return k, ok
}

// Kinds returns the registered kinds' names, sorted.
func Kinds() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Controlled is an adapter with an HTTP control API (the simulated
// switch's); ControlHandler is nil when the API is off.
type Controlled interface {
	ControlHandler() http.Handler
}
