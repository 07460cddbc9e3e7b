package sim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/protocol"
)

// The simulated switch is a small ACD, so that `make run` shows real call
// flows and tests can drive every case: calls wait in queues and are offered
// to the longest-idle ready agent logged into the queue on a channel of the
// queue's media type with room (capacity per type); an offer that rings out,
// or that the agent rejects, goes back to the front of its queue and the
// agent is forced not ready (reason protocol.ReasonNoAnswer); callers hang
// up or abandon through the control API; outbound dials end by destination
// (see Dial). All of it under Switch.mu, events sent without blocking.

// Queue is a queue of the simulated ACD (adapter.sim.queues).
type Queue struct {
	Name      string   `koanf:"name"`
	MediaType string   `koanf:"mediatype"`
	Teams     []string `koanf:"teams"`
	// ServiceLevel: answered within it counts toward the service level
	// (default 20 s).
	ServiceLevel time.Duration `koanf:"servicelevel"`
	// RingTimeout: an offer not answered by then goes back to the queue.
	RingTimeout time.Duration `koanf:"ringtimeout"`
}

// call is an interaction as the switch knows it.
type call struct {
	ix             protocol.Interaction
	ring           time.Duration // 0: the queue's
	agent, channel string        // who has it ("" while queued)
	queuedAt       time.Time
	timer          *time.Timer // ring timeout or the dial's outcome
	gen            uint64      // invalidates a timer that fired late
	// A consult leg: its other end, the agent who consults (origin) on
	// behalf of the call parent. A conference: the consulted agent's leg
	// joined to this call (joined).
	origin *leg
	joined *call
	// handle: a generated call's caller hangs up this long after the answer.
	handle time.Duration
}

// leg is an agent's end of a call: agent, channel, and (consult) the call
// it consults about.
type leg struct {
	agent, channel, parent string
}

// queueDay is a queue's counters of the day (UTC).
type queueDay struct {
	day                          string
	offered, answered, abandoned int
	withinSL, abandonedAfterSL   int
	answerMs                     int64
}

// dayOf returns the queue's counters of today, started again each day.
func (s *Switch) dayOf(queue string) *queueDay {
	today := time.Now().UTC().Format(time.DateOnly)
	d := s.days[queue]
	if d == nil || d.day != today {
		d = &queueDay{day: today}
		s.days[queue] = d
	}
	return d
}

func (s *Switch) serviceLevel(q *Queue) time.Duration {
	if q.ServiceLevel > 0 {
		return q.ServiceLevel
	}
	return 20 * time.Second
}

// Queues implements adapters.QueueReporter.
func (s *Switch) Queues(ctx context.Context) ([]protocol.QueueFigures, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]protocol.QueueFigures, 0, len(s.cfg.Queues))
	for i := range s.cfg.Queues {
		q := &s.cfg.Queues[i]
		d := s.dayOf(q.Name)
		f := protocol.QueueFigures{Name: q.Name, MediaType: q.MediaType, Teams: slices.Clone(q.Teams), Waiting: len(s.waiting[q.Name]),
			Offered: d.offered, Answered: d.answered, Abandoned: d.abandoned, ServiceLevelSec: int(s.serviceLevel(q) / time.Second), ServiceLevelPct: 100}
		for _, id := range s.waiting[q.Name] {
			if c := s.calls[id]; c != nil && (f.LongestWaitStart == 0 || c.queuedAt.UnixMilli() < f.LongestWaitStart) {
				f.LongestWaitStart = c.queuedAt.UnixMilli()
			}
		}
		if d.answered > 0 {
			f.AvgSpeedOfAnswerMs = d.answerMs / int64(d.answered)
		}
		f.AnsweredInSL, f.AbandonedAfterSL = d.withinSL, d.abandonedAfterSL
		if n := d.answered + d.abandonedAfterSL; n > 0 {
			f.ServiceLevelPct = float64(d.withinSL) * 100 / float64(n)
		}
		out = append(out, f)
	}
	return out, nil
}

