package protocol

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
)

// Channel states.
const (
	StateInactive    = "INACTIVE"
	StateUnavailable = "UNAVAILABLE"
	StateActive      = "ACTIVE"
)

// Agent statuses on a channel.
const (
	StatusReady             = "ready"
	StatusNotReady          = "not_ready"
	StatusAfterCallWork     = "after_call_work"
	StatusBusy              = "busy"
	StatusBusyReady         = "busy_ready"
	StatusBusyNotReady      = "busy_not_ready"
	StatusBusyAfterCallWork = "busy_after_call_work"
	// StatusLoggedOut is only used by the aggregate agent status of
	// state.updated when no channel is ACTIVE.
	StatusLoggedOut = "logged_out"
)

// ReasonACW is the reserved not-ready reason code that enters after-call work.
const ReasonACW = "acw"

// ChannelSpec describes a channel in session.addchannel / addchannelgroup and
// in channel.created. Name is the switch endpoint (an extension, a mailbox).
type ChannelSpec struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Type      string `json:"type"`
	ModelType string `json:"modelType,omitempty"`
}

// AddChannelData is the data of session.addchannel.
type AddChannelData struct {
	Channel *ChannelSpec `json:"channel"`
}

// ChannelGroupSpec describes a channel group.
type ChannelGroupSpec struct {
	ID       string        `json:"id"`
	Name     string        `json:"name"`
	Channels []ChannelSpec `json:"channels"`
}

// AddChannelGroupData is the data of session.addchannelgroup.
type AddChannelGroupData struct {
	ChannelGroup *ChannelGroupSpec `json:"channelGroup"`
}

// IDRef references an object by id.
type IDRef struct {
	ID string `json:"id"`
}

// RemoveChannelData is the data of session.removechannel. ChannelGroup is
// required when the channel belongs to a group.
type RemoveChannelData struct {
	Channel      *IDRef `json:"channel"`
	ChannelGroup *IDRef `json:"channelGroup,omitempty"`
}

// LogoutData is the data of session.logout.
type LogoutData struct {
	Reason Code `json:"reason,omitempty"`
}

// Queues accepts a single queue name or a list of them.
type Queues []string

// UnmarshalJSON accepts "q", ["q1","q2"] or null.
func (q *Queues) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		if one == "" {
			*q = nil
		} else {
			*q = Queues{one}
		}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return &json.UnmarshalTypeError{Value: string(b), Type: typeOfString, Field: "queue"}
	}
	*q = many
	return nil
}

// Code accepts a reason code written as a string or a number (the seed
// documents logout reasons as "numerical codes").
type Code string

// UnmarshalJSON accepts "12", 12 or null.
func (c *Code) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*c = Code(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return &json.UnmarshalTypeError{Value: string(b), Type: typeOfString, Field: "reason"}
	}
	if _, err := strconv.ParseFloat(string(n), 64); err != nil {
		return fmt.Errorf("reason: %w", err)
	}
	*c = Code(n.String())
	return nil
}

var typeOfString = reflect.TypeOf("")

// ChannelOptions are the options of channel.activate and channel.deactivate.
// The field is accepted as both "channeloptions" and "channelOptions" (JSON
// field matching is case-insensitive).
type ChannelOptions struct {
	Queue  Queues `json:"queue,omitempty"`
	Reason Code   `json:"reason,omitempty"`
}

// ChannelOptionsData is the data of channel.activate and channel.deactivate.
type ChannelOptionsData struct {
	ChannelOptions *ChannelOptions `json:"channelOptions,omitempty"`
}

// NotReadyData is the data of channel.notready.
type NotReadyData struct {
	ReasonCode *string `json:"reasoncode"`
	ReasonDesc string  `json:"reasondesc,omitempty"`
}

// AddressBookRequest is the data of session.request.incontact.addressbook.
type AddressBookRequest struct {
	Realtime bool `json:"realtime"`
}

// AgentStatus is the availability part of channel.infochanged.
type AgentStatus struct {
	Status         string `json:"status"`
	LastReasonCode string `json:"lastReasonCode"`
	LastReasonName string `json:"lastReasonName"`
}

// ChannelInfo is the data of channel.infochanged.
type ChannelInfo struct {
	State       string      `json:"state"`
	AgentStatus AgentStatus `json:"agentStatus"`
	// ChangedBy names who changed it when it was not the agent (a
	// supervisor's action).
	ChangedBy *ChangedBy `json:"changedBy,omitempty"`
}

// ChangedBy is who made a change on an agent's behalf.
type ChangedBy struct {
	Role string `json:"role"`
	ID   string `json:"id"`
}

