package history

import (
	"slices"

	"github.com/ctibroker/ctibroker/protocol"
)

// Period is an agent's activity in one report interval.
type Period struct {
	AgentID          string    `json:"agentId"`
	From             int64     `json:"from"`
	To               int64     `json:"to"`
	LoginMs          int64     `json:"loginMs"`
	ReadyMs          int64     `json:"readyMs"`
	NotReadyMs       int64     `json:"notReadyMs"`
	NotReadyReasonMs Durations `json:"notReadyReasonMs"`
	AfterCallWorkMs  int64     `json:"afterCallWorkMs"`
	BusyMs           int64     `json:"busyMs"`
	Interactions     int       `json:"interactions"`
	// FirstLogin and LastLogout within the period (0: none).
	FirstLogin int64 `json:"firstLogin,omitempty"`
	LastLogout int64 `json:"lastLogout,omitempty"`
}

// segment is a period during which an agent's aggregate status is constant.
type segment struct {
	start, end int64
	status     string
	reason     string // for not_ready: the first not-ready channel's reason
}

// aggregate merges an agent's channel intervals into aggregate-status
// segments (protocol.AggregateStatus at every instant).
func aggregate(ivs []Interval) []segment {
	var cuts []int64
	for _, iv := range ivs {
		cuts = append(cuts, iv.Start, iv.End)
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	var out []segment
	for i := 0; i+1 < len(cuts); i++ {
		s, e := cuts[i], cuts[i+1]
		var chans []protocol.ChannelState
		reason := ""
		for _, iv := range ivs {
			if iv.Start <= s && iv.End >= e && iv.End > iv.Start {
				chans = append(chans, protocol.ChannelState{State: iv.State, Status: iv.Status})
				if reason == "" && iv.State == protocol.StateActive && iv.Status == protocol.StatusNotReady {
					reason = reasonKey(iv.ReasonCode)
				}
			}
		}
		st := protocol.AggregateStatus(chans)
		if n := len(out); n > 0 && out[n-1].status == st && out[n-1].reason == reason && out[n-1].end == s {
			out[n-1].end = e
			continue
		}
		out = append(out, segment{s, e, st, reason})
	}
	return out
}

// Report cuts one agent's intervals (all its sessions) and interaction
// starts into periods of length step from from to to, exactly at the
// boundaries. The caller bounds the number of periods ((to-from)/step); the
// loop counts periods, never accumulates times, so no input makes it run on.
func Report(agent string, ivs []Interval, interactionStarts []int64, from, to, step int64) []Period {
	if step <= 0 || to <= from {
		return nil
	}
	segs := aggregate(ivs)
	stillIn := slices.ContainsFunc(ivs, func(iv Interval) bool { return iv.Open && iv.State == protocol.StateActive })
	n := (to-from)/step + min((to-from)%step, 1)
	out := make([]Period, 0, n)
	for i := range n {
		p := from + i*step
		pe := min(p+step, to)
		per := Period{AgentID: agent, From: p, To: pe, NotReadyReasonMs: Durations{}}
		prevLoggedIn := false
		for _, sg := range segs {
			s, e := max(sg.start, p), min(sg.end, pe)
			loggedIn := sg.status != protocol.StatusLoggedOut
			if e > s {
				d := e - s
				switch sg.status {
				case protocol.StatusReady:
					per.ReadyMs += d
				case protocol.StatusNotReady:
					per.NotReadyMs += d
					per.NotReadyReasonMs[sg.reason] += d
				case protocol.StatusAfterCallWork:
					per.AfterCallWorkMs += d
				case protocol.StatusBusy:
					per.BusyMs += d
				}
				if loggedIn {
					per.LoginMs += d
				}
			}
			if loggedIn && !prevLoggedIn && sg.start >= p && sg.start < pe && per.FirstLogin == 0 {
				per.FirstLogin = sg.start
			}
			if !loggedIn && prevLoggedIn && sg.start >= p && sg.start < pe {
				per.LastLogout = sg.start
			}
			prevLoggedIn = loggedIn
		}
		if n := len(segs); n > 0 && !stillIn && segs[n-1].status != protocol.StatusLoggedOut && segs[n-1].end > p && segs[n-1].end <= pe {
			// Logged in until the session ended: a logout at its end.
			per.LastLogout = segs[n-1].end
		}
		for _, at := range interactionStarts {
			if at >= p && at < pe {
				per.Interactions++
			}
		}
		out = append(out, per)
	}
	return out
}

// Total adds periods up.
func Total(agent string, ps []Period) Period {
	t := Period{AgentID: agent, NotReadyReasonMs: Durations{}}
	for i, p := range ps {
		if i == 0 || p.From < t.From {
			t.From = p.From
		}
		t.To = max(t.To, p.To)
		t.LoginMs += p.LoginMs
		t.ReadyMs += p.ReadyMs
		t.NotReadyMs += p.NotReadyMs
		t.AfterCallWorkMs += p.AfterCallWorkMs
		t.BusyMs += p.BusyMs
		t.Interactions += p.Interactions
		for k, v := range p.NotReadyReasonMs {
			t.NotReadyReasonMs[k] += v
		}
		if p.FirstLogin != 0 && (t.FirstLogin == 0 || p.FirstLogin < t.FirstLogin) {
			t.FirstLogin = p.FirstLogin
		}
		t.LastLogout = max(t.LastLogout, p.LastLogout)
	}
	return t
}
