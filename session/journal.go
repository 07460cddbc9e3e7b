package session

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ctibroker/ctibroker/metrics"
	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/store"
)

// journal is a session's record on its way to the store: it hands out seqs,
// holds the events and timeline entries an op produced, and commits them,
// with the session's snapshot, in one fenced store commit per op. Events are
// delivered only once committed: nothing a client sees can be lost by a
// crash. Owned by the session's goroutine.
type journal struct {
	store    store.Store
	sid, key string // session id, and its agent's (or supervisor's) store key
	node     string
	leaseTTL time.Duration
	timeout  time.Duration
	metrics  *metrics.Metrics
	log      func(level zapcore.Level, msg string, fields ...zap.Field)

	// topics are the bus topics the events are published on (none for a
	// supervisor's own events); envPrefix starts their bus envelope.
	topics    []string
	envPrefix []byte

	// seq is the last seq handed out; committed the last one stored.
	// Events in outbox (seq committed+1..seq) wait for the commit.
	seq, committed, version uint64
	outbox                  []store.Event
	outboxBuf               *[]store.Event // outbox's buffer, lent by outboxes while busy
	// scratch holds the last unsealed events of outbox, encoded (see
	// emit); lent by scratches while busy.
	scratch  *[]byte
	unsealed int
	timeline [][]byte // timeline entries not yet committed
	// force commits the snapshot even without events (supervisor
	// subscriptions changed, a new session).
	force bool
	// unsynced: a commit failed; the events wait for retrySync.
	unsynced bool
	// inDoubt: commits that failed without an answer and may still land
	// (see resolveInDoubt).
	inDoubt []inDoubtCommit
	// pushes: webhook records waiting for the commit, stored with it;
	// relay: those of the last commit, for the webhook relay (their outbox
	// ids are "<relayVersion>-<i>").
	pushes       [][]byte
	relay        [][]byte
	relayVersion uint64
}

// setTopics sets where events are published and the prefix of their bus
// envelope.
func (j *journal) setTopics(agent string, topics []string) {
	j.topics = topics
	a, _ := protocol.Marshal(agent)
	j.envPrefix = []byte(`{"agent":` + string(a) + `,"session":"` + j.sid + `","seq":`)
}

// emit queues an event for the next commit. The op's events are encoded
// one after the other into one scratch buffer, each inside its bus envelope
// (the event is a slice of it), and seal copies them into one buffer of
// their exact size when the op commits. That buffer is then all a command's
// events cost: the replay history keeps their slices (and, as they expire
// together, frees one block), the store publishes the envelopes as they lie
// (one per line, as store.BusMessage joins them) and the connection writes
// the events from it. An event whose data cannot be encoded is not emitted.
func (j *journal) emit(target, name string, data any) error {
	if j.scratch == nil {
		j.scratch = scratches.Get().(*[]byte)
	}
	buf := *j.scratch
	start, seq := len(buf), j.seq+1
	publish := len(j.topics) > 0
	if publish {
		buf = append(buf, j.envPrefix...)
		buf = strconv.AppendUint(buf, seq, 10)
		buf = append(buf, `,"event":`...)
	}
	event := len(buf)
	buf = append(buf, `{"messageType":"objectEvent","target":`...)
	buf = protocol.AppendString(buf, target)
	buf = append(buf, `,"name":`...)
	buf = protocol.AppendString(buf, name)
	buf = append(buf, `,"data":`...)
	buf, err := protocol.AppendJSON(buf, data)
	if err != nil {
		*j.scratch = buf[:start]
		return err
	}
	buf = append(buf, `,"seq":`...)
	buf = strconv.AppendUint(buf, seq, 10)
	buf = append(buf, `,"timestamp":`...)
	buf = strconv.AppendInt(buf, time.Now().UnixMilli(), 10)
	buf = append(buf, '}')
	e := store.Event{Seq: seq, Payload: buf[event:]}
	if publish {
		buf = append(buf, '}')
		e.Envelope = buf[start:]
		buf = append(buf, '\n')
	}
	*j.scratch = buf
	j.seq = seq
	if j.outboxBuf == nil {
		j.outboxBuf = outboxes.Get().(*[]store.Event)
		j.outbox = (*j.outboxBuf)[:0]
	}
	j.outbox = append(j.outbox, e)
	j.unsealed++
	return nil
}

