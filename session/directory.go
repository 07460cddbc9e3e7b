package session

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/protocol"
)

// Presence is an agent's live state as other sessions see it.
type Presence struct {
	AgentID     string
	DisplayName string
	SessionID   string
	Teams       []string
	Status      string
	StatusSince time.Time
	Channels    []protocol.ChannelState
	Today       *protocol.CallCounters
	// Seq is the session seq this presence reflects.
	Seq uint64
}

// directory is the broker-wide view shared between sessions: who holds which
// switch endpoint, every agent's live presence, the sessions watching the
// address book in real time, and per-skill handle times.
//
// Locking: the publish path, taken on every state change, is lock-free
// (presence is a sync.Map, realtime a copy-on-write slice). mu guards the
// endpoint maps, taken on activation, deactivation and channel creation;
// rtMu serializes changes of the realtime slice; ahtMu guards aht. Methods
// never call into a session while holding a lock except Session.post, which
// only appends to the session's own note queue and never calls back.
type directory struct {
	mu        sync.RWMutex
	endpoints map[adapters.Endpoint]string     // endpoint -> holder (agent id, or "switch:<who>")
	watchers  map[adapters.Endpoint][]*Session // almost always one session per endpoint: a slice, not a map each

	presence sync.Map // agent id -> Presence

	rtMu     sync.Mutex
	realtime atomic.Pointer[[]*Session]

	ahtMu   sync.Mutex
	aht     map[string]time.Duration // skill -> moving average of handle time
	ahtInit time.Duration
}

func newDirectory(defaultAHT time.Duration) *directory {
	d := &directory{
		endpoints: map[adapters.Endpoint]string{},
		watchers:  map[adapters.Endpoint][]*Session{},
		aht:       map[string]time.Duration{},
		ahtInit:   defaultAHT,
	}
	d.realtime.Store(&[]*Session{})
	return d
}

func endpointOf(spec protocol.ChannelSpec) adapters.Endpoint {
	return adapters.Endpoint{Type: spec.Type, Name: spec.Name}
}

// holder returns who holds the endpoint, "" when free.
func (d *directory) holder(ep adapters.Endpoint) string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.endpoints[ep]
}

// claim gives the endpoint to holder unless someone else holds it; it returns
// the current holder on refusal. force takes it regardless (the switch says so).
func (d *directory) claim(ep adapters.Endpoint, holder string, force bool) (string, bool) {
	d.mu.Lock()
	cur := d.endpoints[ep]
	if cur != "" && cur != holder && !force {
		d.mu.Unlock()
		return cur, false
	}
	d.endpoints[ep] = holder
	ws := d.watchersLocked(ep)
	d.mu.Unlock()
	if cur != holder {
		notifyEndpoint(ws, ep)
	}
	return holder, true
}

// release frees the endpoint if holder holds it.
func (d *directory) release(ep adapters.Endpoint, holder string) {
	d.mu.Lock()
	if d.endpoints[ep] != holder {
		d.mu.Unlock()
		return
	}
	delete(d.endpoints, ep)
	ws := d.watchersLocked(ep)
	d.mu.Unlock()
	notifyEndpoint(ws, ep)
}

func (d *directory) watchersLocked(ep adapters.Endpoint) []*Session {
	return slices.Clone(d.watchers[ep])
}

func notifyEndpoint(ws []*Session, ep adapters.Endpoint) {
	for _, s := range ws {
		s.post(func(s *Session) { s.onEndpointChanged(ep) })
	}
}

// watch registers s for changes of ep; unwatch undoes it.
func (d *directory) watch(ep adapters.Endpoint, s *Session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !slices.Contains(d.watchers[ep], s) {
		d.watchers[ep] = append(d.watchers[ep], s)
	}
}

func (d *directory) unwatch(ep adapters.Endpoint, s *Session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ws := slices.DeleteFunc(d.watchers[ep], func(w *Session) bool { return w == s })
	if len(ws) == 0 {
		delete(d.watchers, ep)
		return
	}
	d.watchers[ep] = ws
}

