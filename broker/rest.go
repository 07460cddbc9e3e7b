package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ctibroker/ctibroker/history"
	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/session"
)

// REST API: JSON, the same authentication as the WebSocket, errors as
// {"error":{"code","message"}}, lists as {"list","pageNum","pageSize","total"}
// (pages from 1), times accepted as RFC 3339 or Unix ms and returned as Unix
// ms, durations in milliseconds in fields ending in Ms. Every route is
// described in docs/openapi.yaml; a test keeps the two in step.

// apiError is a REST error: a failure code (its HTTP status comes from the
// code table) and a message.
type apiError struct {
	code protocol.FailureCode
	msg  string
}

func (e *apiError) Error() string { return e.msg }

func badParam(name, format string, args ...any) error {
	return &apiError{protocol.CodeInvalidRequest, "parameter " + name + ": " + fmt.Sprintf(format, args...)}
}

var errNotFound = &apiError{protocol.CodeNotFound, "not found"}

// rest authenticates and turns a handler's (body, error) into a response.
func (s *Server) rest(h func(r *http.Request, id session.Identity) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, _, err := s.auth.IdentifyREST(r)
		if err != nil {
			writeError(w, protocol.CodeUnauthorized, err.Error())
			return
		}
		body, err := h(r, id)
		var ae *apiError
		switch {
		case err == nil:
			writeJSON(w, http.StatusOK, body)
		case errors.As(err, &ae):
			writeError(w, ae.code, ae.msg)
		default:
			writeError(w, protocol.CodeUnavailable, err.Error())
		}
	}
}

// adminOnly lets only admins through (in auth.mode none, every loopback
// caller acts as admin).
func (s *Server) adminOnly(h http.Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, _, err := s.auth.IdentifyREST(r)
		if err != nil {
			writeError(w, protocol.CodeUnauthorized, err.Error())
			return
		}
		if id.Role != RoleAdmin {
			writeError(w, protocol.CodeForbidden, "admins only")
			return
		}
		h.ServeHTTP(w, r)
	}
}

// agentTeams returns an agent's teams as far as the broker knows them, for
// maySee: from its live session, else its history, else the switch. Only
// supervisors need them.
func (s *Server) agentTeams(ctx context.Context, caller session.Identity, agent string) ([]string, error) {
	if !caller.Supervisor() || caller.AllTeams {
		return nil, nil
	}
	v, err := s.manager.AgentView(ctx, agent)
	if err != nil {
		return nil, err
	}
	if v != nil {
		return v.Teams, nil
	}
	sessions, err := s.manager.AgentHistory(ctx, agent)
	if err != nil {
		return nil, err
	}
	if teams := latestTeams(sessions); len(teams) > 0 {
		return teams, nil
	}
	actx, cancel := context.WithTimeout(ctx, s.cfg.Adapter.Timeout)
	defer cancel()
	teams, err := s.adapter.Teams(actx, agent)
	if err != nil {
		return nil, fmt.Errorf("the agent's teams: %w", err)
	}
	return teams, nil
}

// maySee reports whether the caller may read an agent with those teams:
// agents only themselves, supervisors their teams, admins everyone.
func maySee(id session.Identity, agent string, teams []string) bool {
	switch {
	case id.Role == RoleAgent:
		return id.AgentID == agent
	case id.AllTeams:
		return true
	default:
		return slices.ContainsFunc(teams, func(t string) bool { return slices.Contains(id.Teams, t) })
	}
}

type page struct {
	List     any `json:"list"`
	PageNum  int `json:"pageNum"`
	PageSize int `json:"pageSize"`
	Total    int `json:"total"`
}

// paging reads pageNum (from 1) and pageSize (1..MaxPageSize).
func paging(q url.Values) (num, size int, err error) {
	num, size = 1, protocol.DefaultPageSize
	if v := q.Get("pageNum"); v != "" {
		if num, err = strconv.Atoi(v); err != nil || num < 1 || num > protocol.MaxPageNum {
			return 0, 0, badParam("pageNum", "want an integer from 1 to %d", protocol.MaxPageNum)
		}
	}
	if v := q.Get("pageSize"); v != "" {
		if size, err = strconv.Atoi(v); err != nil || size < 1 || size > protocol.MaxPageSize {
			return 0, 0, badParam("pageSize", "want an integer from 1 to %d", protocol.MaxPageSize)
		}
	}
	return num, size, nil
}

func paginate[T any](all []T, num, size int) page {
	from := min((num-1)*size, len(all))
	to := min(from+size, len(all))
	return page{List: append([]T{}, all[from:to]...), PageNum: num, PageSize: size, Total: len(all)}
}

