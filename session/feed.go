package session

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ctibroker/ctibroker/protocol"
)

// feed carries a session's live view (its supervisor subscriptions'
// snapshots and changes) to its connection. A view is not a history: it
// bypasses the session's mailbox and journal (no seq, no replay; after a
// reconnect every subscription starts again with a resync snapshot).
//
// Each subscription reads the board's change log through its Watch. The
// board wakes the feed when it logs a change; the feed waits
// protocol.LiveBatchDelay, so that one write carries many changes, reads
// every watch and hands the connection one batch, and reads again only once
// the connection has written it. A connection slower than the changes
// therefore gets, per agent, one change from what it last saw to the latest
// state ("conflated" counts the changes folded in), and one that falls
// further behind than the log gets its subscriptions restarted with resync
// snapshots. Messages share the log's encodings: a change is encoded once,
// whatever the number of subscribers.
//
// Locking: mu guards everything below it, and is held only briefly: wake
// runs under board.mu and must not wait. The watches are read without it,
// by the one goroutine that took the batch in flight (reading).
type feed struct {
	s *Session

	// woken is set by wake and cleared when a read starts: the board wakes
	// a feed once per read, not once per change.
	woken atomic.Bool

	mu        sync.Mutex
	conn      Conn // nil while detached
	gen       uint64
	held      bool // until the op that (re)starts a subscription is settled
	inFlight  bool // a batch is being read or is with the connection
	armed     bool // the batch delay runs
	dirty     bool // woken since the last read
	timer     *time.Timer
	due       time.Time       // when the armed read was due
	lastCycle time.Duration   // from then to the batch written
	queued    []queuedMessage // snapshots and queue changes: go before any agent change
	// subs is replaced, never changed in place: a reader keeps the one it
	// took.
	subs []*liveSub
}

// liveSub is a subscription with a watch running.
type liveSub struct {
	id      string
	watch   *Watch
	compact bool // protocol.FormatCompact
	stale   bool // fell behind the log: waits for its restart (the reader's)
	// queues: the subscription's queue watch (nil: it has none).
	queues *QueueWatch
	// head starts every change message of the subscription, up to and
	// including its subscriptionId field.
	head []byte
}

type queuedMessage struct {
	sub *liveSub
	msg []byte
}

func newFeed(s *Session) *feed { return &feed{s: s} }

func newLiveSub(sessionID, id string, compact bool) *liveSub {
	h := make([]byte, 0, 128)
	h = append(h, `{"messageType":"objectEvent","target":`...)
	h = protocol.AppendString(h, sessionID)
	h = append(h, `,"name":"`+protocol.EvSupervisorAgentChanged+`","data":{"subscriptionId":`...)
	h = protocol.AppendString(h, id)
	h = append(h, ',')
	return &liveSub{id: id, compact: compact, head: h}
}

// hold keeps the feed from sending until release: the op that starts a
// subscription sends its reply (and the session's events) first.
func (f *feed) hold() {
	f.mu.Lock()
	f.held = true
	f.mu.Unlock()
}

func (f *feed) release() {
	f.mu.Lock()
	f.held = false
	r := f.takeLocked()
	f.mu.Unlock()
	f.read(r)
}

// setConn points the feed at a new connection (nil: detached); queued
// messages are dropped (the session restarts the watches on attach).
func (f *feed) setConn(c Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conn = c
	f.gen++
	f.inFlight = false
	clear(f.queued)
	f.queued = f.queued[:0]
}

// add starts reading sub's watch; its snapshot goes first.
func (f *feed) add(sub *liveSub, snapshot []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs = append(slices.Clip(f.subs), sub)
	if f.conn != nil {
		// Ahead of the queue changes pushed since sub's queue watch began.
		i := slices.IndexFunc(f.queued, func(q queuedMessage) bool { return q.sub == sub })
		if i < 0 {
			i = len(f.queued)
		}
		f.queued = slices.Insert(f.queued, i, queuedMessage{sub, snapshot})
		f.dirty = true // sent on release, or after the batch in flight
	}
}

