package channel

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ctibroker/ctibroker/protocol"
)

var t0 = time.UnixMilli(1_700_000_000_000)

func testCatalog() *Catalog {
	en := func(name string) []protocol.Label {
		return []protocol.Label{{Language: "en", Country: "US", Name: name}}
	}
	return &Catalog{
		NotReady: []protocol.ReasonCode{
			{ID: "lunch", Code: "10", Selectable: true, Labels: en("Lunch")},
			{ID: "break", Code: "11", Selectable: true, Labels: en("Break")},
			{ID: "missed", Code: "90", Selectable: false, Labels: en("Missed call")},
		},
		Logout: []protocol.LogoutReason{{ID: "eod", Code: "1", Labels: en("End of day")}},
	}
}

// inState builds a channel in the given machine state; not-ready states carry
// the "break" reason.
func inState(tb testing.TB, state string) *Channel {
	tb.Helper()
	c := New(protocol.ChannelSpec{ID: "c1", Name: "1001", Type: "TELEPHONY"}, "", t0, 100)
	r := Reason{}
	if strings.Contains(state, "not_ready") {
		r = Reason{Code: "break", Name: "Break"}
	}
	if strings.Contains(state, "after_call_work") {
		r = Reason{Code: "acw", Name: ACWName}
	}
	c.Force(state, r, t0)
	if strings.HasPrefix(state, "busy_") {
		c.interactions["i1"] = t0
	}
	return c
}

