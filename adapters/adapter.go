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

	"github.com/ctibroker/ctibroker/protocol"
)

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

// EventKind says what happened on the switch.
type EventKind string

// Switch events.
const (
	InteractionStarted EventKind = "interaction.start"
	// InteractionAnswered: the agent answered (ring time ends, talk starts).
	InteractionAnswered EventKind = "interaction.answer"
	InteractionEnded    EventKind = "interaction.end"
	// StatusForced: the switch changed the agent's state or status itself
	// (supervisor action on the switch, hard phone button).
	StatusForced EventKind = "status.forced"
	// EndpointTaken / EndpointFreed: someone outside this broker logged into
	// or out of an endpoint (Endpoint, by Holder).
	EndpointTaken      EventKind = "endpoint.taken"
	EndpointFreed      EventKind = "endpoint.freed"
	AgentLegFailed     EventKind = "agentleg.failed"
	CatalogChanged     EventKind = "catalog.changed"
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
}
