package session

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/bus"
	"github.com/ctibroker/ctibroker/protocol"
)

// QueuesTopic is the bus topic on which nodes share their adapters' queue
// figures.
const QueuesTopic = "queues"

// ErrNoQueues: the adapter does not report queues.
var ErrNoQueues = errors.New("the switch adapter does not report queues")

// queueBoard is this node's live figures of every queue, the same on every
// node: each node reads its adapter's figures when the adapter says they
// changed (and every protocol.QueueRefresh), and publishes them on
// QueuesTopic; every node keeps the latest figures of each view
// (adapters.QueueReporter.QueueView), adds the views up, and adds the
// agents' counts from the board, which every node has whole.
//
// Changes go to the watches at once when a count changed; a change of the
// time-based figures alone (longest wait, average speed of answer, service
// level) waits until Options.QueueInterval has passed since the queue's
// last change went out.
//
// Locking: mu guards views, current, sent, pending and watches; it is
// never held with board.mu (the board kicks, the runner copies the counts
// before it takes mu). Deliveries run under mu and must not block.
type queueBoard struct {
	m        *Manager
	reporter adapters.QueueReporter // nil: no queues
	// kick wakes the runner: the board's counts or the adapter's figures
	// changed. reread says which.
	kick   chan struct{}
	reread chan struct{}

	mu      sync.Mutex
	views   map[string]*queueView
	current map[string]protocol.QueueFigures // as the watches last saw them
	sent    map[string]time.Time             // when each queue's last change went out
	watches map[*QueueWatch]struct{}
	// ready is closed once the first figures are in.
	ready chan struct{}
}

// queueView is one view's latest figures.
type queueView struct {
	Kind   string                  `json:"kind"` // "view", or "ask": republish yours
	View   string                  `json:"view,omitempty"`
	Node   string                  `json:"node"`
	Queues []protocol.QueueFigures `json:"queues,omitempty"`
	seen   time.Time
}

// QueueWatch is a watch of queue figures.
type QueueWatch struct {
	qb      *queueBoard
	match   func(*protocol.QueueFigures) bool
	deliver func(prev, cur *protocol.QueueFigures)
}

func newQueueBoard(m *Manager) *queueBoard {
	r := m.opts.Queues
	if r == nil {
		r, _ = m.adapter.(adapters.QueueReporter)
	}
	return &queueBoard{m: m, reporter: r, kick: make(chan struct{}, 1), reread: make(chan struct{}, 1),
		views: map[string]*queueView{}, current: map[string]protocol.QueueFigures{}, sent: map[string]time.Time{},
		watches: map[*QueueWatch]struct{}{}, ready: make(chan struct{})}
}

// reports says whether the adapter reports queues (now: a remote
// adapter's process says so when it connects).
func (qb *queueBoard) reports() bool {
	if qb.reporter == nil {
		return false
	}
	c, ok := qb.reporter.(adapters.Capabilities)
	return !ok || c.HasQueues()
}

// signal wakes the runner without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// adapterChanged: the adapter's figures changed.
func (qb *queueBoard) adapterChanged() {
	signal(qb.reread)
}

// countsChanged: an agent's queues or status changed on the board. It runs
// under board.mu.
func (qb *queueBoard) countsChanged() { signal(qb.kick) }

// run shares this node's figures and keeps everyone's until ctx ends.
func (qb *queueBoard) run(ctx context.Context) {
	if qb.reporter == nil {
		return
	}
	var msgs <-chan bus.Message
	var sub *bus.Subscription
	for sub == nil {
		s, err := qb.m.bus.Subscribe(ctx, QueuesTopic, protocol.QueueTopicBuffer)
		if err == nil {
			sub, msgs = s, s.C
			break
		}
		qb.m.log.Warn("cannot subscribe to queue figures yet", zap.Error(err))
		select {
		case <-time.After(qb.m.opts.HealthInterval):
		case <-ctx.Done():
			return
		}
	}
	defer sub.Close()
	// Other nodes' figures come on their next refresh; asking brings them
	// now.
	qb.publish(ctx, queueView{Kind: "ask", Node: qb.m.opts.Node})
	qb.readAdapter(ctx)
	close(qb.ready)
	refresh := time.NewTicker(protocol.QueueRefresh)
	defer refresh.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-qb.reread:
			qb.readAdapter(ctx)
		case msg := <-msgs:
			qb.receive(ctx, msg.Payload)
		case <-refresh.C:
			qb.expire()
			qb.readAdapter(ctx)
		case <-qb.kick:
		case <-timer.C:
		case <-ctx.Done():
			return
		}
		if next := qb.recompute(time.Now()); next > 0 {
			timer.Reset(next)
		}
	}
}