// seal moves the events emitted since the last seal from the scratch
// buffer into one buffer of their exact size (see emit). Until then their
// slices may point into an array the scratch buffer has outgrown; only
// their lengths, and where each event lies in its envelope, are used here.
func (j *journal) seal() {
	if j.unsealed == 0 {
		return
	}
	buf := bytes.Clone(*j.scratch)
	off := 0
	for i := len(j.outbox) - j.unsealed; i < len(j.outbox); i++ {
		e := &j.outbox[i]
		p := len(e.Payload)
		if e.Envelope == nil {
			e.Payload = buf[off : off+p : off+p]
			off += p
			continue
		}
		n := len(e.Envelope) // the event, then the envelope's closing brace
		e.Envelope = buf[off : off+n]
		e.Payload = buf[off+n-1-p : off+n-1 : off+n-1] // capped: an append must not write into the envelope
		off += n + 1                                   // and the newline
	}
	*j.scratch = (*j.scratch)[:0]
	j.unsealed = 0
}

// outboxes and scratches lend event batches and encoding buffers to busy
// sessions; idle returns them, so thousands of idle sessions hold none, and
// a busy one does not grow fresh ones for every command.
var (
	outboxes  = sync.Pool{New: func() any { b := make([]store.Event, 0, 8); return &b }}
	scratches = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}
)

// idle gives the outbox's and the scratch's buffers back when nothing
// waits in them.
func (j *journal) idle() {
	if len(j.outbox) == 0 && j.outboxBuf != nil {
		if cap(j.outbox) <= 64 { // a burst's buffer is left to the collector
			*j.outboxBuf = j.outbox[:0]
			outboxes.Put(j.outboxBuf)
		}
		j.outbox, j.outboxBuf = nil, nil
	}
	if j.unsealed == 0 && j.scratch != nil {
		if cap(*j.scratch) <= 64<<10 {
			scratches.Put(j.scratch)
		}
		j.scratch = nil
	}
}

// drop forgets what waits: the session is handed over.
func (j *journal) drop() {
	j.outbox, j.outboxBuf, j.timeline, j.pushes, j.relay = nil, nil, nil, nil, nil
	j.scratch, j.unsealed = nil, 0
}

// takeRelay returns the last commit's webhook records and their version.
func (j *journal) takeRelay() ([][]byte, uint64) {
	r, v := j.relay, j.relayVersion
	j.relay = nil
	return r, v
}

// commit stores what waits (events, timeline entries, replies to remember,
// and the snapshot, built by snapshot only when the store keeps it) in one
// fenced commit. It returns the events now committed, to deliver in order.
// After a failure whose outcome is unknown the events wait, the commit is
// remembered as in doubt and a retry is the caller's: commit returns
// errUnsynced, without calling the store, until retry says otherwise.
// store.ErrNotOwner and store.ErrConflict mean another node owns the
// session now.
func (j *journal) commit(snapshot func() []byte, replies []store.Reply) ([]store.Event, error) {
	if len(j.outbox) == 0 && len(j.timeline) == 0 && len(replies) == 0 && len(j.pushes) == 0 && !j.force {
		return nil, nil
	}
	if j.unsynced {
		return nil, errUnsynced
	}
	return j.commitNow(snapshot, replies)
}

var errUnsynced = errors.New("session state not stored yet")