// QueueView implements adapters.QueueReporter: a simulated switch is one
// process's, its figures a part of the floor's.
func (s *Switch) QueueView() string { return s.view }

// Traffic makes calls for demos: PerMinute calls a minute into Queue, at
// random intervals around the mean; once answered the caller hangs up after
// about HandleTime, and one that waits longer than Patience abandons.
type Traffic struct {
	Queue      string        `koanf:"queue"`
	PerMinute  float64       `koanf:"perminute"`
	HandleTime time.Duration `koanf:"handletime"`
	Patience   time.Duration `koanf:"patience"`
}

// startTraffic runs one generator per Traffic entry until Close.
func (s *Switch) startTraffic() {
	for _, tr := range s.cfg.Traffic {
		if tr.PerMinute <= 0 {
			continue
		}
		s.traffic.Add(1)
		go func() {
			defer s.traffic.Done()
			mean := time.Duration(float64(time.Minute) / tr.PerMinute)
			for n := 1; ; n++ {
				t := time.NewTimer(mean/2 + rand.N(mean+1)) // uniform around the mean
				select {
				case <-s.stop:
					t.Stop()
					return
				case <-t.C:
				}
				// Over MaxSimCalls the call is lost, as on a busy trunk.
				_, _ = s.AddCall(CallRequest{Queue: tr.Queue, From: fmt.Sprintf("+1555%07d", rand.N(10_000_000)), traffic: &tr})
			}
		}()
	}
}

// CallRequest is the body of POST /v1/sim/calls.
type CallRequest struct {
	Queue     string            `json:"queue"`
	From      string            `json:"from"`
	To        string            `json:"to"`
	MediaType string            `json:"mediaType"`
	Data      map[string]string `json:"data"`
	// RingTimeoutMs overrides the queue's ring timeout for this call (tests,
	// demos); 0: the queue's.
	RingTimeoutMs int64 `json:"ringTimeoutMs"`
	// traffic: a generated call's behaviour, set before it is routed (an
	// agent may answer it at once).
	traffic *Traffic
}

// Errors of the call-control calls.
var (
	ErrNoInteraction = errors.New("no such interaction on this channel")
	ErrNoRoom        = errors.New("the channel has no room for another interaction")
	ErrNoDestination = errors.New("no such destination")
)

func (s *Switch) capacity(mediaType string) int {
	if n := s.cfg.Capacity[strings.ToUpper(mediaType)]; n > 0 {
		return n
	}
	return 1
}

func (s *Switch) queue(name string) *Queue {
	for i := range s.cfg.Queues {
		if s.cfg.Queues[i].Name == name {
			return &s.cfg.Queues[i]
		}
	}
	return nil
}

// AddCall puts an inbound interaction in a queue and routes it.
func (s *Switch) AddCall(req CallRequest) (string, error) {
	if err := protocol.ValidateData(req.Data); err != nil {
		return "", err
	}
	if len(req.From) > protocol.MaxDestinationLength || len(req.To) > protocol.MaxDestinationLength {
		return "", fmt.Errorf("from and to: at most %d bytes", protocol.MaxDestinationLength)
	}
	if req.RingTimeoutMs < 0 || req.RingTimeoutMs > protocol.MaxSimRingMs {
		return "", fmt.Errorf("ringTimeoutMs: %d is not between 0 and %d", req.RingTimeoutMs, protocol.MaxSimRingMs)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", errors.New("simulated switch is closed")
	}
	q := s.queue(req.Queue)
	if q == nil {
		return "", fmt.Errorf("%w: queue %q", ErrNoDestination, req.Queue)
	}
	if len(s.calls) >= protocol.MaxSimCalls {
		return "", fmt.Errorf("at most %d calls at once", protocol.MaxSimCalls)
	}
	media := cmp.Or(req.MediaType, q.MediaType)
	now := time.Now()
	c := &call{queuedAt: now, ring: time.Duration(req.RingTimeoutMs) * time.Millisecond, ix: protocol.Interaction{ID: "sim-" + strconv.FormatUint(interactionSeq.Add(1), 10),
		MediaType: media, Direction: protocol.DirInbound, From: req.From, To: cmp.Or(req.To, q.Name), Queue: q.Name,
		Data: maps.Clone(req.Data), Created: now.UnixMilli(),
		Members: []protocol.Member{{ID: "caller", Role: protocol.RoleCaller, Address: req.From, State: protocol.MemberConnected}}}}
	s.calls[c.ix.ID] = c
	if tr := req.traffic; tr != nil {
		c.handle = tr.HandleTime
		if tr.Patience > 0 { // until an agent is offered it (the offer re-arms)
			s.arm(c, tr.Patience, func() { s.farPartyLocked(c, "abandon") })
		}
	}
	s.waiting[q.Name] = append(s.waiting[q.Name], c.ix.ID)
	s.dayOf(q.Name).offered++
	s.queuesDirty = true
	s.route()
	return c.ix.ID, nil
}

