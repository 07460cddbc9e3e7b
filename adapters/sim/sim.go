// Package sim is the embedded simulated switch: the default adapter, used for
// demos and tests. It keeps the agents' logins like a switch would (so a new
// session finds the channels the agent is already logged into), serves the
// catalogs and address book from configuration, and injects latency, random
// failures and scripted faults on request. Its HTTP control API lets tests and
// demos make things happen on the "switch".
//
// Concurrency: all switch state is guarded by Switch.mu; calls block only in
// their simulated latency, never while holding it.
package sim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/protocol"
)

func init() {
	adapters.Register("sim", adapters.Kind{
		Config: func() any { return &Config{} },
		Validate: func(cfg any, _ adapters.Env) error {
			return cfg.(*Config).validate()
		},
		New: func(cfg any, env adapters.Env) (adapters.Adapter, error) {
			c := *cfg.(*Config)
			c.Capacity = env.Capacity
			if c.Control == nil {
				// Off unless agents are unauthenticated (loopback).
				on := !env.Authenticated
				c.Control = &on
			}
			sw, err := New(c)
			if err != nil || c.CallControl == nil || *c.CallControl {
				return sw, err
			}
			return statusOnly{sw, sw}, nil
		},
		Simulated: true,
	})
}

// Config configures the simulated switch (config section adapter.sim).
type Config struct {
	// Latency is added to every call.
	Latency time.Duration `koanf:"latency"`
	// FailRate is the probability (0..1) that a state-changing call fails.
	FailRate        float64                 `koanf:"failrate"`
	NotReadyReasons []protocol.ReasonCode   `koanf:"notreadyreasons"`
	LogoutReasons   []protocol.LogoutReason `koanf:"logoutreasons"`
	AddressBooks    []protocol.AddressBook  `koanf:"addressbooks"`
	// Agents lists agents known to the switch, by agent id.
	Agents map[string]Agent `koanf:"agents"`
	// EventBuffer bounds the switch events not yet read by the broker.
	EventBuffer int `koanf:"eventbuffer"`
	// Control serves the control API (POST /v1/sim/events). Nil: on only
	// when agents are not authenticated (auth.mode none).
	Control *bool `koanf:"control"`
	// Queues of the ACD (see acd.go) and the wrap-up codes it serves.
	Queues       []Queue                `koanf:"queues"`
	Dispositions []protocol.Disposition `koanf:"dispositions"`
	// DialAnswer: an outbound call is answered (or found busy, or failed)
	// after this long; DialNoAnswer: one to a "noanswer..." destination
	// rings out after this long.
	DialAnswer   time.Duration `koanf:"dialanswer"`
	DialNoAnswer time.Duration `koanf:"dialnoanswer"`
	// CallControl: desktops may control interactions (default). Off, the
	// switch acts like one whose adapter only sets agent states: interaction
	// commands fail NOT_SUPPORTED.
	CallControl *bool `koanf:"callcontrol"`
	// Traffic generates calls into queues for demos (off unless set).
	Traffic []Traffic `koanf:"traffic"`
	// Capacity per channel type: from the broker (capacity.<type>).
	Capacity map[string]int `koanf:"-"`
}

// Agent is an agent known to the switch.
type Agent struct {
	// Name is the agent's display name (supervisors' views).
	Name  string   `koanf:"name"`
	Teams []string `koanf:"teams"`
	// Logins are channels the agent is logged into when the switch starts.
	Logins []PreLogin `koanf:"logins"`
}

// PreLogin is a channel the agent is logged into at start.
type PreLogin struct {
	ID     string `koanf:"id"`
	Name   string `koanf:"name"`
	Type   string `koanf:"type"`
	Group  string `koanf:"group"`
	Status string `koanf:"status"`
	Reason string `koanf:"reason"`
}

// Fault kinds for scripted failures.
const (
	FaultError   = "error"
	FaultTimeout = "timeout"
	FaultPanic   = "panic"
)

// ErrRefused is returned for injected failures.
var ErrRefused = errors.New("simulated switch refused the request")

type login struct {
	adapters.Login
	ixs       map[string]bool // interactions on the channel
	idleSince time.Time       // for longest-idle routing
}