// readAdapter reads this node's view and publishes it.
func (qb *queueBoard) readAdapter(ctx context.Context) {
	if !qb.reports() {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, qb.m.opts.StoreTimeout)
	defer cancel()
	qs, err := qb.reporter.Queues(rctx)
	if errors.Is(err, adapters.ErrLinkDown) {
		return // read again when the link is back (LinkChanged)
	}
	if err != nil {
		qb.m.log.Warn("the switch did not report its queues", zap.Error(err))
		return
	}
	v := queueView{Kind: "view", View: qb.reporter.QueueView(), Node: qb.m.opts.Node, Queues: qs}
	qb.store(v)
	qb.publish(ctx, v)
}

func (qb *queueBoard) publish(ctx context.Context, v queueView) {
	payload, err := json.Marshal(v)
	if err != nil {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, qb.m.opts.StoreTimeout)
	defer cancel()
	if err := qb.m.bus.Publish(pctx, QueuesTopic, payload); err != nil {
		qb.m.log.Warn("cannot share queue figures", zap.Error(err))
	}
}

func (qb *queueBoard) receive(ctx context.Context, payload []byte) {
	var v queueView
	if json.Unmarshal(payload, &v) != nil {
		return
	}
	switch {
	case v.Node == qb.m.opts.Node:
		// Our own, already stored.
	case v.Kind == "ask":
		qb.readAdapter(ctx)
	case v.Kind == "view" && v.View != "" && len(v.Queues) <= protocol.MaxViewQueues:
		qb.store(v)
	}
}

func (qb *queueBoard) store(v queueView) {
	v.seen = time.Now()
	qb.mu.Lock()
	qb.views[v.View] = &v
	qb.mu.Unlock()
}

// expire forgets the views nobody refreshed: their nodes are gone.
func (qb *queueBoard) expire() {
	qb.mu.Lock()
	defer qb.mu.Unlock()
	maps.DeleteFunc(qb.views, func(_ string, v *queueView) bool {
		return v.Node != qb.m.opts.Node && time.Since(v.seen) > 3*protocol.QueueRefresh
	})
}

// recompute merges the figures, sends the watches what changed, and
// returns when to look again for changes held back (0: none).
func (qb *queueBoard) recompute(now time.Time) time.Duration {
	agents := qb.m.board.queueAgents()
	qb.mu.Lock()
	defer qb.mu.Unlock()
	merged := mergeQueues(qb.views, agents)
	var next time.Duration
	for name, cur := range merged {
		prev, had := qb.current[name]
		if had && reflect.DeepEqual(prev, cur) {
			continue
		}
		if had && !countsDiffer(prev, cur) {
			if wait := qb.m.opts.QueueInterval - now.Sub(qb.sent[name]); wait > 0 {
				if next == 0 || wait < next {
					next = wait
				}
				continue
			}
		}
		qb.current[name], qb.sent[name] = cur, now
		var p *protocol.QueueFigures
		if had {
			p = &prev
		}
		qb.deliverLocked(p, &cur)
	}
	for name, prev := range qb.current {
		if _, ok := merged[name]; !ok {
			delete(qb.current, name)
			delete(qb.sent, name)
			qb.deliverLocked(&prev, nil)
		}
	}
	return next
}

func (qb *queueBoard) deliverLocked(prev, cur *protocol.QueueFigures) {
	which := cur
	if which == nil {
		which = prev
	}
	for w := range qb.watches {
		if w.match(which) {
			w.deliver(prev, cur)
		}
	}
}

// countsDiffer reports whether a count changed (changes that go at once).
func countsDiffer(a, b protocol.QueueFigures) bool {
	a.LongestWaitStart, a.AvgSpeedOfAnswerMs, a.ServiceLevelPct = b.LongestWaitStart, b.AvgSpeedOfAnswerMs, b.ServiceLevelPct
	return !reflect.DeepEqual(a, b)
}

// mergeQueues adds the views up, queue by queue, and adds the agents.
func mergeQueues(views map[string]*queueView, agents map[string]queueAgents) map[string]protocol.QueueFigures {
	out := map[string]protocol.QueueFigures{}
	answerMs := map[string]int64{}
	for _, name := range slices.Sorted(maps.Keys(views)) {
		for _, f := range views[name].Queues {
			answerMs[f.Name] += f.AvgSpeedOfAnswerMs * int64(f.Answered)
			m, ok := out[f.Name]
			if !ok {
				f.Teams = slices.Clone(f.Teams)
				if len(f.Teams) == 0 {
					f.Teams = nil // as the bus decodes it, so figures compare equal
				}
				out[f.Name] = f
				continue
			}
			m.Waiting += f.Waiting
			m.Offered += f.Offered
			m.Answered += f.Answered
			m.Abandoned += f.Abandoned
			m.AnsweredInSL += f.AnsweredInSL
			m.AbandonedAfterSL += f.AbandonedAfterSL
			if f.LongestWaitStart != 0 && (m.LongestWaitStart == 0 || f.LongestWaitStart < m.LongestWaitStart) {
				m.LongestWaitStart = f.LongestWaitStart
			}
			for _, t := range f.Teams {
				if !slices.Contains(m.Teams, t) {
					m.Teams = append(m.Teams, t)
				}
			}
			out[f.Name] = m
		}
	}
	for name, m := range out {
		m.AvgSpeedOfAnswerMs, m.ServiceLevelPct = 0, 100
		if m.Answered > 0 {
			m.AvgSpeedOfAnswerMs = answerMs[name] / int64(m.Answered)
		}
		if n := m.AnsweredInSL + m.AbandonedAfterSL; n > 0 {
			m.ServiceLevelPct = float64(m.AnsweredInSL) * 100 / float64(n)
		}
		a := agents[name]
		m.Staffed, m.Ready, m.Busy, m.ACW, m.NotReady = a.Staffed, a.Ready, a.Busy, a.ACW, a.NotReady
		out[name] = m
	}
	return out
}