// route offers waiting calls to free agents. Caller holds s.mu.
func (s *Switch) route() {
	for _, q := range s.cfg.Queues {
		for len(s.waiting[q.Name]) > 0 {
			c := s.calls[s.waiting[q.Name][0]]
			agent, l := s.freeAgent(q.Name, c.ix.MediaType)
			if l == nil {
				break
			}
			s.waiting[q.Name] = s.waiting[q.Name][1:]
			s.offer(c, agent, l, q.RingTimeout)
			s.queuesDirty = true
		}
	}
	if s.queuesDirty {
		s.queuesDirty = false
		s.send(adapters.Event{Kind: adapters.QueuesChanged})
	}
}

// freeAgent picks the longest-idle ready agent logged into queue on a
// channel of the media type with room.
func (s *Switch) freeAgent(queue, media string) (string, *login) {
	var bestAgent string
	var best *login
	for agent, ls := range s.logins {
		for _, l := range ls {
			if l.State != protocol.StateActive || l.Status != protocol.StatusReady || !strings.EqualFold(l.Channel.Type, media) ||
				!slices.Contains(l.Queues, queue) || len(l.ixs) >= s.capacity(media) {
				continue
			}
			if best == nil || l.idleSince.Before(best.idleSince) || (l.idleSince.Equal(best.idleSince) && agent < bestAgent) {
				bestAgent, best = agent, l
			}
		}
	}
	return bestAgent, best
}

func (s *Switch) offer(c *call, agent string, l *login, ring time.Duration) {
	c.agent, c.channel = agent, l.Channel.ID
	l.addIx(c.ix.ID)
	c.ix.State, c.ix.Channel = protocol.IxAlerting, l.Channel.ID
	c.ix.QueuedMs = time.Since(c.queuedAt).Milliseconds()
	c.ix.Members = append(withoutAgents(c.ix.Members), protocol.Member{ID: agent, Role: protocol.RoleAgent, Name: agent, Address: l.Channel.Name, State: protocol.MemberRinging})
	s.send(adapters.Event{Kind: adapters.InteractionStarted, AgentID: agent, ChannelID: l.Channel.ID, InteractionID: c.ix.ID, Interaction: c.snapshot()})
	if c.ring > 0 {
		ring = c.ring
	}
	if ring <= 0 {
		ring = 20 * time.Second
	}
	s.arm(c, ring, func() { s.ringOut(c, protocol.CauseNoAnswer, true) })
}

func (c *call) snapshot() *protocol.Interaction {
	ix := c.ix
	ix.Data = maps.Clone(c.ix.Data)
	ix.Members = slices.Clone(c.ix.Members)
	return &ix
}

func withoutAgents(ms []protocol.Member) []protocol.Member {
	return slices.DeleteFunc(slices.Clone(ms), func(m protocol.Member) bool { return m.Role == protocol.RoleAgent })
}

// arm starts the call's one timer; a later arm or disarm makes an earlier
// firing a no-op.
func (s *Switch) arm(c *call, d time.Duration, f func()) {
	s.disarm(c)
	gen := c.gen
	c.timer = time.AfterFunc(d, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed || c.gen != gen || s.calls[c.ix.ID] != c {
			return
		}
		c.timer = nil
		f()
	})
}

