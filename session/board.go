package session

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/protocol"
)

// board is this node's live table of every agent of the cluster, for
// supervisors: loaded from the store (or, without Redis, from the local
// directory) and kept current from the "all" event topic through Follow, so
// it sees agents of every node in seq order with gaps repaired.
//
// Every change goes into the board's change log, which each watch reads at
// its own pace (see Watch); the board only wakes the watches.
//
// It starts on first use. Locking: mu guards views, seqs, watchers and the
// log's appends; a watch's snapshot and its cursor into the log are taken
// together under it. Wakers run under mu and must not block.
type board struct {
	m *Manager

	startOnce sync.Once
	ready     chan struct{}

	mu       sync.Mutex
	views    map[string]*protocol.AgentView
	seqs     map[string]uint64 // agent -> seq of the last applied event
	watchers map[*watcher]struct{}
	log      *changeLog
	// queues: the agents' counts per queue (queueBoard reads them).
	queues map[string]*queueAgents
	// lagMs is how old the last event the board applied was (ms).
	lagMs atomic.Int64
}

// readDelay is how long a watch waits before it reads the log. Normally
// protocol.LiveBatchDelay; while the board itself is behind, as long as it
// is behind (up to protocol.LiveMaxReadDelay): watches then read less
// often, fold more, and leave the CPU to the board. The changes they
// deliver stay fresh (each is an agent's latest), fewer are delivered.
func (b *board) readDelay() time.Duration {
	lag := time.Duration(b.lagMs.Load()) * time.Millisecond
	if lag <= protocol.LiveLagThreshold {
		return protocol.LiveBatchDelay
	}
	return min(lag, protocol.LiveMaxReadDelay)
}

type watcher struct {
	wake func()
}

func newBoard(m *Manager) *board {
	return &board{m: m, ready: make(chan struct{}), views: map[string]*protocol.AgentView{},
		seqs: map[string]uint64{}, watchers: map[*watcher]struct{}{}, log: newChangeLog(), queues: map[string]*queueAgents{}}
}

func (b *board) start() {
	b.startOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		b.m.wg.Add(2)
		go func() {
			defer b.m.wg.Done()
			<-b.m.stop
			cancel()
		}()
		go func() {
			defer b.m.wg.Done()
			b.run(ctx)
		}()
	})
}

