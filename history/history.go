// Package history turns session timelines into what supervisors and
// reporting tools ask for: status intervals, time spent per state, status
// and reason, login and logout times, per-interaction durations, and per
// agent reports cut into fixed intervals. Everything here is a pure function
// of timeline entries; times are Unix milliseconds.
package history

import (
	"cmp"
	"slices"

	"github.com/ctibroker/ctibroker/protocol"
)

// Entry kinds.
const (
	// KindStatus (empty) opens a channel's (state, status, reason) interval;
	// it ends where the channel's next entry, or the session's end, starts.
	KindStatus = ""
	// KindInteraction records an interaction event on a channel.
	KindInteraction = "interaction"
	// KindTalk is an interaction's talk record, written when its wrap-up
	// is completed: the whole interaction as desktops last saw it.
	KindTalk = "talk"
	// KindEnd closes every interval of the session.
	KindEnd = "end"
	// KindStart opens a session and names the agent's teams.
	KindStart = "start"
	// KindTeams records that the agent's teams changed (a re-issued token).
	KindTeams = "teams"
)

// Interaction events.
const (
	InteractionStart  = "start"
	InteractionAnswer = "answer"
	InteractionEnd    = "end"
)

// Entry is one timeline entry as stored.
type Entry struct {
	Kind        string   `json:"kind,omitempty"`
	Agent       string   `json:"agent"`
	Session     string   `json:"session"`
	Channel     string   `json:"channel,omitempty"`
	Group       string   `json:"group,omitempty"`
	Type        string   `json:"type,omitempty"`
	State       string   `json:"state,omitempty"`
	Status      string   `json:"status,omitempty"`
	ReasonCode  string   `json:"reasonCode,omitempty"`
	ReasonName  string   `json:"reasonName,omitempty"`
	Interaction string   `json:"interaction,omitempty"`
	Event       string   `json:"event,omitempty"`
	Teams       []string `json:"teams,omitempty"`
	At          int64    `json:"at"`
	// Record: for KindTalk, the interaction.
	Record *protocol.Interaction `json:"record,omitempty"`
	// ChangedBy: for a status entry a supervisor caused, who.
	ChangedBy *protocol.ChangedBy `json:"changedBy,omitempty"`
}

// TalkRecord is one agent's record of an interaction, with the time spent
// in each phase (000_6c7d467a796772da.txt: WAITING = ringing, ACTIVE =
// talking, HELD, ACW) and the handle time (active + held + ACW).
type TalkRecord struct {
	AgentID     string               `json:"agentId"`
	SessionID   string               `json:"sessionId"`
	Interaction protocol.Interaction `json:"interaction"`
	QueuedMs    int64                `json:"queuedMs"`
	WaitingMs   int64                `json:"waitingMs"`
	ActiveMs    int64                `json:"activeMs"`
	HeldMs      int64                `json:"heldMs"`
	ACWMs       int64                `json:"acwMs"`
	HandleMs    int64                `json:"handleMs"`
}

// TalkRecords returns the talk records of a session's entries.
func TalkRecords(entries []Entry) []TalkRecord {
	var out []TalkRecord
	for _, e := range entries {
		if e.Kind != KindTalk || e.Record == nil {
			continue
		}
		r := TalkRecord{AgentID: e.Agent, SessionID: e.Session, Interaction: *e.Record, QueuedMs: e.Record.QueuedMs}
		for _, p := range e.Record.Phases {
			d := max(p.End-p.Start, 0)
			switch p.Phase {
			case protocol.PhaseWaiting:
				r.WaitingMs += d
			case protocol.PhaseActive:
				r.ActiveMs += d
			case protocol.PhaseHeld:
				r.HeldMs += d
			case protocol.PhaseACW:
				r.ACWMs += d
			}
		}
		r.HandleMs = r.ActiveMs + r.HeldMs + r.ACWMs
		out = append(out, r)
	}
	return out
}

