package session

import (
	"bytes"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/ctibroker/ctibroker/protocol"
)

// changeLog is the board's recent changes: a ring of protocol.LiveLogSize
// entries, appended by the board under its lock and read by any number of
// watches without one. Entries are numbered from 1; an entry is immutable
// once published, but for nextSame, which the next change of its agent sets.
//
// Each watch reads the log from its own cursor, so the board's cost per
// change does not grow with the watches (it only wakes them), a change is
// encoded once for all of them, and a watch that reads late folds what it
// missed (one change per agent). A watch that falls more than the ring
// behind has lost changes and must start again from a snapshot.
type changeLog struct {
	slots []atomic.Pointer[logEntry]
	head  atomic.Uint64     // the last entry's index
	last  map[string]uint64 // agent -> its last entry (under board.mu)
	// agents is len(last), for readers without board.mu.
	agents atomic.Int64
}

type logEntry struct {
	idx      uint64
	agent    string
	prev     *protocol.AgentView
	cur      *protocol.AgentView
	at       int64
	prevSame uint64 // the agent's previous entry, 0 if none
	nextSame atomic.Uint64
	enc      encodedChange
}

func newChangeLog() *changeLog {
	return &changeLog{slots: make([]atomic.Pointer[logEntry], protocol.LiveLogSize), last: map[string]uint64{}}
}

// append publishes a change. The board's lock is held.
func (l *changeLog) append(agent string, prev, cur *protocol.AgentView, at int64) {
	idx := l.head.Load() + 1
	e := &logEntry{idx: idx, agent: agent, prev: prev, cur: cur, at: at}
	e.enc = encodedChange{agent: protocol.AppendString(nil, agent), prevView: prev, curView: cur, at: at}
	if p := l.last[agent]; p != 0 {
		if pe := l.entry(p); pe != nil {
			e.prevSame = p
			pe.nextSame.Store(idx)
		}
	}
	if cur == nil {
		delete(l.last, agent) // a later appearance starts a new chain
	} else {
		l.last[agent] = idx
	}
	l.agents.Store(int64(len(l.last)))
	l.slots[idx%uint64(len(l.slots))].Store(e)
	l.head.Store(idx)
}

// entry returns entry i, or nil when it was overwritten or is not written.
func (l *changeLog) entry(i uint64) *logEntry {
	e := l.slots[i%uint64(len(l.slots))].Load()
	if e == nil || e.idx != i {
		return nil
	}
	return e
}

// Watch is a live view of the agents matching a filter: the snapshot it
// started from (see Manager.Watch), then its changes. One goroutine at a
// time reads it.
type Watch struct {
	b       *board
	w       *watcher
	match   func(*protocol.AgentView) bool
	compact bool
	next    uint64 // the first entry not read yet
}

// Change is one agent change as a watch sees it: Prev is what the watch saw
// last (nil when the agent appears to it), Cur the agent now (nil when it
// leaves). Folded counts later changes folded into it because the watch read
// late; the change then goes from Prev to the latest Cur.
type Change struct {
	AgentID string
	Prev    *protocol.AgentView
	Cur     *protocol.AgentView
	// At is when the (last) change happened, Unix ms.
	At     int64
	Folded int
	// enc is the change's shared encoding when nothing was folded in;
	// first is the encoding of the first change folded, whose previous view
	// the watch saw.
	enc   *encodedChange
	first *encodedChange
	pm    bool
	cm    bool
}

// Changes appends the changes since the last call to dst, in order, one per
// agent. ok is false when the watch fell behind the log (changes were lost):
// it must start again from a snapshot.
func (w *Watch) Changes(dst []Change) (_ []Change, ok bool) {
	ok = w.walk(func(c Change) { dst = append(dst, c) })
	return dst, ok
}

// Messages is Changes as messages that start with head (see
// Change.message), in the watch's format, straight into dst: under load a
// feed's batch holds thousands of changes for each of a thousand
// supervisors, and a second slice of them per read was a quarter of the
// peak live heap. folded sums the changes' Folded.
func (w *Watch) Messages(dst []Message, head []byte) (_ []Message, folded int, ok bool) {
	ok = w.walk(func(c Change) {
		folded += c.Folded
		dst = append(dst, c.message(head, w.compact))
	})
	return dst, folded, ok
}