func (b *board) run(ctx context.Context) {
	events := make(chan Envelope, protocol.BoardQueue)
	subscribed := make(chan struct{})
	go func() {
		err := b.m.follow(ctx, AllTopic, nil, func() { close(subscribed) }, func(e Envelope) error {
			select {
			case events <- e:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err != nil && ctx.Err() == nil {
			b.m.log.Error("supervisor board stopped following events", zap.Error(err))
		}
	}()
	// Subscribe first, then load: events after the load are applied by seq,
	// older ones skipped.
	for {
		select {
		case <-subscribed:
		case <-ctx.Done():
			return
		}
		break
	}
	for {
		views, err := b.m.loadViews(ctx)
		if err == nil {
			b.mu.Lock()
			for _, v := range views {
				b.views[v.view.AgentID] = v.view
				b.seqs[v.view.AgentID] = v.seq
				countQueues(b.queues, v.view, 1)
			}
			b.mu.Unlock()
			break
		}
		b.m.log.Warn("supervisor board cannot load agents yet", zap.Error(err))
		select {
		case <-time.After(b.m.opts.HealthInterval):
		case <-ctx.Done():
			return
		}
	}
	close(b.ready)
	for {
		select {
		case e := <-events:
			b.apply(ctx, e)
		case <-ctx.Done():
			return
		}
	}
}

type eventHead struct {
	Name      string          `json:"name"`
	Timestamp int64           `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

func (b *board) apply(ctx context.Context, e Envelope) {
	if e.Reset {
		b.reload(ctx, e.Agent)
		return
	}
	var h eventHead
	if json.Unmarshal(e.Event, &h) != nil {
		return
	}
	lag := time.Now().UnixMilli() - h.Timestamp
	b.lagMs.Store(lag)
	b.m.opts.Metrics.BoardApplied(float64(lag) / 1000)
	b.mu.Lock()
	prev := b.views[e.Agent]
	if prev != nil && prev.SessionID == e.Session && e.Seq <= b.seqs[e.Agent] {
		b.mu.Unlock()
		return // already part of the loaded state
	}
	var cur *protocol.AgentView
	switch h.Name {
	case protocol.EvStateUpdated:
		var st protocol.StateUpdated
		if json.Unmarshal(h.Data, &st) != nil {
			b.mu.Unlock()
			return
		}
		cur = &protocol.AgentView{AgentID: e.Agent, DisplayName: st.DisplayName, SessionID: e.Session, Status: st.Status, Channels: st.Channels, StatusSince: h.Timestamp, Today: st.Today}
		if prev != nil {
			cur.Teams = prev.Teams
			if prev.Status == st.Status && prev.SessionID == e.Session {
				cur.StatusSince = prev.StatusSince
			}
		}
	case protocol.EvSessionEnded:
		cur = nil
	case protocol.EvSessionInitialized:
		var init protocol.SessionInitialized
		_ = json.Unmarshal(h.Data, &init)
		if prev != nil && prev.SessionID == e.Session {
			b.seqs[e.Agent] = e.Seq
			if init.Teams != nil && !sameSet(init.Teams, prev.Teams) {
				// A re-issued token changed the agent's teams: who may
				// see the agent changes with them.
				cur := *prev
				cur.Teams = init.Teams
				b.set(e.Agent, prev, &cur, h.Timestamp)
			}
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		b.reload(ctx, e.Agent) // a new session: its state is in the store
		return
	default:
		b.seqs[e.Agent] = e.Seq
		b.mu.Unlock()
		return
	}
	b.seqs[e.Agent] = e.Seq
	b.set(e.Agent, prev, cur, h.Timestamp)
	b.mu.Unlock()
}

// reload reads one agent's view from the store (or the local directory).
func (b *board) reload(ctx context.Context, agent string) {
	v, err := b.m.loadView(ctx, agent)
	if err != nil {
		b.m.log.Warn("supervisor board cannot reload an agent", zap.String("agent", agent), zap.Error(err))
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	prev := b.views[agent]
	if v.view != nil {
		b.seqs[agent] = v.seq
	}
	b.set(agent, prev, v.view, time.Now().UnixMilli())
}

// set records cur (nil: the agent left), logs the change and wakes the
// watches. Called with mu.
func (b *board) set(agent string, prev, cur *protocol.AgentView, at int64) {
	if reflect.DeepEqual(prev, cur) {
		return
	}
	if cur == nil {
		delete(b.views, agent)
		delete(b.seqs, agent)
	} else {
		b.views[agent] = cur
	}
	b.log.append(agent, prev, cur, at)
	for w := range b.watchers {
		w.wake()
	}
	if left, joined := countQueues(b.queues, prev, -1), countQueues(b.queues, cur, 1); left || joined {
		b.m.queues.countsChanged()
	}
}

// queueAgents copies the agents' counts per queue.
func (b *board) queueAgents() map[string]queueAgents {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]queueAgents, len(b.queues))
	for q, n := range b.queues {
		out[q] = *n
	}
	return out
}

// watch returns the matching agents and a Watch of their changes from then
// on. wake is called (under the board's lock: it must not block) when
// changes may be waiting.
func (b *board) watch(ctx context.Context, match func(*protocol.AgentView) bool, compact bool, wake func()) (*Watch, []protocol.AgentView, error) {
	if err := b.wait(ctx); err != nil {
		return nil, nil, err
	}
	w := &Watch{b: b, w: &watcher{wake: wake}, match: match, compact: compact}
	b.mu.Lock()
	defer b.mu.Unlock()
	snap := b.snapshotLocked(match)
	w.next = b.log.head.Load() + 1
	b.watchers[w.w] = struct{}{}
	return w, snap, nil
}

// snapshot returns the matching agents.
func (b *board) snapshot(ctx context.Context, match func(*protocol.AgentView) bool) ([]protocol.AgentView, error) {
	if err := b.wait(ctx); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.snapshotLocked(match), nil
}

func (b *board) wait(ctx context.Context) error {
	b.start()
	select {
	case <-b.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *board) snapshotLocked(match func(*protocol.AgentView) bool) []protocol.AgentView {
	out := make([]protocol.AgentView, 0, len(b.views))
	for _, v := range b.views {
		if match == nil || match(v) {
			out = append(out, *v)
		}
	}
	slices.SortFunc(out, func(a, c protocol.AgentView) int { return strings.Compare(a.AgentID, c.AgentID) })
	return out
}

// Agents returns every live agent matching the filter, for REST.
func (m *Manager) Agents(ctx context.Context, f protocol.WatchFilter) ([]protocol.AgentView, error) {
	return m.board.snapshot(ctx, MatchFilter(f))
}

// MatchFilter returns the predicate of a watch filter (AND of its lists).
func MatchFilter(f protocol.WatchFilter) func(*protocol.AgentView) bool {
	return func(v *protocol.AgentView) bool {
		if len(f.Agents) > 0 && !slices.Contains(f.Agents, v.AgentID) {
			return false
		}
		if len(f.Statuses) > 0 && !slices.Contains(f.Statuses, v.Status) {
			return false
		}
		if len(f.Teams) > 0 && !slices.ContainsFunc(v.Teams, func(t string) bool { return slices.Contains(f.Teams, t) }) {
			return false
		}
		if len(f.ChannelTypes) > 0 && !slices.ContainsFunc(v.Channels, func(c protocol.ChannelState) bool { return slices.Contains(f.ChannelTypes, c.Type) }) {
			return false
		}
		return true
	}
}

// loadedView is an agent's view and the seq of the event it reflects.
type loadedView struct {
	view *protocol.AgentView
	seq  uint64
}

// loadViews reads every live agent: from the store's session snapshots when
// it is durable, else from this (only) node's directory.
func (m *Manager) loadViews(ctx context.Context) ([]loadedView, error) {
	if !m.store.Durable() {
		var out []loadedView
		for _, p := range m.dir.presences() {
			out = append(out, loadedView{presenceView(p), p.Seq})
		}
		return out, nil
	}
	sctx, cancel := context.WithTimeout(ctx, m.opts.StoreTimeout)
	defer cancel()
	recs, err := m.store.LiveSessions(sctx)
	if err != nil {
		return nil, err
	}
	var out []loadedView
	for _, r := range recs {
		if v, seq, ok := snapshotView(r.SessionID, r.Snapshot); ok {
			out = append(out, loadedView{v, seq})
		}
	}
	return out, nil
}

// loadView reads one agent's view; nil view when it has no live session.
func (m *Manager) loadView(ctx context.Context, agent string) (loadedView, error) {
	if !m.store.Durable() {
		for _, p := range m.dir.presences() {
			if p.AgentID == agent {
				return loadedView{presenceView(p), p.Seq}, nil
			}
		}
		return loadedView{}, nil
	}
	sctx, cancel := context.WithTimeout(ctx, m.opts.StoreTimeout)
	defer cancel()
	sid, err := m.store.SessionOf(sctx, agent)
	if err != nil || sid == "" {
		return loadedView{}, err
	}
	rec, ok, err := m.store.Load(sctx, sid)
	if err != nil || !ok {
		return loadedView{}, err
	}
	v, seq, ok := snapshotView(sid, rec.Snapshot)
	if !ok {
		return loadedView{}, nil
	}
	return loadedView{v, seq}, nil
}

func presenceView(p Presence) *protocol.AgentView {
	return &protocol.AgentView{AgentID: p.AgentID, DisplayName: p.DisplayName, SessionID: p.SessionID, Teams: nonNil(p.Teams), Status: p.Status,
		StatusSince: p.StatusSince.UnixMilli(), Channels: nonNil(p.Channels), Today: p.Today}
}
