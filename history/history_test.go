package history

import (
	"reflect"
	"testing"

	"github.com/ctibroker/ctibroker/protocol"
)

const sec = int64(1000)

// day: alice logs in at 100 s, ready at 110, lunch at 200, break at 250,
// ready at 300, a call 400..460 (answered at 410) with ACW to 480, logs out
// at 500 (session ends).
func day() []Entry {
	st := func(at int64, state, status, reason string) Entry {
		return Entry{Agent: "alice", Session: "s1", Channel: "phone", Type: "TELEPHONY", State: state, Status: status, ReasonCode: reason, At: at * sec}
	}
	it := func(at int64, ev string) Entry {
		return Entry{Kind: KindInteraction, Agent: "alice", Session: "s1", Channel: "phone", Interaction: "c1", Event: ev, At: at * sec}
	}
	return []Entry{
		st(50, "INACTIVE", "not_ready", ""),
		st(100, "ACTIVE", "not_ready", ""),
		st(110, "ACTIVE", "ready", ""),
		st(200, "ACTIVE", "not_ready", "lunch"),
		st(250, "ACTIVE", "not_ready", "break"), // a reason change starts a new interval
		st(300, "ACTIVE", "ready", ""),
		it(400, InteractionStart), st(400, "ACTIVE", "busy_ready", ""),
		it(410, InteractionAnswer),
		it(460, InteractionEnd), st(460, "ACTIVE", "after_call_work", "acw"),
		st(480, "ACTIVE", "ready", ""),
		st(500, "INACTIVE", "not_ready", "eod"),
		{Kind: KindEnd, Agent: "alice", Session: "s1", At: 500 * sec},
	}
}

func TestIntervalsAndTotals(t *testing.T) {
	ivs := Intervals(day(), 1000*sec)
	if len(ivs) != 10 {
		t.Fatalf("%d intervals: %+v", len(ivs), ivs)
	}
	for i, iv := range ivs {
		if iv.Open {
			t.Fatalf("interval %d open after the session ended: %+v", i, iv)
		}
		if i > 0 && ivs[i-1].End != iv.Start {
			t.Fatalf("interval %d does not start where %d ends", i, i-1)
		}
	}
	tot := Sum(ivs)
	want := Totals{
		StateMs:          Durations{"INACTIVE": 50 * sec, "ACTIVE": 400 * sec},
		StatusMs:         Durations{"not_ready": 110 * sec, "ready": 210 * sec, "busy_ready": 60 * sec, "after_call_work": 20 * sec},
		NotReadyReasonMs: Durations{"none": 10 * sec, "lunch": 50 * sec, "break": 50 * sec},
	}
	if !reflect.DeepEqual(tot, want) {
		t.Fatalf("totals\n got %+v\nwant %+v", tot, want)
	}
	if in, out := LoginLogout(ivs); in != 100*sec || out != 500*sec {
		t.Fatalf("login/logout = %d/%d", in, out)
	}
	its := Interactions(day(), ivs, 1000*sec)
	if len(its) != 1 || its[0].RingMs != 10*sec || its[0].TalkMs != 50*sec || its[0].ACWMs != 20*sec || its[0].InProgress {
		t.Fatalf("interactions = %+v", its)
	}
}

func TestOpenIntervalsRunUntilNow(t *testing.T) {
	entries := day()[:8] // logged in, call started at 400 (busy_ready), no end yet
	ivs := Intervals(entries, 450*sec)
	last := ivs[len(ivs)-1]
	if !last.Open || last.End != 450*sec || last.DurationMs != 50*sec {
		t.Fatalf("open interval = %+v", last)
	}
	if _, out := LoginLogout(ivs); out != 0 {
		t.Fatalf("logout %d while logged in", out)
	}
	its := Interactions(entries, ivs, 450*sec)
	if !its[0].InProgress || its[0].TalkMs != 50*sec {
		t.Fatalf("interaction in progress = %+v", its[0])
	}
}

func TestClip(t *testing.T) {
	ivs := Intervals(day(), 1000*sec)
	got := Clip(ivs, 220*sec, 320*sec)
	var total int64
	for _, iv := range got {
		total += iv.DurationMs
		if iv.Start < 220*sec || iv.End > 320*sec {
			t.Fatalf("not cut at the bounds: %+v", iv)
		}
	}
	if len(got) != 3 || total != 100*sec {
		t.Fatalf("clip = %+v", got)
	}
}