// ReasonSupervisor is the not-ready reason of a supervisor's action that
// names none.
const ReasonSupervisor = "supervisor"

// ChannelCreated is the data of channel.created.
type ChannelCreated struct {
	Channel ChannelSpec `json:"channel"`
}

// ChannelRemoved is the data of channel.removed.
type ChannelRemoved struct {
	Channel IDRef  `json:"channel"`
	Reason  string `json:"reason,omitempty"`
}

// ChannelState is one channel in state.updated.
type ChannelState struct {
	ID         string   `json:"id"`
	Group      string   `json:"group,omitempty"`
	Name       string   `json:"name"`
	Type       string   `json:"type"`
	State      string   `json:"state"`
	Status     string   `json:"status"`
	ReasonCode string   `json:"reasonCode"`
	ReasonName string   `json:"reasonName"`
	Queues     []string `json:"queues,omitempty"`
	// Since is when the current (state, status, reason) interval started, Unix ms.
	Since int64 `json:"since"`
	// ChangedBy: who set the current state when it was not the agent (a
	// supervisor's action); absent once the agent changes it again.
	ChangedBy *ChangedBy `json:"changedBy,omitempty"`
	// Interactions in progress on the channel, in short (supervisors'
	// views and wallboards show them).
	Interactions []InteractionSummary `json:"interactions,omitempty"`
}

// InteractionSummary is an interaction in progress, as a wallboard shows it.
type InteractionSummary struct {
	ID        string `json:"id"`
	Direction string `json:"direction"`
	State     string `json:"state"`
	Queue     string `json:"queue,omitempty"`
	// StateSince is when it entered its state, Unix ms.
	StateSince int64 `json:"stateSince"`
}

// StateUpdated is the data of state.updated: every channel and the agent's
// aggregate status (see AggregateStatus).
type StateUpdated struct {
	AgentID string `json:"agentId"`
	// DisplayName: the agent's name, when the switch knows it.
	DisplayName string         `json:"displayName,omitempty"`
	Status      string         `json:"status"`
	Channels    []ChannelState `json:"channels"`
	// Today: the agent's interaction counters of the day (UTC), once there
	// is something to count.
	Today *CallCounters `json:"today,omitempty"`
}

// CallCounters are an agent's interaction counters for one day, UTC
// (002_0dc46d1b6669c548.txt's agent metrics), counted as each interaction's
// wrap-up completes: handled (talked on), inbound answered and missed (rang
// out or rejected), outbound attempted and answered, and the talk, hold
// and handle time of the handled ones.
type CallCounters struct {
	Day               string `json:"day"`
	Handled           int    `json:"handled"`
	InboundAnswered   int    `json:"inboundAnswered"`
	InboundMissed     int    `json:"inboundMissed"`
	OutboundAttempted int    `json:"outboundAttempted"`
	OutboundAnswered  int    `json:"outboundAnswered"`
	TalkMs            int64  `json:"talkMs"`
	HoldMs            int64  `json:"holdMs"`
	HandleMs          int64  `json:"handleMs"`
}

// AggregateStatus folds channel statuses into one agent status, by priority:
// busy on any channel > ready on any > after_call_work on any > not_ready on
// any ACTIVE channel > logged_out (no ACTIVE channel).
func AggregateStatus(channels []ChannelState) string {
	rank := func(c ChannelState) int {
		if c.State != StateActive {
			return 0
		}
		switch c.Status {
		case StatusBusy, StatusBusyReady, StatusBusyNotReady, StatusBusyAfterCallWork:
			return 4
		case StatusReady:
			return 3
		case StatusAfterCallWork:
			return 2
		default:
			return 1
		}
	}
	best := 0
	for _, c := range channels {
		best = max(best, rank(c))
	}
	return [...]string{StatusLoggedOut, StatusNotReady, StatusAfterCallWork, StatusReady, StatusBusy}[best]
}

// SessionInitialized is the data of session.initialized.
type SessionInitialized struct {
	SessionID string   `json:"sessionId"`
	AgentID   string   `json:"agentId"`
	Resumed   bool     `json:"resumed"`
	Teams     []string `json:"teams,omitempty"`
	// Seq is the session's last event seq including this event: a client that
	// reconnects passes it back as since=.
	Seq uint64 `json:"seq"`
	// ConnectionID and Connections: under session.multiconnect share, this
	// connection's id and every connection of the session.
	ConnectionID string       `json:"connectionId,omitempty"`
	Connections  *Connections `json:"connections,omitempty"`
}