func TestCommandMatrix(t *testing.T) {
	states := []string{sInactive, sUnavailable, sReady, sNotReady, sACW, sBusyReady, sBusyNotReady, sBusyACW}
	type cmd struct {
		name, command, data string
	}
	valid := []cmd{
		{"activate", protocol.CmdChannelActivate, `{"channeloptions":{"queue":"sales"}}`},
		{"deactivate", protocol.CmdChannelDeactivate, `{"channelOptions":{"reason":"1"}}`},
		{"ready", protocol.CmdChannelReady, `{}`},
		{"notready lunch", protocol.CmdChannelNotReady, `{"reasoncode":"lunch","reasondesc":"food"}`},
		{"notready break", protocol.CmdChannelNotReady, `{"reasoncode":"11"}`},
		{"notready acw", protocol.CmdChannelNotReady, `{"reasoncode":"acw"}`},
	}
	// want[state][command]: "x" = INVALID_STATE, "=" = success without change,
	// otherwise the machine state and reason code after success.
	want := map[string]map[string]string{
		sInactive:     {"activate": "not_ready/", "deactivate": "x", "ready": "x", "notready lunch": "x", "notready break": "x", "notready acw": "x"},
		sUnavailable:  {"activate": "x", "deactivate": "x", "ready": "x", "notready lunch": "x", "notready break": "x", "notready acw": "x"},
		sReady:        {"activate": "x", "deactivate": "inactive/eod", "ready": "=", "notready lunch": "not_ready/lunch", "notready break": "not_ready/break", "notready acw": "after_call_work/acw"},
		sNotReady:     {"activate": "x", "deactivate": "inactive/eod", "ready": "ready/", "notready lunch": "not_ready/lunch", "notready break": "=", "notready acw": "after_call_work/acw"},
		sACW:          {"activate": "x", "deactivate": "inactive/eod", "ready": "ready/", "notready lunch": "not_ready/lunch", "notready break": "not_ready/break", "notready acw": "="},
		sBusyReady:    {"activate": "x", "deactivate": "inactive/eod", "ready": "=", "notready lunch": "busy_not_ready/lunch", "notready break": "busy_not_ready/break", "notready acw": "busy_after_call_work/acw"},
		sBusyNotReady: {"activate": "x", "deactivate": "inactive/eod", "ready": "busy_ready/", "notready lunch": "busy_not_ready/lunch", "notready break": "=", "notready acw": "busy_after_call_work/acw"},
		sBusyACW:      {"activate": "x", "deactivate": "inactive/eod", "ready": "busy_ready/", "notready lunch": "busy_not_ready/lunch", "notready break": "busy_not_ready/break", "notready acw": "="},
	}
	invalid := []struct {
		cmd
		code protocol.FailureCode
	}{
		{cmd{"notready without reasoncode", protocol.CmdChannelNotReady, `{"reasondesc":"x"}`}, protocol.CodeInvalidRequest},
		{cmd{"notready empty reasoncode", protocol.CmdChannelNotReady, `{"reasoncode":""}`}, protocol.CodeInvalidRequest},
		{cmd{"notready numeric reasoncode", protocol.CmdChannelNotReady, `{"reasoncode":10}`}, protocol.CodeInvalidRequest},
		{cmd{"notready unknown", protocol.CmdChannelNotReady, `{"reasoncode":"nap"}`}, protocol.CodeInvalidReason},
		{cmd{"notready not selectable", protocol.CmdChannelNotReady, `{"reasoncode":"missed"}`}, protocol.CodeInvalidReason},
		{cmd{"notready no data", protocol.CmdChannelNotReady, ``}, protocol.CodeInvalidRequest},
		{cmd{"activate queue number", protocol.CmdChannelActivate, `{"channeloptions":{"queue":5}}`}, protocol.CodeInvalidRequest},
		{cmd{"activate options string", protocol.CmdChannelActivate, `{"channeloptions":"q"}`}, protocol.CodeInvalidRequest},
		{cmd{"deactivate unknown reason", protocol.CmdChannelDeactivate, `{"channelOptions":{"reason":"77"}}`}, protocol.CodeInvalidReason},
		{cmd{"ready with bad data", protocol.CmdChannelReady, `{"x":1}`}, ""},
		{cmd{"unknown", "channel.dance", `{}`}, protocol.CodeUnknownCommand},
	}
	cat := testCatalog()
	for _, st := range states {
		for _, c := range valid {
			t.Run(fmt.Sprintf("%s/%s", st, c.name), func(t *testing.T) {
				ch := inState(t, st)
				before := ch.Info()
				in, f := ParseCommand(c.command, json.RawMessage(c.data), cat)
				if f != nil {
					t.Fatalf("ParseCommand: %v", f)
				}
				exp := want[st][c.name]
				// The switch refuses first: nothing changes.
				refused := errors.New("refused by the switch")
				if _, err := ch.Fire(in, t0.Add(time.Second), func() error { return refused }); exp != "x" && exp != "=" && err != refused {
					t.Fatalf("Fire with a failing effect = %v, want its error", err)
				}
				if ch.Info() != before {
					t.Fatalf("a failed effect changed %+v -> %+v", before, ch.Info())
				}
				calls := 0
				changed, err := ch.Fire(in, t0.Add(time.Second), func() error { calls++; return nil })
				if exp == "x" {
					f, ok := err.(*protocol.Failure)
					if !ok || f.Code != protocol.CodeInvalidState {
						t.Fatalf("Fire = %v, want INVALID_STATE", err)
					}
					if state, _ := Display(st); !strings.Contains(f.Message, state) {
						t.Fatalf("message %q does not name the current state %s", f.Message, state)
					}
					if ch.Info() != before || calls != 0 {
						t.Fatalf("a refused command changed the channel or called the switch (%d calls)", calls)
					}
					return
				}
				if err != nil {
					t.Fatalf("Fire: %v", err)
				}
				if exp == "=" {
					if changed || calls != 0 || ch.Info() != before {
						t.Fatalf("a command that changes nothing: changed %v, %d switch calls, %+v -> %+v", changed, calls, before, ch.Info())
					}
					return
				}
				if !changed || calls != 1 {
					t.Fatalf("changed = %v after %d switch calls, want a change after one", changed, calls)
				}
				got := ch.Machine() + "/" + ch.Reason().Code
				if got != exp {
					t.Fatalf("after %s: %s, want %s", c.name, got, exp)
				}
			})
		}
		for _, c := range invalid {
			t.Run(fmt.Sprintf("%s/%s", st, c.name), func(t *testing.T) {
				ch := inState(t, st)
				before := ch.Info()
				_, f := ParseCommand(c.command, json.RawMessage(c.data), cat)
				if c.code == "" {
					// Unknown data fields are ignored for forward compatibility.
					if f != nil {
						t.Fatalf("ParseCommand: %v", f)
					}
					return
				}
				if f == nil || f.Code != c.code {
					t.Fatalf("ParseCommand = %v, want %s", f, c.code)
				}
				if ch.Info() != before {
					t.Fatal("invalid data changed the channel")
				}
			})
		}
	}
}