func TestReportCutsAtBoundaries(t *testing.T) {
	ivs := Intervals(day(), 1000*sec)
	ps := Report("alice", ivs, []int64{400 * sec}, 0, 600*sec, 200*sec)
	if len(ps) != 3 {
		t.Fatalf("%d periods", len(ps))
	}
	tests := []struct {
		p                                         Period
		login, ready, notReady, acw, busy, nInter int64
		firstLogin, lastLogout                    int64
		reasons                                   Durations
	}{
		{ps[0], 100, 90, 10, 0, 0, 0, 100, 0, Durations{"none": 10 * sec}},
		{ps[1], 200, 100, 100, 0, 0, 0, 0, 0, Durations{"lunch": 50 * sec, "break": 50 * sec}},
		{ps[2], 100, 20, 0, 20, 60, 1, 0, 500, Durations{}},
	}
	for i, tt := range tests {
		got := []int64{tt.p.LoginMs, tt.p.ReadyMs, tt.p.NotReadyMs, tt.p.AfterCallWorkMs, tt.p.BusyMs, int64(tt.p.Interactions), tt.p.FirstLogin, tt.p.LastLogout}
		want := []int64{tt.login * sec, tt.ready * sec, tt.notReady * sec, tt.acw * sec, tt.busy * sec, tt.nInter, tt.firstLogin * sec, tt.lastLogout * sec}
		if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(tt.p.NotReadyReasonMs, tt.reasons) {
			t.Errorf("period %d: login,ready,notReady,acw,busy,interactions,firstLogin,lastLogout = %v, want %v; reasons %v want %v",
				i, got, want, tt.p.NotReadyReasonMs, tt.reasons)
		}
	}
	tot := Total("alice", ps)
	if tot.LoginMs != 400*sec || tot.FirstLogin != 100*sec || tot.LastLogout != 500*sec || tot.Interactions != 1 {
		t.Fatalf("total = %+v", tot)
	}
	// Still logged in at the end of the window: no logout.
	open := Intervals(day()[:6], 350*sec)
	if ps := Report("alice", open, nil, 0, 600*sec, 600*sec); ps[0].LastLogout != 0 {
		t.Fatalf("logout reported while logged in: %+v", ps[0])
	}
}

func TestAggregateAcrossChannels(t *testing.T) {
	// Phone ready 0..100; chat not ready 50..150: the agent is ready while
	// the phone is, then not ready (lunch) until 150.
	ivs := []Interval{
		{Channel: "phone", State: "ACTIVE", Status: "ready", Start: 0, End: 100 * sec},
		{Channel: "chat", State: "ACTIVE", Status: "not_ready", ReasonCode: "lunch", Start: 50 * sec, End: 150 * sec},
	}
	ps := Report("a", ivs, nil, 0, 200*sec, 200*sec)
	if ps[0].ReadyMs != 100*sec || ps[0].NotReadyMs != 50*sec || ps[0].LoginMs != 150*sec || ps[0].NotReadyReasonMs["lunch"] != 50*sec {
		t.Fatalf("aggregate = %+v", ps[0])
	}
}

func TestInteractionStats(t *testing.T) {
	ph := func(ps ...protocol.Phase) []protocol.Phase { return ps }
	rec := func(dir, cause string, phases []protocol.Phase) Entry {
		return Entry{Kind: KindTalk, Agent: "a", Session: "s", Record: &protocol.Interaction{ID: "i", Direction: dir, Cause: cause, Phases: phases}}
	}
	entries := []Entry{
		rec(protocol.DirInbound, protocol.CauseReleased, ph(protocol.Phase{Phase: protocol.PhaseWaiting, Start: 0, End: 1000},
			protocol.Phase{Phase: protocol.PhaseActive, Start: 1000, End: 5000}, protocol.Phase{Phase: protocol.PhaseHeld, Start: 5000, End: 6000},
			protocol.Phase{Phase: protocol.PhaseACW, Start: 6000, End: 8000})),
		rec(protocol.DirInbound, protocol.CauseNoAnswer, ph(protocol.Phase{Phase: protocol.PhaseWaiting, Start: 0, End: 20000})),
		rec(protocol.DirInbound, protocol.CauseAbandoned, ph(protocol.Phase{Phase: protocol.PhaseWaiting, Start: 0, End: 3000})),
		rec(protocol.DirOutbound, protocol.CauseBusy, ph(protocol.Phase{Phase: protocol.PhaseWaiting, Start: 0, End: 500})),
		rec(protocol.DirOutbound, protocol.CauseReleased, ph(protocol.Phase{Phase: protocol.PhaseWaiting, Start: 0, End: 3000},
			protocol.Phase{Phase: protocol.PhaseActive, Start: 3000, End: 9000})),
		{Kind: KindInteraction, Interaction: "i", Event: InteractionStart}, // not a talk record
	}
	got := Stats(TalkRecords(entries))
	want := InteractionStats{Handled: 2, InboundAnswered: 1, InboundMissed: 1, OutboundAttempted: 2, OutboundAnswered: 1,
		AvgHandleMs: (7000 + 6000) / 2, AvgTalkMs: (4000 + 6000) / 2, AvgHoldMs: 500, AvgRingMs: (1000 + 3000) / 2, AvgACWMs: 1000}
	if got != want {
		t.Fatalf("Stats = %+v\nwant    %+v", got, want)
	}
	if (Stats(nil) != InteractionStats{}) {
		t.Fatal("no records, no stats")
	}
}