func (s *Switch) disarm(c *call) {
	c.gen++
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
}

// ringOut takes an offer back from its agent (ring timeout, or rejected):
// the agent is forced not ready, the call goes back to the front of its
// queue. tell: the broker did not ask, so it hears of the end.
func (s *Switch) ringOut(c *call, cause string, tell bool) {
	if c.origin != nil {
		// A consult leg nobody answered just ends, for both agents.
		if tell {
			s.send(adapters.Event{Kind: adapters.InteractionEnded, AgentID: c.agent, ChannelID: c.channel, InteractionID: c.ix.ID, Cause: cause})
		}
		s.send(adapters.Event{Kind: adapters.InteractionEnded, AgentID: c.origin.agent, ChannelID: c.origin.channel, InteractionID: c.ix.ID, Cause: protocol.CauseNoAnswer})
		s.drop(c)
		return
	}
	s.disarm(c)
	l := s.logins[c.agent][c.channel]
	if tell {
		s.send(adapters.Event{Kind: adapters.InteractionEnded, AgentID: c.agent, ChannelID: c.channel, InteractionID: c.ix.ID, Cause: cause})
	}
	if l != nil {
		l.removeIx(c.ix.ID)
		l.Status, l.ReasonCode = protocol.StatusNotReady, protocol.ReasonNoAnswer
		s.send(adapters.Event{Kind: adapters.StatusForced, AgentID: c.agent, ChannelID: c.channel,
			State: protocol.StateActive, Status: protocol.StatusNotReady, ReasonCode: protocol.ReasonNoAnswer})
	}
	c.agent, c.channel = "", ""
	c.ix.Members = withoutAgents(c.ix.Members)
	s.waiting[c.ix.Queue] = append([]string{c.ix.ID}, s.waiting[c.ix.Queue]...)
	s.queuesDirty = true
	s.route()
}

// drop ends a call on the switch. Caller holds s.mu.
func (s *Switch) drop(c *call) {
	s.disarm(c)
	if j := c.joined; j != nil && s.calls[j.ix.ID] == j {
		// The conference's other agent keeps the caller.
		j.ix.Members = slices.DeleteFunc(j.ix.Members, func(m protocol.Member) bool { return m.ID == c.agent })
		s.send(adapters.Event{Kind: adapters.InteractionChanged, AgentID: j.agent, ChannelID: j.channel, InteractionID: j.ix.ID, Interaction: j.snapshot()})
	}
	if l := s.logins[c.agent][c.channel]; l != nil {
		l.removeIx(c.ix.ID)
		l.idleSince = time.Now()
	}
	delete(s.calls, c.ix.ID)
	if q := c.ix.Queue; q != "" {
		n := len(s.waiting[q])
		s.waiting[q] = slices.DeleteFunc(s.waiting[q], func(id string) bool { return id == c.ix.ID })
		s.queuesDirty = s.queuesDirty || len(s.waiting[q]) != n
	}
	s.route()
}

// FarParty acts as the caller: "hangup" ends the call wherever it is,
// "abandon" gives up one that has not been answered.
func (s *Switch) FarParty(id, event string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls[id]
	if c == nil {
		return fmt.Errorf("%w: %s", ErrNoInteraction, id)
	}
	return s.farPartyLocked(c, event)
}

// farPartyLocked is FarParty with s.mu held.
func (s *Switch) farPartyLocked(c *call, event string) error {
	id := c.ix.ID
	cause := protocol.CauseRemote
	switch event {
	case "hangup":
		if c.ix.State == protocol.IxAlerting || c.agent == "" {
			cause = protocol.CauseAbandoned
		}
	case "abandon":
		if c.agent != "" && c.ix.State != protocol.IxAlerting {
			return fmt.Errorf("%w: interaction %s was answered: hang up instead", errConflict, id)
		}
		cause = protocol.CauseAbandoned
	default:
		return fmt.Errorf("unknown event %q (hangup, abandon)", event)
	}
	if c.agent != "" {
		s.send(adapters.Event{Kind: adapters.InteractionEnded, AgentID: c.agent, ChannelID: c.channel, InteractionID: id, Cause: cause})
	}
	if q := s.queue(c.ix.Queue); q != nil && cause == protocol.CauseAbandoned && c.origin == nil {
		d := s.dayOf(q.Name)
		d.abandoned++
		if time.Since(c.queuedAt) > s.serviceLevel(q) {
			d.abandonedAfterSL++
		}
		s.queuesDirty = true
	}
	s.drop(c)
	return nil
}

