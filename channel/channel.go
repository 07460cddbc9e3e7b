package channel

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/looplab/fsm"

	"github.com/ctibroker/ctibroker/protocol"
)

// Interval is one entry of a channel's timeline: the channel was in State with
// Status and reason from Start to End (zero while the interval is open).
type Interval struct {
	State      string    `json:"state"`
	Status     string    `json:"status"`
	ReasonCode string    `json:"reasonCode"`
	ReasonName string    `json:"reasonName"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
}

// Channel is one channel of a session. See the package doc for ownership.
type Channel struct {
	spec   protocol.ChannelSpec
	group  string
	queues []string
	// m is the channel's state machine: the one place that decides which
	// changes are legal (see Fire).
	m      *fsm.FSM
	reason Reason

	// lastIdle is the ready/not-ready status the agent last chose, which
	// after-call work returns to when acw.then is "previous".
	lastIdle Intent

	interactions map[string]time.Time
	timeline     []Interval
	timelineCap  int
	// fresh counts the intervals recorded since TakeNew last ran.
	fresh int
}

// New creates an INACTIVE channel. timelineCap bounds the timeline; the oldest
// intervals are dropped beyond it.
func New(spec protocol.ChannelSpec, group string, now time.Time, timelineCap int) *Channel {
	if spec.ModelType == "" {
		spec.ModelType = spec.Type
	}
	c := &Channel{
		spec:         spec,
		group:        group,
		m:            newMachine(initialState),
		lastIdle:     Intent{Event: EvReady},
		interactions: map[string]time.Time{},
		timelineCap:  max(timelineCap, 2),
	}
	c.record(now)
	return c
}

// ID returns the channel id.
func (c *Channel) ID() string { return c.spec.ID }

// Group returns the channel group id, empty for a standalone channel.
func (c *Channel) Group() string { return c.group }

// Spec returns the channel's description.
func (c *Channel) Spec() protocol.ChannelSpec { return c.spec }

// Queues returns the queues the channel was activated on.
func (c *Channel) Queues() []string { return c.queues }

// Machine returns the current machine state.
func (c *Channel) Machine() string { return c.m.Current() }

// Reason returns the current reason.
func (c *Channel) Reason() Reason { return c.reason }

// Active reports whether the agent is logged into the channel.
func (c *Channel) Active() bool {
	s, _ := Display(c.m.Current())
	return s == protocol.StateActive
}

// InAfterCallWork reports whether the agent is in after-call work (and no
// interaction is in progress).
func (c *Channel) InAfterCallWork() bool { return c.m.Current() == sACW }

// InInteraction reports whether an interaction is in progress.
func (c *Channel) InInteraction() bool { return len(c.interactions) > 0 }

// Info returns the data of channel.infochanged.
func (c *Channel) Info() protocol.ChannelInfo {
	state, status := Display(c.m.Current())
	return protocol.ChannelInfo{State: state, AgentStatus: protocol.AgentStatus{
		Status: status, LastReasonCode: c.reason.Code, LastReasonName: c.reason.Name}}
}

// Snapshot returns the channel's entry of state.updated.
func (c *Channel) Snapshot() protocol.ChannelState {
	state, status := Display(c.m.Current())
	return protocol.ChannelState{ID: c.spec.ID, Group: c.group, Name: c.spec.Name, Type: c.spec.Type,
		State: state, Status: status, ReasonCode: c.reason.Code, ReasonName: c.reason.Name,
		Since: c.timeline[len(c.timeline)-1].Start.UnixMilli(), Queues: c.queues}
}

// Timeline returns a copy of the intervals still held, oldest first: all of
// them until TakeNew hands them over, then the open one.
func (c *Channel) Timeline() []Interval { return append([]Interval(nil), c.timeline...) }

// Fire runs intent on the channel. The machine decides whether it is legal;
// a legal change that is not a no-op (same state, status and reason) runs
// effect first (the switch call; nil for what the switch itself reported),
// and happens only if effect succeeded. It reports whether state, status or
// reason changed. An illegal intent fails INVALID_STATE naming the current
// state; effect's error is returned as it is, and then nothing changed.
func (c *Channel) Fire(in Intent, now time.Time, effect func() error) (changed bool, err error) {
	t := &transition{c: c, in: in, effect: effect}
	illegal, err := fire(c.m, in.Event, t)
	switch {
	case illegal:
		state, status := Display(c.m.Current())
		if state == protocol.StateActive {
			return false, protocol.Failf(protocol.CodeInvalidState, "%s is not allowed: channel %s is %s (%s)", in.Command, c.spec.ID, state, status)
		}
		return false, protocol.Failf(protocol.CodeInvalidState, "%s is not allowed: channel %s is %s", in.Command, c.spec.ID, state)
	case errors.Is(err, errNoop):
		return false, nil
	case err != nil:
		return false, err
	}
	switch in.Event {
	case EvActivate:
		c.queues = in.Queues
	case EvDeactivate:
		c.queues = nil
		clear(c.interactions)
	}
	return c.settle(t.reason, now), nil
}

// nextReason is the reason after ev leads to dst with r.
func (c *Channel) nextReason(ev Event, dst string, r Reason) Reason {
	switch ev {
	case EvInteractionStart, EvInteractionEnd, EvEndpointTaken, EvEndpointFreed:
		return c.reason
	case EvInteractionEndACW:
		if dst != sACW {
			return c.reason
		}
	case EvReady, EvActivate:
		return Reason{}
	}
	return r
}

// Force puts the channel into a state the switch reports, bypassing the
// machine's rules: the switch is the truth about what the agent is doing, and
// an agent desktop must not show a state the switch does not have.
func (c *Channel) Force(machineState string, r Reason, now time.Time) bool {
	c.m.SetState(machineState)
	if !c.Active() {
		clear(c.interactions)
	}
	return c.settle(r, now)
}

func (c *Channel) settle(r Reason, now time.Time) bool {
	c.reason = r
	switch c.m.Current() {
	case sReady, sBusyReady:
		c.lastIdle = Intent{Command: protocol.CmdChannelReady, Event: EvReady}
	case sNotReady, sBusyNotReady:
		c.lastIdle = Intent{Command: protocol.CmdChannelNotReady, Event: EvNotReady, Reason: r}
	}
	return c.record(now)
}

// StartInteraction records an interaction the switch started on the channel.
// Only the first concurrent interaction changes the status.
func (c *Channel) StartInteraction(id string, now time.Time) (changed bool, err error) {
	if !c.Active() {
		return false, fmt.Errorf("channel %s: interaction %s started while %s", c.spec.ID, id, c.m.Current())
	}
	if _, dup := c.interactions[id]; dup {
		return false, nil
	}
	c.interactions[id] = now
	if len(c.interactions) > 1 {
		return false, nil
	}
	return c.Fire(Intent{Event: EvInteractionStart}, now, nil)
}

// EndInteraction records the end of an interaction; the last one to end
// returns the channel to the pending status, or to after-call work with
// autoACW (acwReason names it).
func (c *Channel) EndInteraction(id string, autoACW bool, acwReason Reason, now time.Time) (changed bool, err error) {
	if _, ok := c.interactions[id]; !ok {
		return false, fmt.Errorf("channel %s: no interaction %s in progress", c.spec.ID, id)
	}
	delete(c.interactions, id)
	if len(c.interactions) > 0 {
		return false, nil
	}
	if autoACW {
		return c.Fire(Intent{Event: EvInteractionEndACW, Reason: acwReason}, now, nil)
	}
	return c.Fire(Intent{Event: EvInteractionEnd}, now, nil)
}

// PreviousIdle returns the intent that restores the ready/not-ready status the
// agent had before after-call work.
func (c *Channel) PreviousIdle() Intent { return c.lastIdle }

// record opens a new timeline interval when state, status or reason changed.
func (c *Channel) record(now time.Time) bool {
	state, status := Display(c.m.Current())
	next := Interval{State: state, Status: status, ReasonCode: c.reason.Code, ReasonName: c.reason.Name, Start: now}
	if n := len(c.timeline); n > 0 {
		last := &c.timeline[n-1]
		if last.State == next.State && last.Status == next.Status && last.ReasonCode == next.ReasonCode {
			return false
		}
		last.End = now
	}
	if len(c.timeline) >= c.timelineCap {
		c.timeline = append(c.timeline[:0], c.timeline[len(c.timeline)-c.timelineCap+1:]...)
	}
	c.timeline = append(c.timeline, next)
	c.fresh = min(c.fresh+1, len(c.timeline))
	return true
}

// TakeNew returns the intervals opened since the last call (the end of an
// interval is the start of the next), for the caller to persist. Persisted
// intervals are then dropped but for the open one: the store keeps them.
func (c *Channel) TakeNew() []Interval {
	out := append([]Interval(nil), c.timeline[len(c.timeline)-c.fresh:]...)
	c.fresh = 0
	if n := len(c.timeline); n > 1 {
		c.timeline = append(c.timeline[:0], c.timeline[n-1])
	}
	return out
}

// Saved is a channel's persistent state. The timeline is persisted
// separately, interval by interval (TakeNew); Since restores the open one.
type Saved struct {
	Spec         protocol.ChannelSpec `json:"spec"`
	Group        string               `json:"group,omitempty"`
	Queues       []string             `json:"queues,omitempty"`
	Machine      string               `json:"machine"`
	Reason       Reason               `json:"reason"`
	LastIdle     Intent               `json:"lastIdle"`
	Interactions map[string]time.Time `json:"interactions,omitempty"`
	Since        time.Time            `json:"since"`
}

// Save returns the channel's persistent state.
func (c *Channel) Save() Saved {
	return Saved{Spec: c.spec, Group: c.group, Queues: c.queues, Machine: c.m.Current(), Reason: c.reason,
		LastIdle: c.lastIdle, Interactions: c.interactions, Since: c.timeline[len(c.timeline)-1].Start}
}

// Restore rebuilds a channel from its saved state.
func Restore(s Saved, timelineCap int) (*Channel, error) {
	if !slices.Contains(machineStates, s.Machine) {
		return nil, fmt.Errorf("channel %s: unknown saved state %q", s.Spec.ID, s.Machine)
	}
	c := New(s.Spec, s.Group, s.Since, timelineCap)
	c.m.SetState(s.Machine)
	c.queues, c.reason, c.lastIdle = s.Queues, s.Reason, s.LastIdle
	for id, at := range s.Interactions {
		c.interactions[id] = at
	}
	c.timeline = c.timeline[:0]
	c.fresh = 0
	c.record(s.Since)
	c.fresh = 0
	return c, nil
}
