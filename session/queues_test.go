package session

import (
	"testing"
	"time"

	"github.com/ctibroker/ctibroker/protocol"
)

// Counts go to the watches at once; a change of the time-based figures
// alone waits until the queue interval has passed since the queue's last
// change went out, and then carries the latest figures.
func TestQueueChangesCoalesceTimeBasedFigures(t *testing.T) {
	m := &Manager{opts: Options{QueueInterval: time.Second, Node: "n1"}}
	m.board = newBoard(m)
	qb := newQueueBoard(m)
	var got []protocol.QueueFigures
	qb.watches[&QueueWatch{qb: qb, match: func(*protocol.QueueFigures) bool { return true },
		deliver: func(prev, cur *protocol.QueueFigures) { got = append(got, *cur) }}] = struct{}{}
	set := func(f protocol.QueueFigures) {
		qb.views["v"] = &queueView{View: "v", Node: "n1", Queues: []protocol.QueueFigures{f}}
	}
	t0 := time.Unix(1000, 0)
	f := protocol.QueueFigures{Name: "sales", Waiting: 1, Offered: 1, LongestWaitStart: 5}
	set(f)
	if next := qb.recompute(t0); next != 0 || len(got) != 1 {
		t.Fatalf("a new queue: %d changes, next %v", len(got), next)
	}
	f.LongestWaitStart = 7 // time-based only: held back
	set(f)
	if next := qb.recompute(t0.Add(300 * time.Millisecond)); next != 700*time.Millisecond || len(got) != 1 {
		t.Fatalf("a time-based change within the interval: %d changes, next %v", len(got), next)
	}
	f.LongestWaitStart = 9
	set(f)
	if next := qb.recompute(t0.Add(time.Second)); next != 0 || len(got) != 2 || got[1].LongestWaitStart != 9 {
		t.Fatalf("once the interval passed: %v, next %v", got, next)
	}
	f.Waiting, f.Offered, f.LongestWaitStart = 2, 2, 11 // a count: at once
	set(f)
	if next := qb.recompute(t0.Add(1100 * time.Millisecond)); next != 0 || len(got) != 3 || got[2].Waiting != 2 {
		t.Fatalf("a count within the interval: %v, next %v", got, next)
	}
}

// Views of different names (a simulated switch per node) add up; the
// service level and speed of answer are those of the sum.
func TestMergeQueuesAddsViews(t *testing.T) {
	views := map[string]*queueView{
		"a": {Queues: []protocol.QueueFigures{{Name: "q", Teams: []string{"x"}, Offered: 3, Answered: 2, AvgSpeedOfAnswerMs: 1000, AnsweredInSL: 2, LongestWaitStart: 50, Waiting: 1}}},
		"b": {Queues: []protocol.QueueFigures{{Name: "q", Teams: []string{"y"}, Offered: 2, Answered: 1, AvgSpeedOfAnswerMs: 4000, AbandonedAfterSL: 1, Abandoned: 1, LongestWaitStart: 40, Waiting: 1}}},
	}
	q := mergeQueues(views, map[string]queueAgents{"q": {Staffed: 2, Ready: 1, Busy: 1}})["q"]
	want := protocol.QueueFigures{Name: "q", Teams: []string{"x", "y"}, Waiting: 2, LongestWaitStart: 40, Offered: 5, Answered: 3, Abandoned: 1,
		AvgSpeedOfAnswerMs: 2000, ServiceLevelPct: 200.0 / 3, AnsweredInSL: 2, AbandonedAfterSL: 1, Staffed: 2, Ready: 1, Busy: 1}
	if q.Name != want.Name || len(q.Teams) != 2 || q.Waiting != want.Waiting || q.LongestWaitStart != want.LongestWaitStart || q.Offered != want.Offered ||
		q.Answered != want.Answered || q.Abandoned != want.Abandoned || q.AvgSpeedOfAnswerMs != want.AvgSpeedOfAnswerMs ||
		q.ServiceLevelPct != want.ServiceLevelPct || q.Staffed != 2 || q.Ready != 1 || q.Busy != 1 {
		t.Fatalf("merged:\n%+v\nwant\n%+v", q, want)
	}
}

// An agent counts once per queue, with its first active channel's status.
func TestCountQueues(t *testing.T) {
	counts := map[string]*queueAgents{}
	v := &protocol.AgentView{Channels: []protocol.ChannelState{
		{State: protocol.StateActive, Status: protocol.StatusReady, Queues: []string{"a", "b"}},
		{State: protocol.StateActive, Status: "busy_telephony", Queues: []string{"b", "c"}},
		{State: protocol.StateInactive, Queues: []string{"d"}},
	}}
	if !countQueues(counts, v, 1) {
		t.Fatal("no change reported")
	}
	if *counts["a"] != (queueAgents{Staffed: 1, Ready: 1}) || *counts["b"] != (queueAgents{Staffed: 1, Ready: 1}) ||
		*counts["c"] != (queueAgents{Staffed: 1, Busy: 1}) || counts["d"] != nil {
		t.Fatalf("counts: a %v b %v c %v d %v", counts["a"], counts["b"], counts["c"], counts["d"])
	}
	countQueues(counts, v, -1)
	if len(counts) != 0 {
		t.Fatalf("after the agent left: %v", counts)
	}
}

// Queue figures from another node, as this node decodes and merges them:
// whatever the bytes, no panic, and a view of too many queues is refused.
func FuzzQueueView(f *testing.F) {
	f.Add([]byte(`{"kind":"view","view":"v","node":"n2","queues":[{"name":"q","offered":1,"answered":1,"avgSpeedOfAnswerMs":5,"teams":["t"]}]}`))
	f.Add([]byte(`{"kind":"ask","node":"n2"}`))
	f.Add([]byte(`{"kind":"view","view":"v","node":"n2","queues":[{"name":"q","answered":-3,"avgSpeedOfAnswerMs":9223372036854775807}]}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		m := &Manager{opts: Options{QueueInterval: time.Second, Node: "n1"}}
		m.board = newBoard(m)
		qb := newQueueBoard(m)
		qb.receive(t.Context(), payload)
		for _, v := range qb.views {
			if len(v.Queues) > protocol.MaxViewQueues {
				t.Fatalf("a view of %d queues was kept", len(v.Queues))
			}
		}
		qb.recompute(time.Now())
	})
}
