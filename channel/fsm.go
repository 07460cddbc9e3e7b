package channel

import (
	"context"
	"errors"
	"fmt"
	"sync"

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

func newMachine(initial string) *fsm.FSM {
	// No callbacks: transitions have no side effects inside the machine, so
	// the looplab callback deadlocks cannot happen.
	return fsm.NewFSM(initial, transitions, nil)
}

// machines pools looplab machines: every machine carries its own copy of
// the transition maps (a few KiB), which thousands of idle channels need not
// hold. A channel keeps its state and borrows a machine, set to that state,
// to check or fire an event: the definition above still decides every
// transition.
var machines = sync.Pool{New: func() any { return newMachine(initialState) }}

// withMachine runs f with a machine in state; it returns the machine's
// state after f.
func withMachine(state string, f func(m *fsm.FSM)) string {
	m := machines.Get().(*fsm.FSM)
	m.SetState(state)
	f(m)
	out := m.Current()
	machines.Put(m)
	return out
}

// fire runs ev on m. A self-transition is legal and reported as no change.
func fire(m *fsm.FSM, ev Event) error {
	// WithoutCancel: a cancelled context would wedge looplab/fsm in
	// InTransitionError forever.
	err := m.Event(context.WithoutCancel(context.Background()), string(ev))
	var noTransition fsm.NoTransitionError
	if errors.As(err, &noTransition) {
		return nil
	}
	return err
}

// destination returns the state ev leads to from src, from the same table the
// machine was built from.
func destination(ev Event, src string) (string, bool) {
	for _, t := range transitions {
		if t.Name != string(ev) {
			continue
		}
		for _, s := range t.Src {
			if s == src {
				return t.Dst, true
			}
		}
	}
	return "", false
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