// Interval is a period a channel spent in one (state, status, reason).
type Interval struct {
	Agent      string `json:"agentId"`
	Session    string `json:"sessionId"`
	Channel    string `json:"channel"`
	Group      string `json:"group,omitempty"`
	Type       string `json:"type"`
	State      string `json:"state"`
	Status     string `json:"status"`
	ReasonCode string `json:"reasonCode"`
	ReasonName string `json:"reasonName"`
	Start      int64  `json:"start"`
	End        int64  `json:"end"`
	DurationMs int64  `json:"durationMs"`
	// ChangedBy: who started the interval when it was not the agent.
	ChangedBy *protocol.ChangedBy `json:"changedBy,omitempty"`
	// Open: the interval is still running; End is "now".
	Open bool `json:"open"`
}

// Intervals builds every channel's intervals from a session's entries.
// Intervals not closed by a later entry or the session's end are open and
// end at now.
func Intervals(entries []Entry, now int64) []Interval {
	sorted := slices.Clone(entries)
	slices.SortStableFunc(sorted, func(a, b Entry) int { return cmp.Compare(a.At, b.At) })
	var out []Interval
	open := map[string]int{} // channel -> index in out of its open interval
	closeAt := func(ch string, at int64) {
		if i, ok := open[ch]; ok {
			out[i].End, out[i].Open = at, false
			delete(open, ch)
		}
	}
	for _, e := range sorted {
		switch e.Kind {
		case KindStatus:
			closeAt(e.Channel, e.At)
			out = append(out, Interval{Agent: e.Agent, Session: e.Session, Channel: e.Channel, Group: e.Group, Type: e.Type,
				State: e.State, Status: e.Status, ReasonCode: e.ReasonCode, ReasonName: e.ReasonName, Start: e.At, Open: true, ChangedBy: e.ChangedBy})
			open[e.Channel] = len(out) - 1
		case KindEnd:
			for ch := range open {
				closeAt(ch, e.At)
			}
		}
	}
	for i := range out {
		if out[i].Open {
			out[i].End = max(now, out[i].Start)
		}
		out[i].DurationMs = out[i].End - out[i].Start
	}
	return out
}

// Clip returns the intervals overlapping [from, to), cut at the bounds.
func Clip(ivs []Interval, from, to int64) []Interval {
	var out []Interval
	for _, iv := range ivs {
		s, e := max(iv.Start, from), min(iv.End, to)
		if e <= s && !(iv.Start == iv.End && iv.Start >= from && iv.Start < to) {
			continue
		}
		iv.Start, iv.End, iv.DurationMs = s, e, e-s
		out = append(out, iv)
	}
	return out
}

// Durations sums time by key.
type Durations map[string]int64

// Totals is the time a session or channel spent in each state and status,
// and in not-ready per reason.
type Totals struct {
	StateMs          Durations `json:"stateMs"`
	StatusMs         Durations `json:"statusMs"`
	NotReadyReasonMs Durations `json:"notReadyReasonMs"`
}

// Sum adds up intervals.
func Sum(ivs []Interval) Totals {
	t := Totals{StateMs: Durations{}, StatusMs: Durations{}, NotReadyReasonMs: Durations{}}
	for _, iv := range ivs {
		t.StateMs[iv.State] += iv.DurationMs
		if iv.State != protocol.StateActive {
			continue
		}
		t.StatusMs[iv.Status] += iv.DurationMs
		if iv.Status == protocol.StatusNotReady || iv.Status == protocol.StatusBusyNotReady {
			t.NotReadyReasonMs[reasonKey(iv.ReasonCode)] += iv.DurationMs
		}
	}
	return t
}

func reasonKey(code string) string {
	if code == "" {
		return "none"
	}
	return code
}

// Interaction is one interaction's durations.
type Interaction struct {
	ID      string `json:"interactionId"`
	Channel string `json:"channel"`
	Start   int64  `json:"start"`
	Answer  int64  `json:"answer,omitempty"`
	End     int64  `json:"end,omitempty"`
	// RingMs: offered until answered (0 when the switch reported no answer).
	RingMs int64 `json:"ringMs"`
	// TalkMs: answered (or offered) until ended, or until now while open.
	TalkMs int64 `json:"talkMs"`
	// ACWMs: after-call work that followed on the channel.
	ACWMs      int64 `json:"acwMs"`
	InProgress bool  `json:"inProgress"`
}