// parseTime accepts RFC 3339 or Unix milliseconds between
// protocol.MinTimeMs and MaxTimeMs (years 2000 to 2100): every later
// computation on times stays far from overflowing.
func parseTime(q url.Values, name string, def time.Time) (time.Time, error) {
	v := q.Get(name)
	if v == "" {
		return def, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t, perr := time.Parse(time.RFC3339, v)
		if perr != nil {
			return time.Time{}, badParam(name, "want RFC 3339 or Unix milliseconds, got %q", protocol.CutEncoded(v, 64))
		}
		ms = t.UnixMilli()
	}
	if ms < protocol.MinTimeMs || ms >= protocol.MaxTimeMs {
		return time.Time{}, badParam(name, "want a time from 2000-01-01 to 2100-01-01")
	}
	return time.UnixMilli(ms), nil
}

// window reads from/to (default: since midnight UTC until now).
func window(q url.Values, now time.Time) (from, to time.Time, err error) {
	if from, err = parseTime(q, "from", now.Truncate(24*time.Hour)); err != nil {
		return
	}
	if to, err = parseTime(q, "to", now); err != nil {
		return
	}
	if !to.After(from) {
		err = badParam("to", "must be after from")
	}
	return
}

// reportWindow reads a report's from, to and interval; the window holds at
// most protocol.MaxReportBuckets intervals.
func reportWindow(q url.Values, now time.Time) (from, to time.Time, step time.Duration, err error) {
	if from, to, err = window(q, now); err != nil {
		return
	}
	iv := q.Get("interval")
	if iv == "" {
		iv = "1h"
	}
	step, ok := reportIntervals[iv]
	if !ok {
		err = badParam("interval", "want 15m, 30m, 1h or 1d")
		return
	}
	if buckets := (to.Sub(from) + step - 1) / step; buckets > protocol.MaxReportBuckets {
		err = badParam("interval", "at most %d intervals per report; widen the interval or narrow from/to", protocol.MaxReportBuckets)
	}
	return
}