func (j *journal) commitNow(snapshot func() []byte, replies []store.Reply) ([]store.Event, error) {
	j.seal()
	c := store.Commit{SessionID: j.sid, AgentID: j.key, Node: j.node, Version: j.version,
		Events: j.outbox, Topics: j.topics, Timeline: j.timeline, Replies: replies, Outbox: j.pushes, LeaseTTL: j.leaseTTL}
	ctx := context.Background()
	if j.store.Durable() {
		// Only a remote store can time out, and leave a commit in doubt
		// that its id later recognises; the memory store answers at once.
		c.ID = strconv.FormatUint(rand.Uint64(), 36)
		c.Snapshot = snapshot()
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, j.timeout)
		defer cancel()
	}
	err := j.store.Commit(ctx, c)
	switch {
	case err == nil:
		j.metrics.EventsCommitted(len(j.outbox))
		j.version++
		j.force = false
		j.committed = j.seq
		j.timeline = j.timeline[:0]
		if len(j.pushes) > 0 {
			j.relay, j.relayVersion = j.pushes, j.version // the session takes it after every commit
			j.pushes = nil
		}
		j.inDoubt = nil // none of them can land now: the version moved on
		if j.unsynced {
			j.unsynced = false
			j.log(zap.InfoLevel, "session state stored again after a store outage")
		}
		return j.takeCommitted(), nil
	case errors.Is(err, store.ErrConflict) && len(j.inDoubt) > 0:
		// Maybe one of our own commits that timed out landed meanwhile.
		landed, rerr := j.resolveInDoubt()
		if rerr != nil {
			return nil, j.failed(c, rerr)
		}
		if !landed {
			return nil, err
		}
		ready := j.takeCommitted()
		rest, err := j.commitNow(snapshot, replies)
		return append(ready, rest...), err
	case errors.Is(err, store.ErrNotOwner), errors.Is(err, store.ErrConflict):
		return nil, err
	default:
		return nil, j.failed(c, err)
	}
}

// takeCommitted removes the committed events from the outbox.
func (j *journal) takeCommitted() []store.Event {
	n := 0
	for n < len(j.outbox) && j.outbox[n].Seq <= j.committed {
		n++
	}
	ready := slices.Clone(j.outbox[:n])
	clear(j.outbox[:n])
	j.outbox = append(j.outbox[:0], j.outbox[n:]...)
	return ready
}

// inDoubtCommit is a commit whose outcome is unknown (the store did not
// answer in time): it may still land, so it is remembered until a read-back
// or a later commit settles it.
type inDoubtCommit struct {
	id       string
	lastSeq  uint64 // the last event it carried
	timeline int    // how many timeline entries it carried
}

// failed holds the commit's events until the store is back, and remembers
// it as in doubt.
func (j *journal) failed(c store.Commit, err error) error {
	if !j.unsynced {
		j.log(zap.ErrorLevel, "could not store the session state; events held until the store is back", zap.Error(err))
	}
	if len(j.inDoubt) < protocol.MaxInDoubt {
		j.inDoubt = append(j.inDoubt, inDoubtCommit{id: c.ID, lastSeq: j.seq, timeline: len(c.Timeline)})
	}
	j.unsynced = true
	return err
}

// resolveInDoubt reads the record back after a version conflict: when the
// commit that moved it is one of ours whose outcome was unknown, it landed.
// Its events are committed (stored, and published); what came after it is
// committed again by the caller. It reports whether one had landed.
func (j *journal) resolveInDoubt() (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), j.timeout)
	rec, ok, err := j.store.Load(ctx, j.sid)
	cancel()
	if err != nil || !ok {
		return false, err
	}
	i := slices.IndexFunc(j.inDoubt, func(d inDoubtCommit) bool { return d.id == rec.LastCommit })
	if i < 0 || rec.Version != j.version+1 {
		return false, nil
	}
	d := j.inDoubt[i]
	j.log(zap.InfoLevel, "a commit that timed out had landed; its events are delivered", zap.Uint64("seq", d.lastSeq))
	j.version, j.committed, j.inDoubt = rec.Version, d.lastSeq, nil
	j.timeline = slices.Delete(j.timeline, 0, min(d.timeline, len(j.timeline)))
	n := 0
	for n < len(j.outbox) && j.outbox[n].Seq <= d.lastSeq {
		n++
	}
	j.metrics.EventsCommitted(n)
	return true, nil
}

// retry commits what waited during a store outage; it returns the events
// now committed.
func (j *journal) retry(snapshot func() []byte) ([]store.Event, error) {
	if !j.unsynced {
		return nil, nil
	}
	j.force = true
	return j.commitNow(snapshot, nil)
}