// publish records an agent's presence (or removes it when p.Status is "") and
// tells the real-time address book watchers.
func (d *directory) publish(p Presence) {
	if p.Status == "" {
		d.presence.Delete(p.AgentID)
	} else {
		d.presence.Store(p.AgentID, p)
	}
	for _, s := range *d.realtime.Load() {
		s.markAddressBookDirty()
	}
}

// Presences returns every live agent's presence, sorted by agent id.
func (d *directory) presences() []Presence {
	var out []Presence
	d.presence.Range(func(_, v any) bool {
		out = append(out, v.(Presence))
		return true
	})
	slices.SortFunc(out, func(a, b Presence) int { return strings.Compare(a.AgentID, b.AgentID) })
	return out
}

func (d *directory) setRealtime(s *Session, on bool) {
	d.rtMu.Lock()
	defer d.rtMu.Unlock()
	cur := *d.realtime.Load()
	i := slices.Index(cur, s)
	switch {
	case on && i < 0:
		next := append(slices.Clone(cur), s)
		d.realtime.Store(&next)
	case !on && i >= 0:
		next := slices.Delete(slices.Clone(cur), i, i+1)
		d.realtime.Store(&next)
	}
}

// observeHandleTime folds one interaction's duration into the skill's average
// (exponential moving average, weight 1/8 like TCP's SRTT).
func (d *directory) observeHandleTime(skills []string, took time.Duration) {
	d.ahtMu.Lock()
	defer d.ahtMu.Unlock()
	for _, sk := range skills {
		cur, ok := d.aht[sk]
		if !ok {
			cur = d.ahtInit
		}
		d.aht[sk] = cur + (took-cur)/8
	}
}

// fillAddressBook writes live properties into the entries: an agent entry's
// state is the agent's aggregate status; a skill entry counts the ACTIVE
// channels of that media type activated on the skill's queue, ready ones as
// available, others as unavailable. EWT is 0 while someone is available,
// otherwise the skill's average handle time divided by the staffed agents;
// it is left out when nobody is staffed.
func (d *directory) fillAddressBook(books *protocol.AddressBooks) {
	d.ahtMu.Lock()
	defer d.ahtMu.Unlock()
	var fill func(entries []protocol.Entry)
	fill = func(entries []protocol.Entry) {
		for i := range entries {
			e := &entries[i]
			switch e.Type {
			case protocol.EntryAgent:
				if e.Properties.AgentID == "" {
					continue
				}
				e.Properties.State = protocol.StatusLoggedOut
				if p, ok := d.presence.Load(e.Properties.AgentID); ok {
					e.Properties.State = p.(Presence).Status
				}
			case protocol.EntrySkill:
				avail, unavail := d.countSkill(e.Properties.Skill, e.Properties.MediaType)
				e.Properties.NumAvailable, e.Properties.NumUnavailable = &avail, &unavail
				e.Properties.EWT = ""
				switch {
				case avail > 0:
					e.Properties.EWT = "0"
				case unavail > 0:
					aht, ok := d.aht[e.Properties.Skill]
					if !ok {
						aht = d.ahtInit
					}
					e.Properties.EWT = strconv.Itoa(int((aht / time.Duration(unavail)).Round(time.Second).Seconds()))
				}
			}
		}
	}
	var walk func(groups []protocol.Group)
	walk = func(groups []protocol.Group) {
		for i := range groups {
			fill(groups[i].Entries)
			walk(groups[i].Groups)
		}
	}
	for i := range books.AddressBooks {
		fill(books.AddressBooks[i].Entries)
		walk(books.AddressBooks[i].Groups)
	}
}

func (d *directory) countSkill(skill, mediaType string) (avail, unavail int) {
	if skill == "" {
		return 0, 0
	}
	d.presence.Range(func(_, v any) bool {
		for _, c := range v.(Presence).Channels {
			if c.State != protocol.StateActive || (mediaType != "" && c.Type != mediaType) || !slices.Contains(c.Queues, skill) {
				continue
			}
			if c.Status == protocol.StatusReady {
				avail++
			} else {
				unavail++
			}
		}
		return true
	})
	return avail, unavail
}
