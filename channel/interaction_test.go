package channel

import (
	"errors"
	"testing"

	"github.com/ctibroker/ctibroker/protocol"
)

func TestInteractionMachine(t *testing.T) {
	for _, tc := range []struct {
		name   string
		start  string
		events []IxEvent
		want   string // final state; "" when the last event is illegal
	}{
		{"answered, held, retrieved, ended, completed", protocol.IxAlerting, []IxEvent{IxAccept, IxHold, IxRetrieve, IxEnd, IxComplete}, protocol.IxCompleted},
		{"outbound connected", protocol.IxDialing, []IxEvent{IxConnect}, protocol.IxStarted},
		{"outbound cannot be accepted", protocol.IxDialing, []IxEvent{IxAccept}, ""},
		{"no hold while ringing", protocol.IxAlerting, []IxEvent{IxHold}, ""},
		{"no retrieve unless held", protocol.IxAlerting, []IxEvent{IxAccept, IxRetrieve}, ""},
		{"ended while held", protocol.IxAlerting, []IxEvent{IxAccept, IxHold, IxEnd}, protocol.IxEnded},
		{"no complete before the end", protocol.IxAlerting, []IxEvent{IxAccept, IxComplete}, ""},
		{"nothing after completed", protocol.IxAlerting, []IxEvent{IxEnd, IxComplete, IxEnd}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ix, err := NewInteraction(protocol.Interaction{ID: "i", State: tc.start, Members: []protocol.Member{{ID: "c", Role: protocol.RoleCaller, State: protocol.MemberConnected}}}, 1000)
			if err != nil {
				t.Fatal(err)
			}
			var last error
			for i, ev := range tc.events {
				_, last = ix.Fire(ev, protocol.CauseReleased, int64(2000+i))
				if last != nil && i < len(tc.events)-1 {
					t.Fatalf("event %d (%s): %v", i, ev, last)
				}
			}
			if tc.want == "" {
				if !errors.Is(last, ErrIllegal) {
					t.Fatalf("last event: %v, want an illegal event", last)
				}
				return
			}
			if last != nil || ix.State() != tc.want || ix.Info().State != tc.want {
				t.Fatalf("state %s (%v), want %s", ix.State(), last, tc.want)
			}
		})
	}
}

// The timeline: one phase per state, each closed when the next opens; the
// parties follow the state.
func TestInteractionPhasesAndMembers(t *testing.T) {
	ix, _ := NewInteraction(protocol.Interaction{ID: "i", State: protocol.IxAlerting, Members: []protocol.Member{{ID: "c", State: protocol.MemberConnected}}}, 100)
	for i, ev := range []IxEvent{IxAccept, IxHold, IxRetrieve, IxEnd} {
		if _, err := ix.Fire(ev, protocol.CauseRemote, int64(200+100*i)); err != nil {
			t.Fatal(err)
		}
	}
	ix.EnterACW(600)
	ix.EnterACW(650) // once
	if _, err := ix.Fire(IxComplete, "", 700); err != nil {
		t.Fatal(err)
	}
	info := ix.Info()
	want := []protocol.Phase{{Phase: protocol.PhaseWaiting, Start: 100, End: 200}, {Phase: protocol.PhaseActive, Start: 200, End: 300},
		{Phase: protocol.PhaseHeld, Start: 300, End: 400}, {Phase: protocol.PhaseActive, Start: 400, End: 500}, {Phase: protocol.PhaseACW, Start: 600, End: 700}}
	if len(info.Phases) != len(want) {
		t.Fatalf("phases %+v, want %+v", info.Phases, want)
	}
	for i := range want {
		if info.Phases[i] != want[i] {
			t.Fatalf("phase %d: %+v, want %+v", i, info.Phases[i], want[i])
		}
	}
	if info.Cause != protocol.CauseRemote || info.Ended != 500 || info.Completed != 700 || info.Members[0].State != protocol.MemberDisconnected {
		t.Fatalf("ended info: %+v", info)
	}
}

func TestInteractionData(t *testing.T) {
	ix, _ := NewInteraction(protocol.Interaction{ID: "i", State: protocol.IxStarted, Data: map[string]string{"a": "1"}}, 1)
	for _, tc := range []struct {
		in      map[string]string
		changed bool
		want    map[string]string
	}{
		{map[string]string{"a": "1"}, false, map[string]string{"a": "1"}},
		{map[string]string{"b": "2"}, true, map[string]string{"a": "1", "b": "2"}},
		{map[string]string{"a": ""}, true, map[string]string{"b": "2"}},
		{map[string]string{"nosuch": ""}, false, map[string]string{"b": "2"}},
	} {
		if got := ix.MergeData(tc.in); got != tc.changed {
			t.Fatalf("MergeData(%v) = %v", tc.in, got)
		}
		if got := ix.Info().Data; len(got) != len(tc.want) || got["a"] != tc.want["a"] || got["b"] != tc.want["b"] {
			t.Fatalf("after %v: %v, want %v", tc.in, got, tc.want)
		}
	}
	if _, err := NewInteraction(protocol.Interaction{ID: "i", State: protocol.IxEnded}, 1); err == nil {
		t.Fatal("an interaction started ENDED")
	}
}