var errConflict = errors.New("conflict")

// mine returns the call the agent has on the channel: as its agent, or as
// the consulting end of a consult leg.
func (s *Switch) mine(ch adapters.ChannelRef, id string) (*call, error) {
	c := s.calls[id]
	if c == nil || !((c.agent == ch.AgentID && c.channel == ch.Channel.ID) ||
		(c.origin != nil && c.origin.agent == ch.AgentID && c.origin.channel == ch.Channel.ID)) {
		return nil, fmt.Errorf("%w: %s", ErrNoInteraction, id)
	}
	return c, nil
}

// other returns the end of c that is not the caller's: the agent who did
// not ask, to tell (consult legs have two agents).
func (c *call) other(ch adapters.ChannelRef) (agent, channel string) {
	if c.origin == nil {
		return "", ""
	}
	if c.agent == ch.AgentID && c.channel == ch.Channel.ID {
		return c.origin.agent, c.origin.channel
	}
	return c.agent, c.channel
}

// consultOf returns the consult leg opened about parent.
func (s *Switch) consultOf(parent string) *call {
	for _, k := range s.calls {
		if k.origin != nil && k.origin.parent == parent {
			return k
		}
	}
	return nil
}

// Consult implements adapters.CallControl: the call is put on hold and a
// consult leg is offered to destination (an agent with room on a channel
// of the call's media type); it returns the leg's id.
func (s *Switch) Consult(ctx context.Context, ch adapters.ChannelRef, id, destination string) (string, error) {
	var kid string
	err := s.callControl(ctx, ch, id, func(c *call) error {
		if c.origin != nil || (c.ix.State != protocol.IxStarted && c.ix.State != protocol.IxHeld) {
			return fmt.Errorf("interaction %s cannot be consulted about", id)
		}
		if s.consultOf(id) != nil {
			return fmt.Errorf("interaction %s already has a consult leg", id)
		}
		for _, l := range s.logins[destination] {
			if l.State != protocol.StateActive || !strings.EqualFold(l.Channel.Type, c.ix.MediaType) || len(l.ixs) >= s.capacity(c.ix.MediaType) || destination == ch.AgentID {
				continue
			}
			c.ix.State = protocol.IxHeld
			setMembers(c.ix.Members, protocol.MemberHeld)
			now := time.Now()
			k := &call{queuedAt: now, origin: &leg{ch.AgentID, ch.Channel.ID, id}, ix: protocol.Interaction{
				ID: "sim-" + strconv.FormatUint(interactionSeq.Add(1), 10), MediaType: c.ix.MediaType, Direction: protocol.DirInternal,
				From: ch.Channel.Name, To: destination, Data: maps.Clone(c.ix.Data), Created: now.UnixMilli(),
				Members: []protocol.Member{{ID: ch.AgentID, Role: protocol.RoleConsult, Name: ch.AgentID, Address: ch.Channel.Name, State: protocol.MemberConnected}}}}
			s.calls[k.ix.ID] = k
			kid = k.ix.ID
			s.offer(k, destination, l, 20*time.Second)
			return nil
		}
		return fmt.Errorf("%w: %q is not an agent with room on a %s channel", ErrNoDestination, destination, c.ix.MediaType)
	})
	return kid, err
}