// pending is about how many changes the next Messages appends: the log's
// entries since the last read, one per agent at most (an agent that left
// still has its last change; a slice sized by this rarely grows).
func (w *Watch) pending() int {
	l := w.b.log
	head := l.head.Load()
	if head < w.next {
		return 0
	}
	return int(min(head-w.next+1, uint64(len(l.slots)), uint64(l.agents.Load())+1))
}

// walk calls visit with each change since the last call, in order, one per
// agent; false when the watch fell behind the log (visit may have seen some
// changes by then). A change goes by value: a pointer to it would move
// every change to the heap.
func (w *Watch) walk(visit func(Change)) bool {
	l := w.b.log
	head := l.head.Load()
	if head < w.next {
		return true
	}
	if head-w.next >= uint64(len(l.slots)) || l.entry(w.next) == nil {
		return false
	}
	for i := w.next; i <= head; i++ {
		e := l.entry(i)
		if e == nil {
			return false
		}
		if ns := e.nextSame.Load(); ns != 0 && ns <= head {
			continue // folded into a later change of the same agent
		}
		first, folded := e, 0
		for first.prevSame >= w.next {
			p := l.entry(first.prevSame)
			if p == nil {
				return false
			}
			first, folded = p, folded+1
		}
		c := Change{AgentID: e.agent, At: e.at, Folded: folded}
		c.pm = first.prev != nil && w.match(first.prev)
		c.cm = e.cur != nil && w.match(e.cur)
		if !c.pm && !c.cm {
			continue // never in this watch's view
		}
		if c.pm {
			c.Prev = first.prev
		}
		if c.cm {
			c.Cur = e.cur
		}
		c.enc = &e.enc
		if folded > 0 {
			c.first = &first.enc
		}
		visit(c)
	}
	w.next = head + 1
	return true
}

// Stop ends the watch.
func (w *Watch) Stop() {
	w.b.mu.Lock()
	delete(w.b.watchers, w.w)
	w.b.mu.Unlock()
}

// message returns the change as a message of a watch whose messages start
// with head. An unfolded change shares the log's encoding with every watch
// that sees it the same way; a folded one is encoded by the writer.
func (c *Change) message(head []byte, compact bool) Message {
	if c.first == nil {
		return Message{Head: head, Body: c.enc.bodyFor(c.pm, c.cm, compact)}
	}
	c.first.views()
	c.enc.views()
	return Message{Head: head, folded: foldedChange{first: c.first, last: c.enc, n: c.Folded, pm: c.pm, cm: c.cm, compact: compact}}
}

// foldedChange is a change that folds n later ones in, as a watch sees it:
// from first's previous view (the one the watch saw) to last's current.
// Both views are encoded already (views).
type foldedChange struct {
	first, last *encodedChange
	n           int
	pm, cm      bool
	compact     bool
}

func (f *foldedChange) appendTo(dst []byte) []byte {
	if f.compact {
		// What the watch missed is not worth a diff of its own: the whole
		// current view replaces the one it has.
		return appendReplaceBody(dst, f.last.agent, f.pm, f.cm, f.last.cur, f.n, f.last.at)
	}
	var prev, cur []byte
	if f.pm {
		prev = f.first.prev
	}
	if f.cm {
		cur = f.last.cur
	}
	return appendChangeBody(dst, f.last.agent, prev, cur, f.n, f.last.at)
}

// foldedOverhead bounds what a folded change's encoding adds to its agent
// and views: the field names, "null"s, the count and the timestamp.
const foldedOverhead = 128

// len bounds the encoding's length from above (frames must stay within
// protocol.MaxFrameBytes), by at most foldedOverhead.
func (f *foldedChange) len() int {
	n := len(f.last.agent) + foldedOverhead
	if f.cm {
		n += len(f.last.cur)
	}
	if !f.compact && f.pm {
		n += len(f.first.prev)
	}
	return n
}

// AppendData appends the data of supervisor.agent.changed for subscription
// sub (already JSON-encoded), for event streams that frame it themselves.
func (c *Change) AppendData(dst, sub []byte) []byte {
	dst = append(dst, `{"subscriptionId":`...)
	dst = append(dst, sub...)
	dst = append(dst, ',')
	start := len(dst)
	m := c.message(nil, false)
	dst = m.AppendTo(dst)
	// The tail is the data's other fields, then `},"timestamp":N}`.
	dst = dst[:start+bytes.LastIndex(dst[start:], []byte(`},"timestamp":`))]
	return append(dst, '}')
}