// Switch is the simulated switch.
type Switch struct {
	cfg    Config
	events chan adapters.Event

	mu       sync.Mutex
	logins   map[string]map[string]*login // agent -> channel id -> login
	calls    map[string]*call             // interactions in progress or queued, by id
	waiting  map[string][]string          // queue -> call ids, first offered first
	faults   map[string][]string          // agent -> pending faults, in order
	catalogs struct {
		notReady []protocol.ReasonCode
		logout   []protocol.LogoutReason
		books    []protocol.AddressBook
	}
	closed bool
	days   map[string]*queueDay // per queue: today's counters
	// queuesDirty: a queue's figures changed since QueuesChanged was last
	// sent (route sends it, once for a whole change).
	queuesDirty bool
	// view names this switch's queue figures (QueueView): each process
	// simulates a switch of its own.
	view string
	// stop ends the traffic generators; traffic waits for them.
	stop    chan struct{}
	traffic sync.WaitGroup
}

var _ adapters.Adapter = (*Switch)(nil)

func (c *Config) validate() error {
	if c.FailRate < 0 || c.FailRate > 1 {
		return fmt.Errorf("failrate: %v is not between 0 and 1", c.FailRate)
	}
	if c.Latency < 0 {
		return errors.New("latency: must not be negative")
	}
	if c.DialAnswer < 0 || c.DialNoAnswer < 0 {
		return errors.New("dialanswer, dialnoanswer: must not be negative")
	}
	seen := map[string]bool{}
	for i, q := range c.Queues {
		if err := protocol.ValidateID(q.Name); err != nil || seen[q.Name] {
			return fmt.Errorf("queues[%d].name: %q is empty, invalid or a duplicate", i, q.Name)
		}
		seen[q.Name] = true
		if q.MediaType == "" || q.RingTimeout < 0 {
			return fmt.Errorf("queues[%d] (%s): mediatype is required and ringtimeout must not be negative", i, q.Name)
		}
	}
	for i, tr := range c.Traffic {
		if !seen[tr.Queue] || tr.PerMinute < 0 || tr.PerMinute > protocol.MaxSimTrafficPerMinute || tr.HandleTime < 0 || tr.Patience < 0 {
			return fmt.Errorf("traffic[%d]: queue must be one of queues, perminute 0 to %d, handletime and patience not negative", i, protocol.MaxSimTrafficPerMinute)
		}
	}
	for i, d := range c.Dispositions {
		if d.Code == "" {
			return fmt.Errorf("dispositions[%d].code is required", i)
		}
	}
	for agent, a := range c.Agents {
		for i, p := range a.Logins {
			if err := protocol.ValidateID(p.ID); err != nil {
				return fmt.Errorf("agents.%s.logins[%d].id: %w", agent, i, err)
			}
		}
	}
	return nil
}

// New creates a simulated switch. Its control API is on unless
// cfg.Control says otherwise.
func New(cfg Config) (*Switch, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.EventBuffer <= 0 {
		cfg.EventBuffer = 1024
	}
	s := &Switch{cfg: cfg, events: make(chan adapters.Event, cfg.EventBuffer),
		logins: map[string]map[string]*login{}, faults: map[string][]string{},
		calls: map[string]*call{}, waiting: map[string][]string{}, days: map[string]*queueDay{}, stop: make(chan struct{}),
		view: fmt.Sprintf("sim-%016x", rand.Uint64())}
	s.catalogs.notReady = cfg.NotReadyReasons
	s.catalogs.logout = cfg.LogoutReasons
	s.catalogs.books = cfg.AddressBooks
	for agent, a := range cfg.Agents {
		for _, p := range a.Logins {
			status := p.Status
			if status == "" {
				status = protocol.StatusNotReady
			}
			s.agentLogins(agent)[p.ID] = &login{Login: adapters.Login{GroupID: p.Group, GroupName: p.Group,
				Channel: protocol.ChannelSpec{ID: p.ID, Name: p.Name, Type: p.Type},
				State:   protocol.StateActive, Status: status, ReasonCode: p.Reason}}
		}
	}
	s.startTraffic()
	return s, nil
}

func (s *Switch) agentLogins(agent string) map[string]*login {
	m := s.logins[agent]
	if m == nil {
		m = map[string]*login{}
		s.logins[agent] = m
	}
	return m
}