// ConsultTransfer implements adapters.CallControl: the caller of id goes
// to the consulted agent, whose consult leg carries on with the caller.
func (s *Switch) ConsultTransfer(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return s.callControl(ctx, ch, id, func(c *call) error {
		k := s.consultOf(id)
		if k == nil || k.ix.State != protocol.IxStarted {
			return fmt.Errorf("interaction %s has no answered consult leg", id)
		}
		k.ix.Members = append(slices.DeleteFunc(slices.Clone(c.ix.Members), func(m protocol.Member) bool { return m.Role == protocol.RoleAgent }),
			protocol.Member{ID: k.agent, Role: protocol.RoleAgent, Name: k.agent, State: protocol.MemberConnected})
		setMembers(k.ix.Members, protocol.MemberConnected)
		k.ix.From, k.ix.Queue, k.ix.Direction, k.origin = c.ix.From, c.ix.Queue, c.ix.Direction, nil
		s.send(adapters.Event{Kind: adapters.InteractionChanged, AgentID: k.agent, ChannelID: k.channel, InteractionID: k.ix.ID, Interaction: k.snapshot()})
		s.drop(c)
		return nil
	})
}

// ConsultConference implements adapters.CallControl: the consulted agent
// joins the call; both agents' desktops show the three parties.
func (s *Switch) ConsultConference(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return s.callControl(ctx, ch, id, func(c *call) error {
		k := s.consultOf(id)
		if k == nil || k.ix.State != protocol.IxStarted {
			return fmt.Errorf("interaction %s has no answered consult leg", id)
		}
		c.ix.State = protocol.IxStarted
		c.ix.Members = append(c.ix.Members, protocol.Member{ID: k.agent, Role: protocol.RoleConsult, Name: k.agent, State: protocol.MemberConnected})
		setMembers(c.ix.Members, protocol.MemberConnected)
		k.ix.Members = slices.Clone(c.ix.Members)
		k.origin, c.joined = nil, k
		s.send(adapters.Event{Kind: adapters.InteractionChanged, AgentID: k.agent, ChannelID: k.channel, InteractionID: k.ix.ID, Interaction: k.snapshot()})
		return nil
	})
}

// callControl runs a call-control call: the usual latency and faults, then f
// under the lock.
func (s *Switch) callControl(ctx context.Context, ch adapters.ChannelRef, id string, f func(c *call) error) error {
	if err := s.call(ctx, ch.AgentID, true); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.mine(ch, id)
	if err != nil {
		return err
	}
	return f(c)
}

// Accept implements adapters.CallControl. The consulting agent of a
// consult leg hears it answered.
func (s *Switch) Accept(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return s.callControl(ctx, ch, id, func(c *call) error {
		if c.ix.State != protocol.IxAlerting || c.agent != ch.AgentID {
			return fmt.Errorf("interaction %s is %s", id, c.ix.State)
		}
		s.disarm(c)
		c.ix.State = protocol.IxStarted
		setMembers(c.ix.Members, protocol.MemberConnected)
		if q := s.queue(c.ix.Queue); q != nil && c.ix.Direction == protocol.DirInbound && c.origin == nil {
			d, wait := s.dayOf(q.Name), time.Since(c.queuedAt)
			d.answered++
			d.answerMs += wait.Milliseconds()
			if wait <= s.serviceLevel(q) {
				d.withinSL++
			}
			s.send(adapters.Event{Kind: adapters.QueuesChanged})
		}
		if c.handle > 0 {
			s.arm(c, c.handle/2+rand.N(c.handle+1), func() { s.farPartyLocked(c, "hangup") })
		}
		if c.origin != nil {
			s.send(adapters.Event{Kind: adapters.InteractionChanged, AgentID: c.origin.agent, ChannelID: c.origin.channel, InteractionID: id, Interaction: c.snapshot()})
		}
		return nil
	})
}

func setMembers(ms []protocol.Member, state string) {
	for i := range ms {
		ms[i].State = state
	}
}

// Reject implements adapters.CallControl.
func (s *Switch) Reject(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return s.callControl(ctx, ch, id, func(c *call) error {
		if c.ix.State != protocol.IxAlerting || c.ix.Direction != protocol.DirInbound {
			return fmt.Errorf("interaction %s is not an offer", id)
		}
		s.ringOut(c, protocol.CauseRejected, false)
		return nil
	})
}

