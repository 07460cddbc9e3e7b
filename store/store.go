// Package store keeps what must survive a broker node: each live session's
// state snapshot, its bounded event stream (for since= replay on any node),
// its timeline, recent replies by requestId, the agent -> session index, and
// the lease that makes exactly one node the session's owner.
//
// Commit is the only write of session state. It is atomic and fenced: it
// applies only if no other node holds the session's lease and the record is
// at the expected version, so two nodes can never both apply a change, and it
// publishes the committed events on their bus topics in the same step.
//
// A lease that expired while nobody else took it (a store outage longer than
// the lease) is re-taken by Renew and Commit: the version check still fences
// any change another node made in between.
package store

import (
	"context"
	"errors"
	"time"
)

// Errors of Commit and the lease operations.
var (
	// ErrNotOwner: another node holds the session's lease.
	ErrNotOwner = errors.New("store: session is owned by another node")
	// ErrConflict: the record is not at the expected version.
	ErrConflict = errors.New("store: version conflict")
)

// Event is one committed event: its session seq, the encoded event, and the
// envelope published on the bus.
type Event struct {
	Seq      uint64
	Payload  []byte
	Envelope []byte
}

// BusMessage is what a commit publishes: its events' envelopes, one per
// line (an envelope is JSON on one line). One message per commit rather
// than per event: publishing is a large share of a store's work. Envelopes
// that already lie that way in one buffer, as a session's journal writes an
// op's events, are published from it as they are.
func BusMessage(events []Event) []byte {
	if msg, ok := adjacent(events); ok {
		return msg
	}
	n := 0
	for _, e := range events {
		n += len(e.Envelope) + 1
	}
	msg := make([]byte, 0, n)
	for i, e := range events {
		if i > 0 {
			msg = append(msg, '\n')
		}
		msg = append(msg, e.Envelope...)
	}
	return msg
}

// adjacent returns the events' envelopes as one slice when each follows
// the one before it in the same array, after a newline.
func adjacent(events []Event) ([]byte, bool) {
	if len(events) == 0 {
		return nil, false
	}
	msg := events[0].Envelope
	for _, e := range events[1:] {
		n := len(msg)
		if len(e.Envelope) == 0 || cap(msg) < n+1+len(e.Envelope) {
			return nil, false
		}
		joined := msg[:n+1+len(e.Envelope)]
		if joined[n] != '\n' || &joined[n+1] != &e.Envelope[0] {
			return nil, false
		}
		msg = joined
	}
	return msg, true
}

// OutboxEntry is a webhook record kept with its session.
type OutboxEntry struct {
	ID   string
	Data []byte
}

// Reply is a reply remembered under its requestId.
type Reply struct {
	RequestID string
	Msg       []byte
}

// Commit is one atomic change of a session.
type Commit struct {
	// ID identifies the commit; the record keeps the last one's (see
	// Record.LastCommit).
	ID        string
	SessionID string
	AgentID   string
	Node      string
	// Version is the version the record is expected to be at; the commit
	// moves it to Version+1.
	Version uint64
	// Snapshot replaces the state snapshot (nil keeps the old one).
	Snapshot []byte
	Events   []Event
	// Topics are the bus topics the events are published on, all of them
	// in one message per topic (see BusMessage).
	Topics   []string
	Timeline [][]byte
	Replies  []Reply
	// Outbox: webhook records of the commit, kept with the session (its
	// ids "<Version+1>-<i>") until the relay acknowledges them (AckOutbox):
	// a node that dies between the commit and the relay loses none.
	Outbox [][]byte
	// LeaseTTL re-takes the lease for Node when it expired and nobody else
	// holds it (after a store outage longer than the lease, say).
	LeaseTTL time.Duration
}

// SessionRef names a session of an agent and when it was created.
type SessionRef struct {
	SessionID string
	Created   time.Time
}

// Record is a session as stored.
type Record struct {
	SessionID string
	AgentID   string
	Version   uint64
	// LastCommit is the ID of the commit that moved the record to Version:
	// a writer whose commit timed out (its outcome unknown) reads it back to
	// learn whether the commit landed.
	LastCommit string
	Snapshot   []byte
}

