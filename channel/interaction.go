package channel

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/looplab/fsm"

	"github.com/ctibroker/ctibroker/protocol"
)

// IxEvent is an interaction machine event.
type IxEvent string

// Interaction events: the agent's commands and the switch's reports drive
// the same machine.
const (
	IxAccept   IxEvent = "accept"   // the agent answers an offered interaction
	IxConnect  IxEvent = "connect"  // the far end answered an outbound one
	IxHold     IxEvent = "hold"     // on hold
	IxRetrieve IxEvent = "retrieve" // back from hold
	IxEnd      IxEvent = "end"      // over, for whatever cause
	IxComplete IxEvent = "complete" // wrap-up done
)

// ixTransitions is the whole interaction state model.
var ixTransitions = fsm.Events{
	{Name: string(IxAccept), Src: []string{protocol.IxAlerting}, Dst: protocol.IxStarted},
	{Name: string(IxConnect), Src: []string{protocol.IxDialing, protocol.IxAlerting}, Dst: protocol.IxStarted},
	{Name: string(IxHold), Src: []string{protocol.IxStarted}, Dst: protocol.IxHeld},
	{Name: string(IxRetrieve), Src: []string{protocol.IxHeld}, Dst: protocol.IxStarted},
	{Name: string(IxEnd), Src: []string{protocol.IxAlerting, protocol.IxDialing, protocol.IxStarted, protocol.IxHeld}, Dst: protocol.IxEnded},
	{Name: string(IxComplete), Src: []string{protocol.IxEnded}, Dst: protocol.IxCompleted},
}

// Interaction is an interaction on a channel: what desktops see, and the
// machine that decides what may happen to it. Owned by the session that
// holds it, like a Channel.
type Interaction struct {
	info protocol.Interaction
	m    *fsm.FSM
}

// ErrIllegal is returned (wrapped) for an event the interaction's state
// does not allow; the message names the state.
var ErrIllegal = errors.New("not allowed")

// NewInteraction starts tracking an interaction the switch reported (or a
// dial created). Its state must be one of the machine's.
func NewInteraction(info protocol.Interaction, now int64) (*Interaction, error) {
	if !slices.Contains([]string{protocol.IxAlerting, protocol.IxDialing, protocol.IxStarted, protocol.IxHeld}, info.State) {
		return nil, fmt.Errorf("interaction %s: cannot start in state %q", info.ID, info.State)
	}
	info.Data = maps.Clone(info.Data)
	info.Members = slices.Clone(info.Members)
	if info.Members == nil {
		info.Members = []protocol.Member{}
	}
	info.StateSince = now
	if info.Created == 0 {
		info.Created = now
	}
	ix := &Interaction{info: info, m: newIxMachine(info.State)}
	ix.openPhase(now)
	return ix, nil
}

// RestoreInteraction rebuilds an interaction from its snapshot (another
// node, a restart).
func RestoreInteraction(info protocol.Interaction) *Interaction {
	return &Interaction{info: info, m: newIxMachine(info.State)}
}

func newIxMachine(state string) *fsm.FSM {
	return fsm.NewFSM(state, ixTransitions, fsm.Callbacks{})
}

// Info returns a copy of what desktops see.
func (ix *Interaction) Info() protocol.Interaction {
	out := ix.info
	out.Data = maps.Clone(ix.info.Data)
	out.Members = slices.Clone(ix.info.Members)
	out.Phases = slices.Clone(ix.info.Phases)
	return out
}

// ID returns the interaction's id.
func (ix *Interaction) ID() string { return ix.info.ID }

// Created, Direction and Parent are fields of Info without its copy.
func (ix *Interaction) Created() int64    { return ix.info.Created }
func (ix *Interaction) Direction() string { return ix.info.Direction }
func (ix *Interaction) Parent() string    { return ix.info.Parent }

// State returns the interaction's state.
func (ix *Interaction) State() string { return ix.m.Current() }

// Can reports whether ev is legal now, with an error naming the state when not.
func (ix *Interaction) Can(ev IxEvent) error {
	if ix.m.Can(string(ev)) {
		return nil
	}
	return fmt.Errorf("%w: interaction %s is %s", ErrIllegal, ix.info.ID, ix.m.Current())
}

