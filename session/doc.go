// Package session owns agent sessions: a session applies its commands, switch
// events and timers one at a time, in order.
//
// A Session is made of parts with one job each:
//   - mailbox (mailbox.go): queues ops (client commands, and notes: attach,
//     detach, switch events, timers, notifications from other sessions)
//     and runs them in order, while ops are queued, on the goroutine of the
//     connection that submitted a command (it waits for the reply anyway)
//     or on one of their own;
//   - journal (journal.go): hands out seqs, holds what an op produced
//     (events, timeline entries) and stores it in one fenced commit per op;
//   - lifecycle (lifecycle.go): starts the session (from the store or the
//     switch), attaches and detaches connections, the grace period, the end;
//   - dispatch (commands.go): the command table, and each command's
//     handler; the agent's channels (channels.go), switch events
//     (switch.go) and supervisors' watches (supervisor.go).
//
// Ownership (the lock order is in docs/architecture.md):
//   - mailbox.mu guards the queue. Everything else a Session holds (its
//     journal, channels, connection, timers, subscriptions) is owned by
//     the goroutine running its ops: at most one runs per session.
//   - Putting an op never blocks, so a session never waits on another:
//     Submit (client commands: a connection has one in flight, waiting for
//     its reply before it reads the next) and post (notes).
//   - Timers (grace, after-call work, address book refresh, store retry)
//     are AfterFuncs that post a note; a note that may be stale checks a
//     generation.
//   - Manager.mu guards only the registry maps (agent -> session, id ->
//     session); it is never held on the command path.
//   - Manager.leaseMu orders the node's lease renewal (one store call for
//     all its sessions every LeaseTTL/3) before a session's release of its
//     lease (Session.leaseGone), so a released lease is never re-taken.
//   - directory.mu guards the broker-wide shared view (endpoint holders,
//     presence, real-time address book watchers); see directory.
//   - board.mu guards the supervisors' board and appends to its change
//     log; watches read the log without it, and are only woken under it.
//   - A supervisor session's live view goes through its feed (feed.go),
//     not its mailbox: the feed reads the session's watches and hands the
//     connection one batch at a time.
//   - A Conn's Send never blocks: a connection whose queue is full closes
//     itself as a slow consumer and the session lives on without it.
//
// Because a session's ops run one at a time in arrival order, and each
// command's reply is sent before the events the command caused, replies
// come in command order and precede their secondary events.
package session