// Limits bound what the store keeps.
type Limits struct {
	// Events kept per session stream.
	Events int
	// EventTTL: the in-process store drops events older than this when
	// ExpireEvents runs (0: never). A resume can only need events from the
	// last grace period; older ones cost memory at every idle session.
	// Redis bounds its streams by Events and the session TTL instead.
	EventTTL time.Duration
	// Timeline entries kept per session.
	Timeline int
	// TTL of a session's keys, refreshed by the owner's lease renewals:
	// a session whose owner died and that nobody resumes disappears after it.
	TTL time.Duration
	// ReplyTTL is how long replies are remembered by requestId.
	ReplyTTL time.Duration
	// History is how long timelines are kept after their session ended,
	// for the agents' status history and reports.
	History time.Duration
	// HistorySessions bounds the sessions remembered per agent.
	HistorySessions int
}

// Lease names a session whose lease a node holds.
type Lease struct {
	SessionID string
	AgentID   string
}

// Store is the durable session store.
type Store interface {
	// Durable reports whether what is stored survives this process. When
	// false, callers may skip building snapshots.
	Durable() bool
	// Claim makes sid the agent's live session unless one is already
	// registered; it returns the live session id either way.
	Claim(ctx context.Context, agentID, sid string) (string, error)
	// SessionOf returns the agent's live session id, "" when none.
	SessionOf(ctx context.Context, agentID string) (string, error)
	// Acquire takes the session's lease for node unless another live node
	// holds it; it returns the holder. A holder whose liveness (Heartbeat)
	// lapsed is dead or cut off: its lease is taken at once, without waiting
	// for it to expire. Commits stay fenced by lease and version, so a node
	// that was only cut off cannot apply anything afterwards.
	Acquire(ctx context.Context, sid, agentID, node string, ttl time.Duration) (owner string, err error)
	// Heartbeat says node is alive for ttl.
	Heartbeat(ctx context.Context, node string, ttl time.Duration) error
	// Renew extends node's leases on sessions, in one round trip where the
	// store allows (a node renews all its sessions together), re-taking a
	// lease that expired and is free. It returns the sessions whose lease
	// another node holds now.
	Renew(ctx context.Context, node string, ttl time.Duration, leases []Lease) (lost []string, err error)
	// Owner returns the node holding the session's lease, "" when none.
	Owner(ctx context.Context, sid string) (string, error)
	// Release gives the lease up if node holds it.
	Release(ctx context.Context, sid, node string) error
	// Load returns the session's record; false when there is none.
	Load(ctx context.Context, sid string) (Record, bool, error)
	// Commit applies c atomically (see the package doc).
	Commit(ctx context.Context, c Commit) error
	// EventsSince returns the events with seq > since, up to last, in order;
	// false when the stream no longer holds all of them.
	EventsSince(ctx context.Context, sid string, since, last uint64) ([][]byte, bool, error)
	// LastSeq returns the seq of the session's last stored event, 0 when none.
	LastSeq(ctx context.Context, sid string) (uint64, error)
	// LiveSessions returns the record of every live session.
	LiveSessions(ctx context.Context) ([]Record, error)
	// Unowned returns the live sessions whose lease no node holds: their
	// node died (or was cut off longer than a lease) and their agent did
	// not come back to another one.
	Unowned(ctx context.Context) ([]string, error)
	// AgentSessions returns the agent's sessions within the history
	// retention (live or ended), oldest first, with their creation times.
	AgentSessions(ctx context.Context, agentID string) ([]SessionRef, error)
	// HistoryAgents returns the key of every agent (and supervisor) with
	// sessions in the history.
	HistoryAgents(ctx context.Context) ([]string, error)
	// Timeline returns the session's timeline entries, oldest first; kept
	// for Limits.History after the session ended.
	Timeline(ctx context.Context, sid string) ([][]byte, error)
	// Reply returns a remembered reply.
	Reply(ctx context.Context, sid, requestID string) ([]byte, bool, error)
	// End deletes the session and its agent index entry.
	End(ctx context.Context, agentID, sid string) error
	// Outbox returns the session's webhook records not acknowledged yet,
	// in order (a durable store's; others keep none).
	Outbox(ctx context.Context, sid string) ([]OutboxEntry, error)
	// AckOutbox drops the session's webhook records up to and including id.
	AckOutbox(ctx context.Context, sid, id string) error
	// Ping checks the store is reachable.
	Ping(ctx context.Context) error
	Close() error
}
