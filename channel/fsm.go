package channel

import (
	"context"
	"errors"
	"fmt"

	"github.com/looplab/fsm"

	"github.com/ctibroker/ctibroker/protocol"
)

// Machine states. Each ACTIVE status is a state of its own so that the machine
// alone decides legality; Display maps a state to the wire (state, status).
const (
	sInactive     = "inactive"
	sUnavailable  = "unavailable"
	sReady        = "ready"
	sNotReady     = "not_ready"
	sACW          = "after_call_work"
	sBusyReady    = "busy_ready"
	sBusyNotReady = "busy_not_ready"
	sBusyACW      = "busy_after_call_work"
	initialState  = sInactive
)

// Event is a machine event.
type Event string

// Machine events: agent commands, switch reports and broker timers all drive
// the same machine.
const (
	EvActivate         Event = "activate"
	EvDeactivate       Event = "deactivate"
	EvReady            Event = "ready"
	EvNotReady         Event = "notready"
	EvACW              Event = "acw"
	EvInteractionStart Event = "interaction_start"
	EvInteractionEnd   Event = "interaction_end"
	// EvInteractionEndACW ends the last interaction with automatic after-call
	// work. An explicit not-ready chosen during the interaction wins over it.
	EvInteractionEndACW Event = "interaction_end_acw"
	EvEndpointTaken     Event = "endpoint_taken"
	EvEndpointFreed     Event = "endpoint_freed"
)

var (
	machineStates = []string{sInactive, sUnavailable, sReady, sNotReady, sACW, sBusyReady, sBusyNotReady, sBusyACW}
	idle          = []string{sReady, sNotReady, sACW}
	busy          = []string{sBusyReady, sBusyNotReady, sBusyACW}
	active        = append(append([]string{}, idle...), busy...)
)

// transitions is the whole channel state model.
var transitions = fsm.Events{
	{Name: string(EvActivate), Src: []string{sInactive}, Dst: sNotReady},
	{Name: string(EvDeactivate), Src: active, Dst: sInactive},
	{Name: string(EvReady), Src: idle, Dst: sReady},
	{Name: string(EvReady), Src: busy, Dst: sBusyReady},
	{Name: string(EvNotReady), Src: idle, Dst: sNotReady},
	{Name: string(EvNotReady), Src: busy, Dst: sBusyNotReady},
	{Name: string(EvACW), Src: idle, Dst: sACW},
	{Name: string(EvACW), Src: busy, Dst: sBusyACW},
	{Name: string(EvInteractionStart), Src: []string{sReady}, Dst: sBusyReady},
	{Name: string(EvInteractionStart), Src: []string{sNotReady}, Dst: sBusyNotReady},
	{Name: string(EvInteractionStart), Src: []string{sACW}, Dst: sBusyACW},
	{Name: string(EvInteractionEnd), Src: []string{sBusyReady}, Dst: sReady},
	{Name: string(EvInteractionEnd), Src: []string{sBusyNotReady}, Dst: sNotReady},
	{Name: string(EvInteractionEnd), Src: []string{sBusyACW}, Dst: sACW},
	{Name: string(EvInteractionEndACW), Src: []string{sBusyReady, sBusyACW}, Dst: sACW},
	{Name: string(EvInteractionEndACW), Src: []string{sBusyNotReady}, Dst: sNotReady},
	{Name: string(EvEndpointTaken), Src: []string{sInactive}, Dst: sUnavailable},
	{Name: string(EvEndpointFreed), Src: []string{sUnavailable}, Dst: sInactive},
}

// newMachine builds a channel's machine. Its one callback, before_event,
// decides a transition the machine found legal (see transition): the
// machine changes state only when the callback lets it.
func newMachine(initial string) *fsm.FSM {
	return fsm.NewFSM(initial, transitions, fsm.Callbacks{"before_event": beforeEvent})
}

// transition is what Fire hands the machine with an event.
type transition struct {
	c  *Channel
	in Intent
	// reason is the channel's reason after the transition, set by noop.
	reason Reason
	// effect applies the change outside the broker (the switch call); nil
	// for what the switch itself reported. Its error cancels the
	// transition.
	effect func() error
}

// noop reports whether going from src to dst would change nothing (state,
// status and reason): then nothing is done.
func (t *transition) noop(src, dst string) bool {
	t.reason = t.c.nextReason(t.in.Event, dst, t.in.Reason)
	return src == dst && t.reason == t.c.reason
}

// errNoop cancels a transition that would change nothing.
var errNoop = errors.New("no change")

// beforeEvent runs inside the machine's Event, which holds its lock: it
// must not call Event, Can or SetState (looplab/fsm would deadlock), and it
// does not. It runs for self-transitions too (a reason change keeps the
// state).
func beforeEvent(_ context.Context, e *fsm.Event) {
	t := e.Args[0].(*transition)
	if t.noop(e.Src, e.Dst) {
		e.Cancel(errNoop)
		return
	}
	if t.effect != nil {
		if err := t.effect(); err != nil {
			e.Cancel(err)
		}
	}
}

// fire runs ev on m with t. It reports what happened: the machine refused
// the event (illegal), the callback cancelled it (noop or the effect's
// error), or it took place (its state may be unchanged: a self-transition).
func fire(m *fsm.FSM, ev Event, t *transition) (illegal bool, err error) {
	// Background, never cancelled: a cancelled context would wedge
	// looplab/fsm in InTransitionError forever. The effect bounds its own
	// wait (the switch call's timeout).
	err = m.Event(context.Background(), string(ev), t)
	if err == nil {
		return false, nil
	}
	var invalid fsm.InvalidEventError
	var unknown fsm.UnknownEventError
	var noTransition fsm.NoTransitionError
	var canceled fsm.CanceledError
	switch {
	case errors.As(err, &noTransition):
		return false, nil
	case errors.As(err, &invalid), errors.As(err, &unknown):
		return true, nil
	case errors.As(err, &canceled):
		return false, canceled.Err
	}
	return false, err
}

// Display maps a machine state to the wire state and status. INACTIVE and
// UNAVAILABLE channels report status not_ready: the agent cannot take
// interactions there.
func Display(machineState string) (state, status string) {
	switch machineState {
	case sInactive:
		return protocol.StateInactive, protocol.StatusNotReady
	case sUnavailable:
		return protocol.StateUnavailable, protocol.StatusNotReady
	default:
		return protocol.StateActive, machineState
	}
}

// MachineState maps a wire (state, status) back to a machine state, for
// adapters that report the switch's view.
func MachineState(state, status string) (string, error) {
	switch state {
	case protocol.StateInactive:
		return sInactive, nil
	case protocol.StateUnavailable:
		return sUnavailable, nil
	case protocol.StateActive:
		switch status {
		case sReady, sNotReady, sACW, sBusyReady, sBusyNotReady, sBusyACW:
			return status, nil
		case protocol.StatusBusy:
			return sBusyNotReady, nil
		}
		return "", fmt.Errorf("unknown agent status %q", status)
	}
	return "", fmt.Errorf("unknown channel state %q", state)
}

// Mermaid renders the channel state machine as a Mermaid state diagram,
// generated by looplab/fsm from the definition above.
func Mermaid() string {
	out, err := fsm.VisualizeForMermaidWithGraphType(newMachine(initialState), fsm.StateDiagram)
	if err != nil {
		// Only an unknown diagram type errors, and the type is a constant.
		panic(err)
	}
	return out
}