// Interactions pairs interaction events and measures them; ACW is the
// after-call-work interval starting when the interaction ended.
func Interactions(entries []Entry, ivs []Interval, now int64) []Interaction {
	byID := map[string]*Interaction{}
	var order []string
	for _, e := range entries {
		if e.Kind != KindInteraction {
			continue
		}
		key := e.Channel + "\x00" + e.Interaction
		it := byID[key]
		if it == nil {
			it = &Interaction{ID: e.Interaction, Channel: e.Channel}
			byID[key] = it
			order = append(order, key)
		}
		switch e.Event {
		case InteractionStart:
			it.Start = e.At
		case InteractionAnswer:
			it.Answer = e.At
		case InteractionEnd:
			it.End = e.At
		}
	}
	out := make([]Interaction, 0, len(order))
	for _, key := range order {
		it := *byID[key]
		talkFrom := it.Start
		if it.Answer > 0 {
			it.RingMs, talkFrom = it.Answer-it.Start, it.Answer
		}
		if it.End == 0 {
			it.InProgress, it.TalkMs = true, max(now-talkFrom, 0)
		} else {
			it.TalkMs = it.End - talkFrom
			for _, iv := range ivs {
				if iv.Channel == it.Channel && iv.Start == it.End && iv.Status == protocol.StatusAfterCallWork {
					it.ACWMs = iv.DurationMs
				}
			}
		}
		out = append(out, it)
	}
	return out
}

// LoginLogout returns when the session first had an ACTIVE channel and
// when its last ACTIVE interval ended (0: never, or still logged in).
func LoginLogout(ivs []Interval) (login, logout int64) {
	stillIn := false
	for _, iv := range ivs {
		if iv.State != protocol.StateActive {
			continue
		}
		if login == 0 || iv.Start < login {
			login = iv.Start
		}
		if iv.Open {
			stillIn = true
		}
		logout = max(logout, iv.End)
	}
	if stillIn {
		logout = 0
	}
	return login, logout
}

// InteractionStats sums an agent's talk records (002_0dc46d1b6669c548.txt's
// agent metrics): interactions handled (talked on), inbound answered and
// missed (rang out or rejected), outbound attempted and answered, and the
// average handle, talk, hold, ring and after-call-work times of the
// handled ones.
type InteractionStats struct {
	Handled           int   `json:"handled"`
	InboundAnswered   int   `json:"inboundAnswered"`
	InboundMissed     int   `json:"inboundMissed"`
	OutboundAttempted int   `json:"outboundAttempted"`
	OutboundAnswered  int   `json:"outboundAnswered"`
	AvgHandleMs       int64 `json:"avgHandleMs"`
	AvgTalkMs         int64 `json:"avgTalkMs"`
	AvgHoldMs         int64 `json:"avgHoldMs"`
	AvgRingMs         int64 `json:"avgRingMs"`
	AvgACWMs          int64 `json:"avgAcwMs"`
}

// Stats computes InteractionStats over records.
func Stats(records []TalkRecord) InteractionStats {
	var s InteractionStats
	var handle, talk, hold, ring, acw int64
	for _, r := range records {
		answered := r.ActiveMs > 0 || slices.ContainsFunc(r.Interaction.Phases, func(p protocol.Phase) bool { return p.Phase == protocol.PhaseActive })
		switch r.Interaction.Direction {
		case protocol.DirInbound:
			if answered {
				s.InboundAnswered++
			} else if r.Interaction.Cause == protocol.CauseNoAnswer || r.Interaction.Cause == protocol.CauseRejected {
				s.InboundMissed++
			}
		case protocol.DirOutbound:
			s.OutboundAttempted++
			if answered {
				s.OutboundAnswered++
			}
		}
		if answered {
			s.Handled++
			handle, talk, hold, ring, acw = handle+r.HandleMs, talk+r.ActiveMs, hold+r.HeldMs, ring+r.WaitingMs, acw+r.ACWMs
		}
	}
	if n := int64(s.Handled); n > 0 {
		s.AvgHandleMs, s.AvgTalkMs, s.AvgHoldMs, s.AvgRingMs, s.AvgACWMs = handle/n, talk/n, hold/n, ring/n, acw/n
	}
	return s
}
