package session

import "sync"

// op is one unit of work for a session: a client command, or a note (a
// function run on the session: attach, detach, a switch event, a timer, a
// notification from another session).
type op struct {
	note func(*Session)
	cmd  command
}

type command struct {
	conn  Conn
	frame Frame
}

// mailbox queues a session's ops. They run one at a time, in order, on a
// goroutine that runs them only while ops are queued: an idle session has
// none. Putting an op never blocks, so a session never waits on another.
// mu guards everything.
type mailbox struct {
	mu      sync.Mutex
	queue   []op
	running bool // a goroutine runs the queue
	closed  bool // the session ended: no more ops
}

// put queues o. ok is false when the session has ended; run is true when no
// goroutine runs the queue: the caller must run it (see Session.run).
func (mb *mailbox) put(o op) (run, ok bool) {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if mb.closed {
		return false, false
	}
	mb.queue = append(mb.queue, o)
	if mb.running {
		return false, true
	}
	mb.running = true
	return true, true
}

// next returns the queued ops. When there are none, it calls idle (still
// the queue's runner) and then stops running: the caller returns.
func (mb *mailbox) next(idle func()) []op {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	ops := mb.queue
	mb.queue = nil
	if len(ops) == 0 {
		idle()
		mb.running = false
	}
	return ops
}

// close refuses further ops and returns those still queued.
func (mb *mailbox) close() []op {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	mb.closed = true
	dropped := mb.queue
	mb.queue = nil
	return dropped
}