func TestInteractionsKeepPendingStatus(t *testing.T) {
	cat := testCatalog()
	acw, _ := cat.NotReadyReason("acw")
	tests := []struct {
		name    string
		start   string
		during  string // command data for notready, "ready", or ""
		autoACW bool
		want    string
	}{
		{"ready returns to ready", sReady, "", false, "ready/"},
		{"ready with auto acw", sReady, "", true, "after_call_work/acw"},
		{"pending not ready", sReady, `{"reasoncode":"lunch"}`, false, "not_ready/lunch"},
		{"pending not ready beats auto acw", sReady, `{"reasoncode":"lunch"}`, true, "not_ready/lunch"},
		{"pending ready from not ready", sNotReady, "ready", false, "ready/"},
		{"pending acw", sReady, `{"reasoncode":"acw"}`, false, "after_call_work/acw"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := inState(t, tt.start)
			if changed, err := ch.StartInteraction("i1", t0); err != nil || !changed {
				t.Fatalf("StartInteraction = %v, %v", changed, err)
			}
			if changed, _ := ch.StartInteraction("i2", t0); changed {
				t.Fatal("second concurrent interaction changed the status")
			}
			if !strings.HasPrefix(ch.Machine(), "busy_") {
				t.Fatalf("during interaction: %s", ch.Machine())
			}
			switch tt.during {
			case "":
			case "ready":
				mustApply(t, ch, protocol.CmdChannelReady, `{}`)
			default:
				mustApply(t, ch, protocol.CmdChannelNotReady, tt.during)
			}
			if changed, _ := ch.EndInteraction("i2", tt.autoACW, acw, t0); changed {
				t.Fatal("ending one of two interactions changed the status")
			}
			if _, err := ch.EndInteraction("i1", tt.autoACW, acw, t0); err != nil {
				t.Fatal(err)
			}
			if got := ch.Machine() + "/" + ch.Reason().Code; got != tt.want {
				t.Fatalf("after interaction: %s, want %s", got, tt.want)
			}
			if _, err := ch.EndInteraction("i1", false, acw, t0); err == nil {
				t.Fatal("ending an unknown interaction succeeded")
			}
		})
	}
	if _, err := inState(t, sInactive).StartInteraction("i", t0); err == nil {
		t.Fatal("interaction started on an inactive channel")
	}
}

func mustApply(tb testing.TB, ch *Channel, command, data string) {
	tb.Helper()
	in, f := ParseCommand(command, json.RawMessage(data), testCatalog())
	if f != nil {
		tb.Fatal(f)
	}
	if _, err := ch.Fire(in, t0, nil); err != nil {
		tb.Fatal(err)
	}
}

func TestPreviousIdle(t *testing.T) {
	ch := inState(t, sReady)
	mustApply(t, ch, protocol.CmdChannelNotReady, `{"reasoncode":"lunch"}`)
	mustApply(t, ch, protocol.CmdChannelNotReady, `{"reasoncode":"acw"}`)
	if p := ch.PreviousIdle(); p.Event != EvNotReady || p.Reason.Code != "lunch" {
		t.Fatalf("PreviousIdle = %+v, want not-ready lunch", p)
	}
	mustApply(t, ch, protocol.CmdChannelReady, `{}`)
	mustApply(t, ch, protocol.CmdChannelNotReady, `{"reasoncode":"acw"}`)
	if p := ch.PreviousIdle(); p.Event != EvReady {
		t.Fatalf("PreviousIdle = %+v, want ready", p)
	}
}

func TestEndpointTakenAndFreed(t *testing.T) {
	ch := inState(t, sInactive)
	for _, step := range []struct {
		ev   Event
		want string
		ok   bool
	}{
		{EvEndpointTaken, protocol.StateUnavailable, true},
		{EvActivate, protocol.StateUnavailable, false},
		{EvEndpointFreed, protocol.StateInactive, true},
		{EvEndpointFreed, protocol.StateInactive, false},
		{EvActivate, protocol.StateActive, true},
		{EvEndpointTaken, protocol.StateActive, false},
	} {
		if _, err := ch.Fire(Intent{Command: string(step.ev), Event: step.ev}, t0, nil); (err == nil) != step.ok {
			t.Fatalf("%s: Fire = %v, want ok %v", step.ev, err, step.ok)
		}
		if got := ch.Info().State; got != step.want {
			t.Fatalf("after %s: %s, want %s", step.ev, got, step.want)
		}
	}
}