// remove stops reading sub (its watches are stopped by the caller) and
// drops its messages still queued.
func (f *feed) remove(sub *liveSub) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs = slices.DeleteFunc(slices.Clone(f.subs), func(s *liveSub) bool { return s == sub })
	f.queued = slices.DeleteFunc(f.queued, func(q queuedMessage) bool { return q.sub == sub })
}

// queueSnapshot queues a snapshot that belongs to no running watch (an
// ended subscription's empty one).
func (f *feed) queueSnapshot(msg []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conn != nil {
		f.queued = append(f.queued, queuedMessage{nil, msg})
		f.dirty = true
	}
}

// push queues a message of sub's queue watch; it runs under the queue
// board's lock.
func (f *feed) push(sub *liveSub, msg []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conn != nil {
		f.queued = append(f.queued, queuedMessage{sub, msg})
		f.dirty = true
		f.armLocked()
	}
}

// wake: the board logged a change. It runs under the board's lock.
func (f *feed) wake() {
	if f.woken.Swap(true) {
		return // a read is due and will see this change
	}
	f.mu.Lock()
	f.dirty = true
	f.armLocked()
	f.mu.Unlock()
}

func (f *feed) armLocked() {
	if f.armed || f.inFlight || f.held || f.conn == nil || !f.dirty {
		return
	}
	f.armed = true
	// A feed reads at most as often as its last read took to reach the
	// connection's socket (from when it was due): when the machine is
	// saturated, reads space out and fold more, instead of queueing.
	delay := max(f.s.m.board.readDelay(), min(f.lastCycle, protocol.LiveMaxReadDelay))
	f.due = time.Now().Add(delay)
	if f.timer == nil {
		f.timer = time.AfterFunc(delay, f.flush)
	} else {
		f.timer.Reset(delay)
	}
}

// flush runs when the batch delay is over.
func (f *feed) flush() {
	f.mu.Lock()
	f.armed = false
	r := f.takeLocked()
	f.mu.Unlock()
	f.read(r)
}

// reading is a read the feed committed to: the batch in flight is its.
type reading struct {
	conn   Conn
	gen    uint64
	queued []queuedMessage
	subs   []*liveSub
}

// takeLocked starts a read when the connection can have a batch.
func (f *feed) takeLocked() *reading {
	if f.conn == nil || f.inFlight || f.held || !f.dirty {
		return nil
	}
	f.inFlight, f.dirty = true, false
	f.woken.Store(false) // changes logged from now on wake the feed again
	r := &reading{conn: f.conn, gen: f.gen, queued: f.queued, subs: f.subs}
	f.queued = nil
	return r
}

// read reads the queued messages and every watch into one batch for the
// connection; without the lock.
func (f *feed) read(r *reading) {
	if r == nil {
		return
	}
	// A batch under load holds thousands of changes: size it once.
	n := len(r.queued)
	for _, sub := range r.subs {
		if !sub.stale {
			n += sub.watch.pending()
		}
	}
	msgs := make([]Message, 0, n)
	for _, q := range r.queued {
		msgs = append(msgs, Message{Body: q.msg})
	}
	resync := false
	for _, sub := range r.subs {
		if sub.stale {
			continue
		}
		start := len(msgs)
		var folded int
		var ok bool
		if msgs, folded, ok = sub.watch.Messages(msgs, sub.head); !ok {
			msgs = msgs[:start]
			sub.stale, resync = true, true
			f.s.m.opts.Metrics.LiveRead(0, true)
			continue
		}
		f.s.m.opts.Metrics.LiveRead(folded, false)
	}
	if resync {
		// Changes were lost to this connection: its subscriptions start
		// again from snapshots. The session does it, on its own goroutine.
		f.s.post(func(s *Session) { s.resyncSubscriptions("the connection fell behind the change log") })
	}
	if len(msgs) == 0 || !r.conn.Send(msgs, func() { f.sent(r.gen) }) {
		f.sent(r.gen)
	}
}

// sent: the connection wrote (or dropped) a batch, or there was none. What
// changed meanwhile goes after the batch delay: under load, batches grow
// instead of writes.
func (f *feed) sent(gen uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if gen != f.gen {
		return
	}
	f.inFlight = false
	if !f.due.IsZero() {
		f.lastCycle = time.Since(f.due)
	}
	f.armLocked()
}