// watch returns the matching queues' figures, sorted by name, and a watch
// of their changes: deliver runs under the board's lock, in order, and must
// not block.
func (qb *queueBoard) watch(ctx context.Context, match func(*protocol.QueueFigures) bool, deliver func(prev, cur *protocol.QueueFigures)) (*QueueWatch, []protocol.QueueFigures, error) {
	if err := qb.wait(ctx); err != nil {
		return nil, nil, err
	}
	w := &QueueWatch{qb: qb, match: match, deliver: deliver}
	qb.mu.Lock()
	defer qb.mu.Unlock()
	qb.watches[w] = struct{}{}
	return w, qb.snapshotLocked(match), nil
}

// Stop ends the watch; nothing is delivered once it returns.
func (w *QueueWatch) Stop() {
	w.qb.mu.Lock()
	delete(w.qb.watches, w)
	w.qb.mu.Unlock()
}

func (qb *queueBoard) snapshotLocked(match func(*protocol.QueueFigures) bool) []protocol.QueueFigures {
	out := []protocol.QueueFigures{}
	for _, name := range slices.Sorted(maps.Keys(qb.current)) {
		if f := qb.current[name]; match(&f) {
			out = append(out, f)
		}
	}
	return out
}

// wait waits for the first figures, and for the agent board.
func (qb *queueBoard) wait(ctx context.Context) error {
	if !qb.reports() {
		return ErrNoQueues
	}
	if err := qb.m.board.wait(ctx); err != nil {
		return err
	}
	select {
	case <-qb.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	// The first watch may come before any change made the runner merge.
	qb.recompute(time.Now())
	return nil
}

// Queues returns the queues id may see, for REST.
func (m *Manager) Queues(ctx context.Context, id Identity) ([]protocol.QueueFigures, error) {
	if err := m.queues.wait(ctx); err != nil {
		return nil, err
	}
	m.queues.mu.Lock()
	defer m.queues.mu.Unlock()
	return m.queues.snapshotLocked(QueueMatch(id, nil)), nil
}

// WatchQueues starts a watch of the queues id may see among names (nil or
// empty: all of them).
func (m *Manager) WatchQueues(ctx context.Context, id Identity, names []string, deliver func(prev, cur *protocol.QueueFigures)) (*QueueWatch, []protocol.QueueFigures, error) {
	return m.queues.watch(ctx, QueueMatch(id, names), deliver)
}

// QueueMatch is whether id may see a queue, and asked for it (names empty:
// every queue it may see). A supervisor sees its teams' queues and those
// of no team; an admin, and a supervisor of every team, all.
func QueueMatch(id Identity, names []string) func(*protocol.QueueFigures) bool {
	return func(q *protocol.QueueFigures) bool {
		if len(names) > 0 && !slices.Contains(names, q.Name) {
			return false
		}
		switch {
		case !id.Supervisor():
			return false
		case id.AllTeams || id.Role == RoleAdmin || len(q.Teams) == 0:
			return true
		}
		return slices.ContainsFunc(q.Teams, func(t string) bool { return slices.Contains(id.Teams, t) })
	}
}

// queueAgents are a queue's staffed agents by status.
type queueAgents struct{ Staffed, Ready, Busy, ACW, NotReady int }

// countQueues adds an agent's view (d 1) to, or takes it (d -1) from, the
// counts of its queues: an agent counts once per queue, with the status of
// its first ACTIVE channel on it. Called with board.mu.
func countQueues(counts map[string]*queueAgents, v *protocol.AgentView, d int) bool {
	if v == nil {
		return false
	}
	changed := false
	for i, c := range v.Channels {
		if c.State != protocol.StateActive {
			continue
		}
		for _, q := range c.Queues {
			if slices.ContainsFunc(v.Channels[:i], func(p protocol.ChannelState) bool {
				return p.State == protocol.StateActive && slices.Contains(p.Queues, q)
			}) {
				continue
			}
			n := counts[q]
			if n == nil {
				n = &queueAgents{}
				counts[q] = n
			}
			n.Staffed += d
			switch st := c.Status; {
			case strings.HasPrefix(st, "busy_"):
				n.Busy += d
			case st == protocol.StatusReady:
				n.Ready += d
			case st == protocol.StatusAfterCallWork:
				n.ACW += d
			default:
				n.NotReady += d
			}
			if n.Staffed == 0 {
				delete(counts, q)
			}
			changed = true
		}
	}
	return changed
}