// call simulates the round trip to the switch: latency, scripted faults and
// random failures.
func (s *Switch) call(ctx context.Context, agent string, mutating bool) error {
	s.mu.Lock()
	var fault string
	if q := s.faults[agent]; len(q) > 0 {
		fault, s.faults[agent] = q[0], q[1:]
	}
	s.mu.Unlock()
	switch fault {
	case FaultPanic:
		panic("simulated switch: injected panic")
	case FaultTimeout:
		<-ctx.Done()
		return ctx.Err()
	case FaultError:
		return ErrRefused
	}
	if s.cfg.Latency > 0 {
		t := time.NewTimer(s.cfg.Latency)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if mutating && s.cfg.FailRate > 0 && rand.Float64() < s.cfg.FailRate {
		return ErrRefused
	}
	return nil
}

// ErrTooManyFaults refuses faults beyond protocol.MaxSimFaults pending for
// one agent.
var ErrTooManyFaults = fmt.Errorf("at most %d faults may be pending for one agent", protocol.MaxSimFaults)

// InjectFault makes the agent's next count calls (1 to
// protocol.MaxSimFaults) fail with kind.
func (s *Switch) InjectFault(agent, kind string, count int) error {
	switch kind {
	case FaultError, FaultTimeout, FaultPanic:
	default:
		return fmt.Errorf("unknown fault %q (error, timeout, panic)", kind)
	}
	if count < 1 || count > protocol.MaxSimFaults {
		return fmt.Errorf("count %d is not between 1 and %d", count, protocol.MaxSimFaults)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.faults[agent])+count > protocol.MaxSimFaults {
		return ErrTooManyFaults
	}
	for range count {
		s.faults[agent] = append(s.faults[agent], kind)
	}
	return nil
}

// Logins implements adapters.Adapter.
func (s *Switch) Logins(ctx context.Context, agentID string) ([]adapters.Login, error) {
	if err := s.call(ctx, agentID, false); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]adapters.Login, 0, len(s.logins[agentID]))
	for _, l := range s.logins[agentID] {
		cp := l.Login
		if len(l.ixs) > 0 {
			cp.Status = "busy_" + cp.Status
		}
		out = append(out, cp)
	}
	slices.SortFunc(out, func(a, b adapters.Login) int {
		return cmp.Or(strings.Compare(a.GroupID, b.GroupID), strings.Compare(a.Channel.ID, b.Channel.ID))
	})
	return out, nil
}

// Activate implements adapters.Adapter.
func (s *Switch) Activate(ctx context.Context, ch adapters.ChannelRef, queues []string) error {
	if err := s.call(ctx, ch.AgentID, true); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.agentLogins(ch.AgentID)[ch.Channel.ID] = &login{Login: adapters.Login{GroupID: ch.GroupID, GroupName: ch.GroupID,
		Channel: ch.Channel, State: protocol.StateActive, Status: protocol.StatusNotReady, Queues: queues}}
	return nil
}

// Deactivate implements adapters.Adapter.
func (s *Switch) Deactivate(ctx context.Context, ch adapters.ChannelRef, _ string) error {
	if err := s.call(ctx, ch.AgentID, true); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.logins[ch.AgentID], ch.Channel.ID)
	// Its interactions end with the login (a real ACD would too).
	for _, c := range s.calls {
		if c.agent == ch.AgentID && c.channel == ch.Channel.ID {
			s.drop(c)
		}
	}
	return nil
}

// SetReady implements adapters.Adapter.
func (s *Switch) SetReady(ctx context.Context, ch adapters.ChannelRef) error {
	return s.setStatus(ctx, ch, protocol.StatusReady, "")
}

// SetNotReady implements adapters.Adapter.
func (s *Switch) SetNotReady(ctx context.Context, ch adapters.ChannelRef, reasonCode string) error {
	if reasonCode == protocol.ReasonACW {
		return s.setStatus(ctx, ch, protocol.StatusAfterCallWork, reasonCode)
	}
	return s.setStatus(ctx, ch, protocol.StatusNotReady, reasonCode)
}

func (s *Switch) setStatus(ctx context.Context, ch adapters.ChannelRef, status, reason string) error {
	if err := s.call(ctx, ch.AgentID, true); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.logins[ch.AgentID][ch.Channel.ID]
	if l == nil {
		// Each broker process has its own simulated switch: with several
		// nodes, a session taken over from another node changes logins this
		// one never saw. A real switch is shared; the sim learns the login.
		l = &login{Login: adapters.Login{GroupID: ch.GroupID, GroupName: ch.GroupID, Channel: ch.Channel, State: protocol.StateActive}}
		s.agentLogins(ch.AgentID)[ch.Channel.ID] = l
	}
	l.Status, l.ReasonCode = status, reason
	if status == protocol.StatusReady {
		l.idleSince = time.Now()
		s.route()
	}
	return nil
}