func listParam(q url.Values, name string) []string {
	var out []string
	for _, v := range q[name] {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

var agentSorts = map[string]func(a, b protocol.AgentView) int{
	"agentId":     func(a, b protocol.AgentView) int { return strings.Compare(a.AgentID, b.AgentID) },
	"status":      func(a, b protocol.AgentView) int { return strings.Compare(a.Status, b.Status) },
	"statusSince": func(a, b protocol.AgentView) int { return cmp.Compare(a.StatusSince, b.StatusSince) },
}

// GET /v1/agents?team=&status=&channelType=&sort=&pageNum=&pageSize=
func (s *Server) listAgents(r *http.Request, id session.Identity) (any, error) {
	q := r.URL.Query()
	num, size, err := paging(q)
	if err != nil {
		return nil, err
	}
	key := q.Get("sort")
	desc := strings.HasPrefix(key, "-")
	key = strings.TrimPrefix(key, "-")
	if key == "" {
		key = "agentId"
	}
	cmp, ok := agentSorts[key]
	if !ok {
		return nil, badParam("sort", "want agentId, status or statusSince, optionally prefixed with -")
	}
	views, err := s.manager.Agents(r.Context(), protocol.WatchFilter{Teams: listParam(q, "team"),
		Statuses: listParam(q, "status"), ChannelTypes: listParam(q, "channelType")})
	if err != nil {
		return nil, err
	}
	views = slices.DeleteFunc(views, func(v protocol.AgentView) bool { return !maySee(id, v.AgentID, v.Teams) })
	slices.SortStableFunc(views, func(a, b protocol.AgentView) int {
		if desc {
			return cmp(b, a)
		}
		return cmp(a, b)
	})
	return paginate(views, num, size), nil
}

// GET /v1/agents/{id}
func (s *Server) getAgent(r *http.Request, id session.Identity) (any, error) {
	v, err := s.manager.AgentView(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	if v == nil || !maySee(id, v.AgentID, v.Teams) {
		return nil, errNotFound
	}
	return v, nil
}

// sessionBody is a session with its timeline and what it adds up to.
type sessionBody struct {
	SessionID    string                    `json:"sessionId"`
	AgentID      string                    `json:"agentId"`
	Teams        []string                  `json:"teams"`
	Created      int64                     `json:"created"`
	Live         bool                      `json:"live"`
	Status       string                    `json:"status,omitempty"`
	Channels     []protocol.ChannelState   `json:"channels"`
	Login        int64                     `json:"login,omitempty"`
	Logout       int64                     `json:"logout,omitempty"`
	Totals       history.Totals            `json:"totals"`
	PerChannel   map[string]history.Totals `json:"perChannel"`
	Interactions []history.Interaction     `json:"interactions"`
	Timeline     []history.Interval        `json:"timeline"`
	// Calls: GET /v1/sessions/my only, each interaction in progress or
	// awaiting wrap-up as the call session of 003_1bbe0dc9ae0eab32.txt.
	Calls []callSession `json:"calls,omitempty"`
}

// callSession is an interaction in the shape of the seed's call session.
type callSession struct {
	InteractionID string            `json:"interactionId"`
	Channel       string            `json:"channel"`
	CallState     string            `json:"callState"`  // Ringing, Connected, Hold, Disconnected
	QueueState    string            `json:"queueState"` // None (never queued), or as callState for queued ones
	Direction     string            `json:"direction"`
	FromAddress   string            `json:"fromAddress"`
	ToAddress     string            `json:"toAddress"`
	Queue         string            `json:"queue,omitempty"`
	Members       []callMember      `json:"members"`
	DateCreated   int64             `json:"dateCreated"`
	DateCompleted int64             `json:"dateCompleted,omitempty"`
	State         string            `json:"state"` // the interaction's own state
	Data          map[string]string `json:"data,omitempty"`
}

type callMember struct {
	ID        string `json:"id"`
	Role      string `json:"role"`
	Name      string `json:"name,omitempty"`
	Address   string `json:"address,omitempty"`
	CallState string `json:"callState"`
}

var callStates = map[string]string{protocol.IxAlerting: "Ringing", protocol.IxDialing: "Ringing", protocol.IxStarted: "Connected",
	protocol.IxHeld: "Hold", protocol.IxEnded: "Disconnected", protocol.IxCompleted: "Disconnected"}

var memberCallStates = map[string]string{protocol.MemberRinging: "Ringing", protocol.MemberConnected: "Connected",
	protocol.MemberHeld: "Hold", protocol.MemberDisconnected: "Disconnected"}

func toCallSession(ix protocol.Interaction) callSession {
	c := callSession{InteractionID: ix.ID, Channel: ix.Channel, CallState: callStates[ix.State], QueueState: "None",
		Direction: ix.Direction, FromAddress: ix.From, ToAddress: ix.To, Queue: ix.Queue, Members: []callMember{},
		DateCreated: ix.Created, DateCompleted: ix.Completed, State: ix.State, Data: ix.Data}
	if ix.Queue != "" {
		c.QueueState = c.CallState
	}
	for _, m := range ix.Members {
		c.Members = append(c.Members, callMember{ID: m.ID, Role: m.Role, Name: m.Name, Address: m.Address, CallState: memberCallStates[m.State]})
	}
	return c
}

func buildSession(h session.SessionHistory, now int64) sessionBody {
	ivs := history.Intervals(h.Entries, now)
	b := sessionBody{SessionID: h.SessionID, AgentID: h.AgentID, Teams: nonNilStrings(h.Teams), Created: h.Created.UnixMilli(),
		Live: h.View != nil, Channels: []protocol.ChannelState{}, Totals: history.Sum(ivs),
		PerChannel: map[string]history.Totals{}, Interactions: history.Interactions(h.Entries, ivs, now), Timeline: ivs}
	if h.View != nil {
		b.Status, b.Channels = h.View.Status, h.View.Channels
	}
	b.Login, b.Logout = history.LoginLogout(ivs)
	byChannel := map[string][]history.Interval{}
	for _, iv := range ivs {
		byChannel[iv.Channel] = append(byChannel[iv.Channel], iv)
	}
	for ch, civs := range byChannel {
		b.PerChannel[ch] = history.Sum(civs)
	}
	if b.Interactions == nil {
		b.Interactions = []history.Interaction{}
	}
	if b.Timeline == nil {
		b.Timeline = []history.Interval{}
	}
	return b
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// GET /v1/sessions/{id}
func (s *Server) getSession(r *http.Request, id session.Identity) (any, error) {
	h, ok, err := s.manager.Session(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	if !ok || !maySee(id, h.AgentID, h.Teams) {
		return nil, errNotFound
	}
	return buildSession(h, time.Now().UnixMilli()), nil
}

// GET /v1/sessions/my: the caller's live sessions (at most one per agent).
func (s *Server) mySessions(r *http.Request, id session.Identity) (any, error) {
	if id.Role != RoleAgent {
		return nil, &apiError{protocol.CodeForbidden, "only agents have sessions of their own (in auth.mode none: ?agent=<id>)"}
	}
	list := []sessionBody{}
	v, err := s.manager.AgentView(r.Context(), id.AgentID)
	if err != nil {
		return nil, err
	}
	if v != nil {
		h, ok, err := s.manager.Session(r.Context(), v.SessionID)
		if err != nil {
			return nil, err
		}
		if ok {
			body := buildSession(h, time.Now().UnixMilli())
			ixs, err := s.manager.Interactions(r.Context(), v.SessionID)
			if err != nil {
				return nil, err
			}
			body.Calls = []callSession{}
			for _, ix := range ixs {
				body.Calls = append(body.Calls, toCallSession(ix))
			}
			list = append(list, body)
		}
	}
	return page{List: list, PageNum: 1, PageSize: len(list), Total: len(list)}, nil
}

// GET /v1/agents/{id}/history?from=&to=&pageNum=&pageSize=
func (s *Server) agentHistory(r *http.Request, id session.Identity) (any, error) {
	agent := r.PathValue("id")
	q := r.URL.Query()
	from, to, err := window(q, time.Now())
	if err != nil {
		return nil, err
	}
	num, size, err := paging(q)
	if err != nil {
		return nil, err
	}
	sessions, err := s.manager.AgentHistory(r.Context(), agent)
	if err != nil {
		return nil, err
	}
	if !maySee(id, agent, latestTeams(sessions)) {
		return nil, errNotFound
	}
	now := time.Now().UnixMilli()
	var ivs []history.Interval
	for _, h := range sessions {
		ivs = append(ivs, history.Clip(history.Intervals(h.Entries, now), from.UnixMilli(), to.UnixMilli())...)
	}
	slices.SortStableFunc(ivs, func(a, b history.Interval) int { return cmp.Compare(a.Start, b.Start) })
	return paginate(ivs, num, size), nil
}

// GET /v1/interactions?from=&to=&agent=&queue=&direction=&pageNum=&pageSize=:
// talk records (one per agent who handled an interaction, written when its
// wrap-up completed), oldest first, of the agents the caller may see.
func (s *Server) listInteractions(r *http.Request, id session.Identity) (any, error) {
	q := r.URL.Query()
	from, to, err := window(q, time.Now())
	if err != nil {
		return nil, err
	}
	num, size, err := paging(q)
	if err != nil {
		return nil, err
	}
	direction := q.Get("direction")
	if direction != "" && direction != protocol.DirInbound && direction != protocol.DirOutbound && direction != protocol.DirInternal {
		return nil, badParam("direction", "want inbound, outbound or internal")
	}
	queue := q.Get("queue")
	records, err := s.talkRecords(r.Context(), id, q.Get("agent"), func(t history.TalkRecord) bool {
		return t.Interaction.Created >= from.UnixMilli() && t.Interaction.Created < to.UnixMilli() &&
			(queue == "" || t.Interaction.Queue == queue) && (direction == "" || t.Interaction.Direction == direction)
	})
	if err != nil {
		return nil, err
	}
	return paginate(records, num, size), nil
}

// GET /v1/interactions/{id}: the talk records of one interaction, per agent
// who handled it (a transferred call has one per agent).
func (s *Server) getInteraction(r *http.Request, id session.Identity) (any, error) {
	ixID := r.PathValue("id")
	if protocol.ValidateID(ixID) != nil {
		return nil, badParam("id", "not an interaction id")
	}
	records, err := s.talkRecords(r.Context(), id, "", func(t history.TalkRecord) bool { return t.Interaction.ID == ixID })
	if err != nil {
		return nil, err
	}
	if len(records) == 0 {
		return nil, errNotFound
	}
	return map[string]any{"interactionId": ixID, "records": records}, nil
}

// talkRecords collects the talk records that keep passes, of one agent or
// of every agent with history, skipping agents the caller may not see,
// oldest first. It reads every session of those agents within the history
// retention (history.sessions per agent at most).
func (s *Server) talkRecords(ctx context.Context, caller session.Identity, agent string, keep func(history.TalkRecord) bool) ([]history.TalkRecord, error) {
	agents := []string{agent}
	if agent == "" {
		var err error
		if agents, err = s.manager.HistoryAgents(ctx); err != nil {
			return nil, err
		}
	}
	out := []history.TalkRecord{}
	for _, a := range agents {
		sessions, err := s.manager.AgentHistory(ctx, a)
		if err != nil {
			return nil, err
		}
		if len(sessions) == 0 || !maySee(caller, a, latestTeams(sessions)) {
			continue
		}
		for _, h := range sessions {
			for _, t := range history.TalkRecords(h.Entries) {
				if keep(t) {
					out = append(out, t)
				}
			}
		}
	}
	slices.SortStableFunc(out, func(a, b history.TalkRecord) int { return cmp.Compare(a.Interaction.Created, b.Interaction.Created) })
	return out, nil
}

// GET /v1/queues: every queue the caller may see (a supervisor: its teams'
// queues and those of no team; admins: all), with the switch's figures and
// the agents staffed on it by status.
func (s *Server) listQueues(r *http.Request, id session.Identity) (any, error) {
	qs, err := s.queues(r.Context(), id)
	if err != nil {
		return nil, err
	}
	return page{List: qs, PageNum: 1, PageSize: len(qs), Total: len(qs)}, nil
}

// GET /v1/queues/{name}
func (s *Server) getQueue(r *http.Request, id session.Identity) (any, error) {
	qs, err := s.queues(r.Context(), id)
	if err != nil {
		return nil, err
	}
	for _, q := range qs {
		if q.Name == r.PathValue("name") {
			return q, nil
		}
	}
	return nil, errNotFound
}

func (s *Server) queues(ctx context.Context, id session.Identity) ([]protocol.QueueFigures, error) {
	if id.Role == RoleAgent {
		return nil, &apiError{protocol.CodeForbidden, "queues are for supervisors and admins"}
	}
	qs, err := s.manager.Queues(ctx, id)
	if errors.Is(err, session.ErrNoQueues) {
		return nil, &apiError{protocol.CodeNotSupported, err.Error()}
	}
	return qs, err
}

func latestTeams(sessions []session.SessionHistory) []string {
	if len(sessions) == 0 {
		return nil
	}
	return sessions[len(sessions)-1].Teams
}

// reportIntervals are the accepted report interval lengths.
var reportIntervals = map[string]time.Duration{"15m": 15 * time.Minute, "30m": 30 * time.Minute, "1h": time.Hour, "1d": 24 * time.Hour}

type agentReport struct {
	AgentID string           `json:"agentId"`
	Teams   []string         `json:"teams"`
	Periods []history.Period `json:"periods"`
	Total   history.Period   `json:"total"`
	// InteractionStats: of the talk records of interactions created in the
	// report's window.
	InteractionStats history.InteractionStats `json:"interactionStats"`
}

// GET /v1/reports/agents?from=&to=&interval=30m|1h|1d&teams=&pageNum=&pageSize=
func (s *Server) agentReports(r *http.Request, id session.Identity) (any, error) {
	q := r.URL.Query()
	from, to, step, err := reportWindow(q, time.Now())
	if err != nil {
		return nil, err
	}
	num, size, err := paging(q)
	if err != nil {
		return nil, err
	}
	teams := listParam(q, "teams")
	agents, err := s.manager.HistoryAgents(r.Context())
	if err != nil {
		return nil, err
	}
	slices.Sort(agents)
	now := time.Now().UnixMilli()
	reports := []agentReport{}
	for _, agent := range agents {
		sessions, err := s.manager.AgentHistory(r.Context(), agent)
		if err != nil {
			return nil, err
		}
		agentTeams := latestTeams(sessions)
		if !maySee(id, agent, agentTeams) || (len(teams) > 0 && !slices.ContainsFunc(agentTeams, func(t string) bool { return slices.Contains(teams, t) })) {
			continue
		}
		var ivs []history.Interval
		var starts []int64
		var talks []history.TalkRecord
		for _, h := range sessions {
			ivs = append(ivs, history.Intervals(h.Entries, now)...)
			for _, t := range history.TalkRecords(h.Entries) {
				if t.Interaction.Created >= from.UnixMilli() && t.Interaction.Created < to.UnixMilli() {
					talks = append(talks, t)
				}
			}
			for _, e := range h.Entries {
				if e.Kind == history.KindInteraction && e.Event == history.InteractionStart {
					starts = append(starts, e.At)
				}
			}
		}
		periods := history.Report(agent, ivs, starts, from.UnixMilli(), to.UnixMilli(), step.Milliseconds())
		reports = append(reports, agentReport{AgentID: agent, Teams: nonNilStrings(agentTeams), Periods: periods, Total: history.Total(agent, periods),
			InteractionStats: history.Stats(talks)})
	}
	body := paginate(reports, num, size)
	totals := history.Period{NotReadyReasonMs: history.Durations{}}
	for _, rep := range reports {
		totals = history.Total("", []history.Period{totals, rep.Total})
	}
	totals.From, totals.To = from.UnixMilli(), to.UnixMilli()
	return struct {
		page
		Totals history.Period `json:"totals"`
	}{body, totals}, nil
}