// encodedChange is a log entry encoded for watches, each form made on first
// need by whichever watch needs it: the views, and the message tails of the
// three ways a watch can see the change (both views, the agent appearing,
// leaving) in either format.
type encodedChange struct {
	agent             []byte
	prevView, curView *protocol.AgentView
	at                int64
	viewsOnce         sync.Once
	prev, cur         []byte
	bodies            [2][3]atomic.Pointer[[]byte]
}

func (e *encodedChange) views() {
	e.viewsOnce.Do(func() {
		e.prev, e.cur = encodeView(e.prevView), encodeView(e.curView)
	})
}

// bodyFor returns the message tail for a watch that sees the previous view
// (pm) and/or the current one (cm), in its format.
func (e *encodedChange) bodyFor(pm, cm, compact bool) []byte {
	i := 0
	switch {
	case !pm:
		i = 1
	case !cm:
		i = 2
	}
	f := 0
	if compact {
		f = 1
	}
	if b := e.bodies[f][i].Load(); b != nil {
		return *b
	}
	var prev, cur *protocol.AgentView
	if pm {
		prev = e.prevView
	}
	if cm {
		cur = e.curView
	}
	var b []byte
	if compact {
		b = appendCompactBody(nil, e.agent, prev, cur, 0, e.at)
	} else {
		e.views()
		var pv, cv []byte
		if pm {
			pv = e.prev
		}
		if cm {
			cv = e.cur
		}
		b = appendChangeBody(nil, e.agent, pv, cv, 0, e.at)
	}
	// Two watches may encode it at once: either result is the same.
	e.bodies[f][i].CompareAndSwap(nil, &b)
	return *e.bodies[f][i].Load()
}

func encodeView(v *protocol.AgentView) []byte {
	if v == nil {
		return nil
	}
	b, _ := protocol.Marshal(v)
	return b
}

// appendChangeBody appends the part of a change message after its
// subscription id: `"agentId":..,"previous":..,"current":..}` (with
// "conflated" when changes were folded in), then the timestamp.
func appendChangeBody(dst, agent, prev, cur []byte, folded int, at int64) []byte {
	if dst == nil {
		dst = make([]byte, 0, len(agent)+len(prev)+len(cur)+80)
	}
	dst = append(dst, `"agentId":`...)
	dst = append(dst, agent...)
	dst = append(dst, `,"previous":`...)
	dst = appendOrNull(dst, prev)
	dst = append(dst, `,"current":`...)
	dst = appendOrNull(dst, cur)
	return appendChangeEnd(dst, folded, at)
}

// appendCompactBody is appendChangeBody in the compact format:
// `"agentId":..,"ops":[..]}` (see protocol.AppendOps).
func appendCompactBody(dst, agent []byte, prev, cur *protocol.AgentView, folded int, at int64) []byte {
	dst = append(dst, `"agentId":`...)
	dst = append(dst, agent...)
	dst = append(dst, `,"ops":`...)
	dst = protocol.AppendOps(dst, prev, cur)
	return appendChangeEnd(dst, folded, at)
}

// appendReplaceBody is a compact change that replaces the watch's whole
// view of the agent: an add of "" when it appears (!pm), a remove of ""
// when it leaves (!cm), else a replace of "" with cur.
func appendReplaceBody(dst, agent []byte, pm, cm bool, cur []byte, folded int, at int64) []byte {
	dst = append(dst, `"agentId":`...)
	dst = append(dst, agent...)
	switch {
	case !cm:
		dst = append(dst, `,"ops":[{"op":"remove","path":""}]`...)
	case !pm:
		dst = append(dst, `,"ops":[{"op":"add","path":"","value":`...)
		dst = append(dst, cur...)
		dst = append(dst, "}]"...)
	default:
		dst = append(dst, `,"ops":[{"op":"replace","path":"","value":`...)
		dst = append(dst, cur...)
		dst = append(dst, "}]"...)
	}
	return appendChangeEnd(dst, folded, at)
}

func appendChangeEnd(dst []byte, folded int, at int64) []byte {
	if folded > 0 {
		dst = append(dst, `,"conflated":`...)
		dst = strconv.AppendInt(dst, int64(folded), 10)
	}
	dst = append(dst, `},"timestamp":`...)
	dst = strconv.AppendInt(dst, at, 10)
	return append(dst, '}')
}

func appendOrNull(dst, v []byte) []byte {
	if v == nil {
		return append(dst, "null"...)
	}
	return append(dst, v...)
}