func TestTimelineStartsIntervalOnEveryChange(t *testing.T) {
	ch := New(protocol.ChannelSpec{ID: "c", Name: "1", Type: "CHAT"}, "g", t0, 100)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	steps := []struct {
		cmd, data string
	}{
		{protocol.CmdChannelActivate, `{}`},
		{protocol.CmdChannelReady, `{}`},
		{protocol.CmdChannelNotReady, `{"reasoncode":"lunch"}`},
		{protocol.CmdChannelNotReady, `{"reasoncode":"break"}`}, // reason change: new interval
		{protocol.CmdChannelNotReady, `{"reasoncode":"break"}`}, // nothing changes
		{protocol.CmdChannelDeactivate, `{}`},
	}
	for i, s := range steps {
		in, f := ParseCommand(s.cmd, json.RawMessage(s.data), testCatalog())
		if f != nil {
			t.Fatal(f)
		}
		if _, err := ch.Fire(in, at(i+1), nil); err != nil {
			t.Fatal(err)
		}
	}
	tl := ch.Timeline()
	want := []string{"INACTIVE/not_ready/", "ACTIVE/not_ready/", "ACTIVE/ready/", "ACTIVE/not_ready/lunch", "ACTIVE/not_ready/break", "INACTIVE/not_ready/"}
	if len(tl) != len(want) {
		t.Fatalf("timeline has %d intervals, want %d: %+v", len(tl), len(want), tl)
	}
	for i, iv := range tl {
		if got := iv.State + "/" + iv.Status + "/" + iv.ReasonCode; got != want[i] {
			t.Errorf("interval %d = %s, want %s", i, got, want[i])
		}
		if i > 0 && !tl[i-1].End.Equal(iv.Start) {
			t.Errorf("interval %d starts at %v, previous ends at %v", i, iv.Start, tl[i-1].End)
		}
	}
	if !tl[len(tl)-1].End.IsZero() {
		t.Error("the current interval is closed")
	}
	if !tl[5].Start.Equal(at(6)) {
		t.Errorf("last interval starts %v, want %v", tl[5].Start, at(6))
	}
}

func TestTimelineIsBounded(t *testing.T) {
	ch := inState(t, sReady)
	ch.timelineCap = 5
	for i := range 20 {
		code := "lunch"
		if i%2 == 0 {
			code = "break"
		}
		mustApply(t, ch, protocol.CmdChannelNotReady, fmt.Sprintf(`{"reasoncode":%q}`, code))
	}
	if n := len(ch.Timeline()); n != 5 {
		t.Fatalf("timeline has %d intervals, cap 5", n)
	}
}

func TestMermaidListsEveryTransition(t *testing.T) {
	m := Mermaid()
	if !strings.HasPrefix(m, "stateDiagram-v2\n") {
		t.Fatalf("not a state diagram: %q", m)
	}
	for _, tr := range transitions {
		for _, src := range tr.Src {
			line := fmt.Sprintf("%s --> %s: %s", src, tr.Dst, tr.Name)
			if !strings.Contains(m, line) {
				t.Errorf("diagram lacks %q", line)
			}
		}
	}
}

func TestMachineStateRoundTrip(t *testing.T) {
	for _, s := range []string{sInactive, sUnavailable, sReady, sNotReady, sACW, sBusyReady, sBusyNotReady, sBusyACW} {
		state, status := Display(s)
		got, err := MachineState(state, status)
		if err != nil || got != s {
			t.Errorf("MachineState(Display(%s)) = %s, %v", s, got, err)
		}
	}
	if _, err := MachineState("ACTIVE", "sleeping"); err == nil {
		t.Error("unknown status accepted")
	}
}

func TestSaveRestoreRoundTrip(t *testing.T) {
	ch := inState(t, sReady)
	mustApply(t, ch, protocol.CmdChannelNotReady, `{"reasoncode":"lunch"}`)
	if _, err := ch.StartInteraction("i1", t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if n := len(ch.TakeNew()); n == 0 {
		t.Fatal("TakeNew returned nothing after changes")
	}
	if n := len(ch.TakeNew()); n != 0 {
		t.Fatalf("TakeNew returned %d intervals twice", n)
	}
	saved := ch.Save()
	b, err := json.Marshal(saved)
	if err != nil {
		t.Fatal(err)
	}
	var back Saved
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	r, err := Restore(back, 100)
	if err != nil {
		t.Fatal(err)
	}
	if r.Info() != ch.Info() || r.Snapshot().Since != ch.Snapshot().Since || !r.InInteraction() {
		t.Fatalf("restored %+v, want %+v", r.Snapshot(), ch.Snapshot())
	}
	if len(r.TakeNew()) != 0 {
		t.Fatal("a restored channel reports its restored interval as new")
	}
	// The restored machine keeps working, including the pending status.
	if _, err := r.EndInteraction("i1", false, Reason{}, t0.Add(2*time.Second)); err != nil || r.Machine() != sNotReady || r.Reason().Code != "lunch" {
		t.Fatalf("after the interaction: %s %s %v", r.Machine(), r.Reason().Code, err)
	}
	back.Machine = "dancing"
	if _, err := Restore(back, 100); err == nil {
		t.Fatal("unknown machine state restored")
	}
}
