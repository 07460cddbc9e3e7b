package protocol

// Supervisor commands. They target the supervisor's own session.
const (
	CmdSupervisorSubscribe   = "supervisor.subscribe"
	CmdSupervisorUnsubscribe = "supervisor.unsubscribe"
)

// Supervisor events.
const (
	EvSupervisorSnapshot     = "supervisor.snapshot"
	EvSupervisorAgentChanged = "supervisor.agent.changed"
	EvSupervisorQueueChanged = "supervisor.queue.changed"
)

// WatchFilter selects agents; every non-empty list must match (AND), an
// empty list matches everything the caller may see.
type WatchFilter struct {
	Teams        []string `json:"teams,omitempty"`
	Agents       []string `json:"agents,omitempty"`
	ChannelTypes []string `json:"channelTypes,omitempty"`
	Statuses     []string `json:"statuses,omitempty"`
	// Format of the changes: FormatFull (the default) or FormatCompact.
	Format string `json:"format,omitempty"`
	// Queues asks for queue figures as well: these queues, or with [] every
	// queue the caller may see; absent (nil), none. Queues do not narrow
	// the agents.
	Queues []string `json:"queues,omitzero"`
}

// SubscribeReply is the success data of supervisor.subscribe.
type SubscribeReply struct {
	SubscriptionID string `json:"subscriptionId"`
}

// UnsubscribeData is the data of supervisor.unsubscribe.
type UnsubscribeData struct {
	SubscriptionID string `json:"subscriptionId"`
}

// AgentView is an agent's live state as supervisors see it.
type AgentView struct {
	AgentID string `json:"agentId"`
	// DisplayName: the agent's name, when the switch knows it.
	DisplayName string   `json:"displayName,omitempty"`
	SessionID   string   `json:"sessionId"`
	Teams       []string `json:"teams"`
	// Status is the aggregate status (see AggregateStatus); StatusSince is
	// when it started, Unix ms.
	Status      string         `json:"status"`
	StatusSince int64          `json:"statusSince"`
	Channels    []ChannelState `json:"channels"`
	// Today: the agent's interaction counters of the day (see CallCounters).
	Today *CallCounters `json:"today,omitempty"`
}

// Summary counts agents per aggregate status, in the spirit of the seed's
// readyAgentsCount / acwAgentsCount / loginAgentsCount.
type Summary struct {
	TotalAgentsCount    int `json:"totalAgentsCount"`
	LoginAgentsCount    int `json:"loginAgentsCount"`
	ReadyAgentsCount    int `json:"readyAgentsCount"`
	NotReadyAgentsCount int `json:"notReadyAgentsCount"`
	AcwAgentsCount      int `json:"acwAgentsCount"`
	BusyAgentsCount     int `json:"busyAgentsCount"`
	LoggedOutCount      int `json:"loggedOutAgentsCount"`
}

// Add counts one agent.
func (s *Summary) Add(status string) {
	s.TotalAgentsCount++
	switch status {
	case StatusReady:
		s.ReadyAgentsCount++
	case StatusNotReady:
		s.NotReadyAgentsCount++
	case StatusAfterCallWork:
		s.AcwAgentsCount++
	case StatusBusy:
		s.BusyAgentsCount++
	}
	if status == StatusLoggedOut {
		s.LoggedOutCount++
	} else {
		s.LoginAgentsCount++
	}
}

// Snapshot reasons.
const (
	SnapshotSubscribed = "subscribed"
	// SnapshotResync: changes may have been missed (the supervisor's
	// session moved to another node, or events were lost beyond recovery);
	// this snapshot replaces the client's whole view.
	SnapshotResync = "resync"
)

// SupervisorSnapshot is the data of supervisor.snapshot: every matching agent.
type SupervisorSnapshot struct {
	SubscriptionID string      `json:"subscriptionId"`
	Reason         string      `json:"reason"`
	Agents         []AgentView `json:"agents"`
	Summary        Summary     `json:"summary"`
	// Queues: with a subscription to queues, their figures (sorted by name).
	Queues []QueueFigures `json:"queues,omitzero"`
}

// QueueChanged is the data of supervisor.queue.changed. Previous is null
// when the queue appears, Current when it goes (its switch left).
type QueueChanged struct {
	SubscriptionID string        `json:"subscriptionId"`
	Queue          string        `json:"queue"`
	Previous       *QueueFigures `json:"previous"`
	Current        *QueueFigures `json:"current"`
}

// AgentChanged is the data of supervisor.agent.changed. Previous is null
// when the agent appears (logs in, or starts matching the filter), Current
// when it leaves.
type AgentChanged struct {
	SubscriptionID string     `json:"subscriptionId"`
	AgentID        string     `json:"agentId"`
	Previous       *AgentView `json:"previous"`
	Current        *AgentView `json:"current"`
}