// Fire moves the interaction with ev at now (unix ms). cause is kept for
// IxEnd. It returns the previous state.
func (ix *Interaction) Fire(ev IxEvent, cause string, now int64) (previous string, err error) {
	previous = ix.m.Current()
	if err := ix.Can(ev); err != nil {
		return previous, err
	}
	// WithoutCancel: a cancelled context would wedge looplab/fsm.
	if err := ix.m.Event(context.WithoutCancel(context.Background()), string(ev)); err != nil {
		return previous, fmt.Errorf("interaction %s: %w", ix.info.ID, err)
	}
	ix.info.State, ix.info.StateSince = ix.m.Current(), now
	switch ev {
	case IxEnd:
		ix.info.Cause, ix.info.Ended = cause, now
		for i := range ix.info.Members {
			ix.info.Members[i].State = protocol.MemberDisconnected
		}
	case IxComplete:
		ix.info.Completed = now
	case IxAccept, IxConnect, IxRetrieve:
		ix.setMembers(protocol.MemberConnected)
	case IxHold:
		ix.setMembers(protocol.MemberHeld)
	}
	ix.closePhase(now)
	ix.openPhase(now)
	return previous, nil
}

// setMembers sets the state of the parties other than this agent's.
func (ix *Interaction) setMembers(state string) {
	for i := range ix.info.Members {
		if ix.info.Members[i].State != protocol.MemberDisconnected {
			ix.info.Members[i].State = state
		}
	}
}

// EnterACW marks the start of its wrap-up in the timeline (it ended and
// the channel is in after-call work for it).
func (ix *Interaction) EnterACW(now int64) {
	if n := len(ix.info.Phases); n == 0 || ix.info.Phases[n-1].Phase != protocol.PhaseACW {
		ix.info.Phases = append(ix.info.Phases, protocol.Phase{Phase: protocol.PhaseACW, Start: now})
	}
}

func (ix *Interaction) openPhase(now int64) {
	var p string
	switch ix.m.Current() {
	case protocol.IxAlerting, protocol.IxDialing:
		p = protocol.PhaseWaiting
	case protocol.IxStarted:
		p = protocol.PhaseActive
	case protocol.IxHeld:
		p = protocol.PhaseHeld
	default:
		return
	}
	ix.info.Phases = append(ix.info.Phases, protocol.Phase{Phase: p, Start: now})
}

func (ix *Interaction) closePhase(now int64) {
	if n := len(ix.info.Phases); n > 0 && ix.info.Phases[n-1].End == 0 {
		ix.info.Phases[n-1].End = now
	}
}

// SetDisposition records the wrap-up code.
func (ix *Interaction) SetDisposition(code string) { ix.info.Disposition = code }

// MergeData merges attached data; an empty value deletes the key. It
// reports whether anything changed.
func (ix *Interaction) MergeData(d map[string]string) bool {
	changed := false
	for k, v := range d {
		old, had := ix.info.Data[k]
		switch {
		case v == "" && had:
			delete(ix.info.Data, k)
			changed = true
		case v != "" && (!had || old != v):
			if ix.info.Data == nil {
				ix.info.Data = map[string]string{}
			}
			ix.info.Data[k] = v
			changed = true
		}
	}
	return changed
}

// SetMembers replaces the parties (the switch reported a change).
func (ix *Interaction) SetMembers(ms []protocol.Member) {
	ix.info.Members = slices.Clone(ms)
	if ix.info.Members == nil {
		ix.info.Members = []protocol.Member{}
	}
}

// Live reports whether the interaction is still in progress (not ended).
func (ix *Interaction) Live() bool {
	s := ix.m.Current()
	return s != protocol.IxEnded && s != protocol.IxCompleted
}

// Channel returns the id of the channel holding it.
func (ix *Interaction) Channel() string { return ix.info.Channel }

// IxMermaid renders the interaction state machine as a Mermaid diagram.
func IxMermaid() string {
	out, err := fsm.VisualizeForMermaidWithGraphType(newIxMachine(protocol.IxAlerting), fsm.StateDiagram)
	if err != nil {
		return "%% " + err.Error() + "\n"
	}
	return out
}
