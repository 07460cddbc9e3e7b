// Package session owns agent sessions: one goroutine per session applies the
// session's commands, switch events and timers one at a time, in order.
//
// Ownership and locking rules:
//   - Everything a Session holds about its channels, seq, history, replies and
//     current connection is owned by its goroutine (run). No other goroutine
//     reads or writes it; they talk to the session through two queues:
//     Submit (bounded, blocks the caller: backpressure for a connection's
//     reader) and post (unbounded notes for attach/detach, switch events,
//     timers and other sessions' notifications; never blocks, so one session
//     can never wait on another).
//   - Manager.mu guards only the registry maps (agent -> session, id ->
//     session); it is never held on the command path.
//   - directory.mu guards the broker-wide shared view (endpoint holders,
//     presence, real-time address book watchers); see directory.
//   - A Conn's Send never blocks: a connection whose queue is full closes
//     itself as a slow consumer and the session lives on without it.
//
// Because one goroutine handles a session's commands in arrival order and
// writes each reply before the events the command caused, replies come in
// command order and precede their secondary events.
package session
