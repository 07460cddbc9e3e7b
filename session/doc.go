// Package session owns agent sessions: a session applies its commands, switch
// events and timers one at a time, in order.
//
// Ownership and locking rules:
//   - Everything a Session holds about its channels, seq, history, replies and
//     current connection is owned by whichever goroutine runs its ops (run).
//     At most one runs per session, and only while ops are queued: an idle
//     session has no goroutine. The goroutines come from the manager's pool
//     (internal/workers), which keeps them, and their grown stacks, briefly.
//     The event batch buffer (outbox) is lent by a pool the same way: the
//     goroutine returns it, under Session.mu, as the session goes idle.
//     Other goroutines talk to a session through
//     its mailbox (Session.mu): Submit (client commands, bounded by the inbox
//     size; it blocks the caller, which is backpressure for a connection's
//     reader) and post (notes for attach/detach, switch events, timers and
//     other sessions' notifications; never blocks, so one session can never
//     wait on another). Both start the session's goroutine when none runs.
//   - Timers (grace, after-call work, address book refresh) are AfterFuncs
//     that post a note; a note that may be stale checks a generation.
//   - Manager.mu guards only the registry maps (agent -> session, id ->
//     session); it is never held on the command path.
//   - Manager.leaseMu orders the node's lease renewal (one store call for
//     all its sessions every LeaseTTL/3) before a session's release of its
//     lease (Session.leaseGone), so a released lease is never re-taken.
//   - directory.mu guards the broker-wide shared view (endpoint holders,
//     presence, real-time address book watchers); see directory.
//   - A Conn's Send never blocks: a connection whose queue is full closes
//     itself as a slow consumer and the session lives on without it.
//
// Because a session's ops run one at a time in arrival order, and each
// command's reply is written before the events the command caused, replies
// come in command order and precede their secondary events.
package session