// Hold implements adapters.CallControl.
func (s *Switch) Hold(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return s.callControl(ctx, ch, id, func(c *call) error {
		c.ix.State = protocol.IxHeld
		return nil
	})
}

// Retrieve implements adapters.CallControl.
func (s *Switch) Retrieve(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return s.callControl(ctx, ch, id, func(c *call) error {
		c.ix.State = protocol.IxStarted
		return nil
	})
}

// Release implements adapters.CallControl. The other agent of a consult
// leg hears that the far end hung up.
func (s *Switch) Release(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return s.callControl(ctx, ch, id, func(c *call) error {
		if agent, channel := c.other(ch); agent != "" {
			s.send(adapters.Event{Kind: adapters.InteractionEnded, AgentID: agent, ChannelID: channel, InteractionID: id, Cause: protocol.CauseRemote})
			if l := s.logins[agent][channel]; l != nil {
				l.removeIx(id)
			}
		}
		s.drop(c)
		return nil
	})
}

// BlindTransfer implements adapters.CallControl: destination is a queue
// (the call waits there) or an agent logged into a channel of the call's
// media type with room (it is offered to them at once).
func (s *Switch) BlindTransfer(ctx context.Context, ch adapters.ChannelRef, id, destination string) error {
	return s.callControl(ctx, ch, id, func(c *call) error {
		if q := s.queue(destination); q != nil {
			s.leave(c)
			c.ix.Queue, c.queuedAt = q.Name, time.Now()
			s.waiting[q.Name] = append(s.waiting[q.Name], c.ix.ID)
			s.queuesDirty = true
			s.route()
			return nil
		}
		for _, l := range s.logins[destination] {
			if l.State == protocol.StateActive && strings.EqualFold(l.Channel.Type, c.ix.MediaType) && len(l.ixs) < s.capacity(c.ix.MediaType) {
				s.leave(c)
				ring := 20 * time.Second
				if q := s.queue(c.ix.Queue); q != nil {
					ring = q.RingTimeout
				}
				s.offer(c, destination, l, ring)
				return nil
			}
		}
		return fmt.Errorf("%w: %q is neither a queue nor an agent with room on a %s channel", ErrNoDestination, destination, c.ix.MediaType)
	})
}

// leave takes the call away from its agent (who asked: no event).
func (s *Switch) leave(c *call) {
	s.disarm(c)
	if l := s.logins[c.agent][c.channel]; l != nil {
		l.removeIx(c.ix.ID)
		l.idleSince = time.Now()
	}
	c.agent, c.channel = "", ""
	c.ix.Members = withoutAgents(c.ix.Members)
}

// SendDTMF implements adapters.CallControl.
func (s *Switch) SendDTMF(ctx context.Context, ch adapters.ChannelRef, id, digits string) error {
	return s.callControl(ctx, ch, id, func(c *call) error {
		if c.ix.State != protocol.IxStarted {
			return fmt.Errorf("interaction %s is %s", id, c.ix.State)
		}
		return nil
	})
}

// SetData implements adapters.CallControl.
func (s *Switch) SetData(ctx context.Context, ch adapters.ChannelRef, id string, data map[string]string) error {
	return s.callControl(ctx, ch, id, func(c *call) error {
		if c.ix.Data == nil {
			c.ix.Data = map[string]string{}
		}
		for k, v := range data {
			if v == "" {
				delete(c.ix.Data, k)
			} else {
				c.ix.Data[k] = v
			}
		}
		return nil
	})
}

// Complete implements adapters.CallControl: the switch keeps nothing of a
// wrap-up (the broker's talk records do).
func (s *Switch) Complete(ctx context.Context, ch adapters.ChannelRef, _, _ string) error {
	return s.call(ctx, ch.AgentID, true)
}