// NotReadyReasons implements adapters.Adapter.
func (s *Switch) NotReadyReasons(ctx context.Context, agentID string) ([]protocol.ReasonCode, error) {
	if err := s.call(ctx, agentID, false); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.catalogs.notReady), nil
}

// LogoutReasons implements adapters.Adapter.
func (s *Switch) LogoutReasons(ctx context.Context, agentID string) ([]protocol.LogoutReason, error) {
	if err := s.call(ctx, agentID, false); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.catalogs.logout), nil
}

// AddressBook implements adapters.Adapter.
func (s *Switch) AddressBook(ctx context.Context, agentID string) (protocol.AddressBooks, error) {
	if err := s.call(ctx, agentID, false); err != nil {
		return protocol.AddressBooks{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Callers fill in live properties: give them their own copy.
	books := make([]protocol.AddressBook, len(s.catalogs.books))
	for i, b := range s.catalogs.books {
		books[i] = protocol.AddressBook{Name: b.Name, Groups: cloneGroups(b.Groups), Entries: slices.Clone(b.Entries)}
	}
	return protocol.AddressBooks{AddressBooks: books}, nil
}

func cloneGroups(gs []protocol.Group) []protocol.Group {
	out := make([]protocol.Group, len(gs))
	for i, g := range gs {
		out[i] = protocol.Group{Name: g.Name, Groups: cloneGroups(g.Groups), Entries: slices.Clone(g.Entries)}
	}
	return out
}

// Teams implements adapters.Adapter: the teams configured for the agent.
func (s *Switch) Teams(ctx context.Context, agentID string) ([]string, error) {
	if err := s.call(ctx, agentID, false); err != nil {
		return nil, err
	}
	return slices.Clone(s.cfg.Agents[agentID].Teams), nil
}

// DisplayName implements adapters.Directory.
func (s *Switch) DisplayName(ctx context.Context, agentID string) (string, error) {
	if err := s.call(ctx, agentID, false); err != nil {
		return "", err
	}
	return s.cfg.Agents[agentID].Name, nil
}

// Events implements adapters.Adapter.
func (s *Switch) Events() <-chan adapters.Event { return s.events }

// Close implements adapters.Adapter.
func (s *Switch) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		for _, c := range s.calls {
			s.disarm(c)
		}
		close(s.stop)
		s.mu.Unlock()
		s.traffic.Wait() // generators take s.mu: wait unlocked
		s.mu.Lock()
		close(s.events)
	}
	return nil
}

// ErrBusy is returned by Emit when the broker does not read events fast enough.
var ErrBusy = errors.New("simulated switch: event buffer full")

// Emit applies ev to the switch's own state and sends it to the broker.
func (s *Switch) Emit(ev adapters.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("simulated switch is closed")
	}
	l := s.logins[ev.AgentID][ev.ChannelID]
	switch ev.Kind {
	case adapters.InteractionStarted, adapters.InteractionEnded, adapters.InteractionAnswered:
		if l == nil {
			return fmt.Errorf("agent %q is not logged into channel %q", ev.AgentID, ev.ChannelID)
		}
		if ev.Kind == adapters.InteractionStarted {
			l.addIx(ev.InteractionID)
		} else if ev.Kind == adapters.InteractionEnded {
			l.removeIx(ev.InteractionID)
		}
	case adapters.StatusForced:
		if ev.State != protocol.StateActive {
			delete(s.logins[ev.AgentID], ev.ChannelID)
		} else if l != nil {
			l.Status, l.ReasonCode = ev.Status, ev.ReasonCode
		}
	}
	select {
	case s.events <- ev:
		return nil
	default:
		return ErrBusy
	}
}

// SetNotReadyReasons replaces the not-ready catalog and tells the broker.
func (s *Switch) SetNotReadyReasons(r []protocol.ReasonCode) error {
	s.mu.Lock()
	s.catalogs.notReady = r
	s.mu.Unlock()
	return s.Emit(adapters.Event{Kind: adapters.CatalogChanged})
}

// statusOnly is the switch without its call control: only the agent-state
// adapter and the control API are promoted.
type statusOnly struct {
	adapters.Adapter
	adapters.Controlled
}