// CTILinkChanged is the data of session.ctilink.changed.
type CTILinkChanged struct {
	Up     bool   `json:"up"`
	Reason string `json:"reason,omitempty"`
}

// Connections are a session's attached connections (session.initialized,
// session.connections.changed), oldest first.
type Connections struct {
	Count       int              `json:"count"`
	Connections []ConnectionInfo `json:"connections"`
}

// ConnectionInfo is one connection of a session.
type ConnectionInfo struct {
	ID        string `json:"id"`
	UserAgent string `json:"userAgent"`
	Since     int64  `json:"since"` // Unix ms
}

// SessionEnded is the data of session.ended.
type SessionEnded struct {
	Reason     string `json:"reason"`
	LogoutCode string `json:"logoutCode,omitempty"`
}

// Label is a localized name of a catalog entry.
type Label struct {
	Language    string `json:"language"`
	Country     string `json:"country"`
	Name        string `json:"name"`
	Description string `json:"description"`
}

// ReasonCode is one entry of the not-ready catalog.
type ReasonCode struct {
	ID         string   `json:"reasonCodeId"`
	Code       string   `json:"reasonCodeCode"`
	Selectable bool     `json:"selectable"`
	Extensions []string `json:"extensions"`
	Labels     []Label  `json:"labels"`
}

// NotReadyReasons is the data of session.externalnotreadyreasons.updated.
type NotReadyReasons struct {
	ReasonCodes []ReasonCode `json:"reasonCodes"`
}

// LogoutReason is one entry of the logout catalog.
type LogoutReason struct {
	ID         string   `json:"logoutReasonId"`
	Code       string   `json:"logoutReasonCode"`
	Extensions []string `json:"extensions"`
	Labels     []Label  `json:"labels"`
}

// LogoutReasons is the data of session.externallogoutreasons.updated.
type LogoutReasons struct {
	LogoutReasons []LogoutReason `json:"logoutReasons"`
}

// Destination is a dialable destination of an address book entry.
type Destination struct {
	Label string `json:"label"`
	Value string `json:"value"`
}

// Entry types of the address book.
const (
	EntryExternal = "external"
	EntryAgent    = "agent"
	EntrySkill    = "skill"
)

// EntryProperties carries the live properties of agent and skill entries.
type EntryProperties struct {
	// AgentID links an agent entry to the broker's live state.
	AgentID string `json:"agentId,omitempty"`
	// State is the agent's aggregate status (see AggregateStatus).
	State string `json:"state,omitempty"`
	// Skill links a skill entry to the queues agents activate channels on.
	Skill          string `json:"skill,omitempty"`
	MediaType      string `json:"mediaType,omitempty"`
	NumAvailable   *int   `json:"numAvailable,omitempty"`
	NumUnavailable *int   `json:"numUnavailable,omitempty"`
	// EWT is the estimated wait time in whole seconds, as a string.
	EWT string `json:"ewt,omitempty"`
}

// Entry is one address book entry.
type Entry struct {
	Name         string          `json:"name"`
	Type         string          `json:"type"`
	Destinations []Destination   `json:"destinations"`
	Properties   EntryProperties `json:"properties"`
}

// Group groups address book entries.
type Group struct {
	Name    string  `json:"name"`
	Groups  []Group `json:"groups"`
	Entries []Entry `json:"entries"`
}

// AddressBook is one address book.
type AddressBook struct {
	Name    string  `json:"name"`
	Groups  []Group `json:"groups"`
	Entries []Entry `json:"entries"`
}

// AddressBooks is the reply data of session.request.incontact.addressbook and
// the data of session.incontact.addressbook.updated.
type AddressBooks struct {
	AddressBooks []AddressBook `json:"addressbooks"`
}

// AgentLegFailed is the data of session.incontact.agentleg.failed.
type AgentLegFailed struct {
	Error   string `json:"error"`
	Channel string `json:"channel,omitempty"`
}

// WebhookMessage is what a webhook endpoint receives (the body of one
// POST): a message id (the same on every delivery of it: deduplicate on
// it), its type (agent.status, interaction.ringing, ...), when it happened
// (Unix ms), the agent, and the type's data.
type WebhookMessage struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Time    int64           `json:"time"`
	AgentID string          `json:"agentId"`
	Data    json.RawMessage `json:"data"`
}

// WebhookRecord is a webhook message as the outboxes keep it: with the
// agent's teams (for the endpoints' team filters; not sent).
type WebhookRecord struct {
	Msg   WebhookMessage `json:"m"`
	Teams []string       `json:"t,omitempty"`
}