// Dispositions implements adapters.CallControl.
func (s *Switch) Dispositions(ctx context.Context, agentID string) ([]protocol.Disposition, error) {
	if err := s.call(ctx, agentID, false); err != nil {
		return nil, err
	}
	return slices.Clone(s.cfg.Dispositions), nil
}

// Interactions implements adapters.CallControl.
func (s *Switch) Interactions(ctx context.Context, agentID string) ([]protocol.Interaction, error) {
	if err := s.call(ctx, agentID, false); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []protocol.Interaction
	for _, c := range s.calls {
		if c.agent == agentID {
			out = append(out, *c.snapshot())
		}
	}
	slices.SortFunc(out, func(a, b protocol.Interaction) int { return cmp.Compare(a.Created, b.Created) })
	return out, nil
}

// Dial implements adapters.CallControl. The outcome depends on the
// destination, so that tests and demos can try each: one starting with
// "busy" is busy, "noanswer" rings out after adapter.sim.dialnoanswer,
// "fail" fails; any other answers after adapter.sim.dialanswer.
func (s *Switch) Dial(ctx context.Context, ch adapters.ChannelRef, destination string, data map[string]string) (string, error) {
	if err := s.call(ctx, ch.AgentID, true); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.logins[ch.AgentID][ch.Channel.ID]
	if l == nil || l.State != protocol.StateActive {
		return "", fmt.Errorf("agent %q is not logged into channel %q", ch.AgentID, ch.Channel.ID)
	}
	if len(l.ixs) >= s.capacity(ch.Channel.Type) {
		return "", ErrNoRoom
	}
	if len(s.calls) >= protocol.MaxSimCalls {
		return "", fmt.Errorf("at most %d calls at once", protocol.MaxSimCalls)
	}
	now := time.Now()
	c := &call{agent: ch.AgentID, channel: ch.Channel.ID, queuedAt: now, ix: protocol.Interaction{
		ID: "sim-" + strconv.FormatUint(interactionSeq.Add(1), 10), Channel: ch.Channel.ID, MediaType: ch.Channel.Type,
		Direction: protocol.DirOutbound, State: protocol.IxDialing, From: ch.Channel.Name, To: destination,
		Data: maps.Clone(data), Created: now.UnixMilli(),
		Members: []protocol.Member{{ID: "remote", Role: protocol.RoleCaller, Address: destination, State: protocol.MemberRinging}}}}
	s.calls[c.ix.ID] = c
	l.addIx(c.ix.ID)
	end := func(cause string) func() {
		return func() {
			s.send(adapters.Event{Kind: adapters.InteractionEnded, AgentID: c.agent, ChannelID: c.channel, InteractionID: c.ix.ID, Cause: cause})
			s.drop(c)
		}
	}
	switch {
	case strings.HasPrefix(destination, "busy"):
		s.arm(c, s.cfg.DialAnswer, end(protocol.CauseBusy))
	case strings.HasPrefix(destination, "noanswer"):
		s.arm(c, s.cfg.DialNoAnswer, end(protocol.CauseNoAnswer))
	case strings.HasPrefix(destination, "fail"):
		s.arm(c, s.cfg.DialAnswer, end(protocol.CauseFailed))
	default:
		s.arm(c, s.cfg.DialAnswer, func() {
			c.ix.State = protocol.IxStarted
			setMembers(c.ix.Members, protocol.MemberConnected)
			s.send(adapters.Event{Kind: adapters.InteractionChanged, AgentID: c.agent, ChannelID: c.channel, InteractionID: c.ix.ID, Interaction: c.snapshot()})
		})
	}
	return c.ix.ID, nil
}

// send hands an event to the broker without blocking. Caller holds s.mu.
func (s *Switch) send(ev adapters.Event) {
	if s.closed {
		return
	}
	select {
	case s.events <- ev:
	default:
		// The broker is not reading: like a switch link that dropped an
		// event. A resumed session re-reads Interactions.
	}
}

func (l *login) addIx(id string) {
	if l.ixs == nil {
		l.ixs = map[string]bool{}
	}
	l.ixs[id] = true
}

func (l *login) removeIx(id string) { delete(l.ixs, id) }
