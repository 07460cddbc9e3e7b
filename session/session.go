package session

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/time/rate"

	"github.com/ctibroker/ctibroker/channel"
	"github.com/ctibroker/ctibroker/history"
	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/store"
)

// Frame is one client message as read off its connection. The session
// decodes it: decoding is work like the rest of the command, done on the
// session's goroutine.
type Frame struct {
	// In is the decoded frame: a request, or the failure that answers it.
	In       protocol.Inbound
	Received time.Time
	// Done is called once the command has been answered: its reply written
	// or dropped. The connection reads its next frame then.
	Done func()
}

// NewFrame decodes a frame the connection received. Connections call it on
// their reader goroutine, whose stack grows once for the JSON decoder and
// shrinks again when idle, rather than on the session's short-lived one,
// whose stack would grow for every command (7% of the CPU at full load).
// The frame keeps nothing of data, which the connection reuses.
func NewFrame(data []byte, binary bool, done func()) Frame {
	f := Frame{Received: time.Now(), Done: done}
	if binary {
		f.In = protocol.RejectFrame(data, "binary frames are not accepted: send JSON text frames")
	} else {
		f.In = protocol.DecodeRequest(data)
	}
	return f
}

func (f *Frame) answered() {
	if f.Done != nil {
		f.Done()
	}
}

// Session is one agent's (or supervisor's) session. Its parts have one job
// each: the mailbox runs its ops in order, the journal stores what they
// produced, the lifecycle (lifecycle.go) attaches connections and ends the
// session, dispatch (commands.go) runs commands. Everything but the mailbox
// is owned by the goroutine running the ops; see the package doc.
type Session struct {
	m     *Manager
	id    string
	key   string // registry and store key (see Identity.key)
	ident Identity
	teams []string

	mb   mailbox
	done chan struct{} // closed when the session has ended
	err  error         // why the session could not start; set before done closes

	// leaseGone: the session stopped renewing its lease (Manager.leaseMu).
	leaseGone bool
	abDirty   atomic.Bool

	// Owned by the goroutine running the ops.
	journal journal
	// conns are the attached connections, oldest first: several only under
	// session.multiconnect share. conn is the newest (nil: none), which
	// the live view (feed) follows.
	conns []attachment
	conn  Conn
	// only, during an op, is the one connection its messages go to (an
	// attach's replay and initial events under share); nil: all.
	only Conn
	// linkDown: the session told its desktops the CTI link is down (and
	// registers its agent again when it is back).
	linkDown bool
	// displayName: the agent's name, from the switch (adapters.Directory).
	displayName string
	// pushedIx: each live interaction as last pushed to webhooks (to tell
	// parties added or removed).
	pushedIx map[string]*protocol.Interaction
	channels []*channel.Channel
	groups   []string
	created  int64 // Unix ms, as the snapshot and the timeline keep it
	// wire collects the current op's messages for the connection, sent as
	// one batch when it ends; reply is the command's, if the op is one.
	wire []Message
	// wireTo, when set, names each wire message's one connection (nil:
	// all); it stays nil while every message goes to every connection.
	wireTo    []Conn
	replyDone func()
	replyConn Conn // the connection replyDone waits for
	reply     *pendingReply
	record    *store.Record
	restored  time.Time
	// status and statusSince: the aggregate status and when it started.
	status      string
	statusSince time.Time
	subs        map[string]*subscription // supervisor subscriptions by id
	feed        *feed                    // their live view; made by the first watch
	feedHeld    bool                     // the feed waits for this op's messages
	replies     replies
	// limiter bounds the session's commands per second, whatever the
	// connection: reconnecting does not refill it. Nil: no limit.
	limiter *rate.Limiter
	// connects bounds how fast the agent's connections to this node come
	// (a desktop reconnecting in a loop, two desktops taking the session
	// over from each other); safe for the HTTP handlers' goroutines.
	// Nil: no limit.
	connects *rate.Limiter
	catalog  *channel.Catalog
	ab       *addressBookState // made by the first address book request
	// grace runs while no connection is attached; graceGen tells a stale
	// expiry (the timer fired as a connection attached) from the current one.
	grace     *time.Timer
	graceGen  uint64
	acwGen    map[string]uint64
	acwTimers map[string]*time.Timer
	// ixs are the interactions in progress or awaiting wrap-up, by id
	// (interactions.go); dispositions the wrap-up codes read from the
	// switch, once.
	ixs          map[string]*channel.Interaction
	dispositions []protocol.Disposition
	today        protocol.CallCounters // interaction counters of the day (UTC)
	changedBy    *protocol.ChangedBy   // during a supervisor's action: who
	// setBy: per channel id, who set its current state when it was not
	// the agent (shown in state.updated and supervisors' views).
	setBy   map[string]*protocol.ChangedBy
	endWith *protocol.CloseCode // end the session after this op's messages

	stateDirty   bool
	presenceSent bool
	ended        bool
	// handedOver: another node owns the session now (or this node is
	// shutting down): keep it in the store.
	handedOver bool
}

// addressBookState is what a session keeps of the address book it sent;
// most agents never ask for one.
type addressBookState struct {
	book     *protocol.AddressBooks
	realtime bool // refreshed when presence changes
	last     []byte
	lastAt   time.Time
}

func newSession(m *Manager, id string, ident Identity) *Session {
	s := &Session{
		m: m, id: id, key: ident.key(), ident: ident, teams: ident.Teams, created: time.Now().UnixMilli(),
		done:    make(chan struct{}),
		replies: newReplies(m.opts.RequestIDTTL, m.opts.RequestIDLimit),
	}
	s.journal = journal{store: m.store, sid: id, key: s.key, node: m.opts.Node, leaseTTL: m.opts.LeaseTTL,
		timeout: m.opts.StoreTimeout, metrics: m.opts.Metrics, log: s.logf}
	if m.opts.CommandRate > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(m.opts.CommandRate), max(m.opts.CommandBurst, 1))
	}
	if m.opts.ConnectRate > 0 {
		s.connects = rate.NewLimiter(rate.Limit(m.opts.ConnectRate), max(m.opts.ConnectBurst, 1))
	}
	s.setTopics()
	return s
}

// setTopics sets the bus topics of the session's events: the agent's
// (its event streams) and everyone's (the board: supervisors filter by
// team there). A supervisor's events are its own: not published.
func (s *Session) setTopics() {
	var topics []string
	if !s.ident.Supervisor() {
		topics = []string{AgentTopic(s.ident.AgentID), AllTopic}
	}
	s.journal.setTopics(s.ident.AgentID, topics)
}

// logf writes a log line with the session's fields. It costs nothing when
// the level is off (zap's Check): a logger kept per session would cost
// every idle session its fields' buffer.
func (s *Session) logf(level zapcore.Level, msg string, fields ...zap.Field) {
	if ce := s.m.log.Check(level, msg); ce != nil {
		ce.Write(append(fields, zap.String("agent", s.ident.AgentID), zap.String("session", s.id))...)
	}
}

// ID returns the session id.
func (s *Session) ID() string { return s.id }

// AgentID returns the agent owning the session.
func (s *Session) AgentID() string { return s.ident.AgentID }

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Submit queues a client command. A connection has one command in flight
// (it waits for f.Done before it reads the next), so the queue holds at
// most one command per connection. When no goroutine runs the session's
// ops, Submit runs them (its command and whatever is queued meanwhile)
// before it returns.
func (s *Session) Submit(conn Conn, f Frame) error {
	run, ok := s.mb.put(op{cmd: command{conn, f}})
	if !ok {
		return ErrSessionEnded
	}
	if run {
		// The connection's reader runs the ops itself: it waits for the
		// reply anyway, and a goroutine of their own would grow a fresh
		// stack for every command (13% of the CPU at full load).
		s.run()
	}
	return nil
}

// Detach tells the session that conn is gone.
func (s *Session) Detach(conn Conn) {
	s.post(func(s *Session) { s.detach(conn) })
}

// post queues a note for the session. It never blocks (the note runs on a
// goroutine of its own when none runs the session) and returns false when
// the session has ended.
func (s *Session) post(f func(*Session)) bool {
	run, ok := s.mb.put(op{note: f})
	if run {
		go s.run()
	}
	return ok
}

// run handles the queued ops, in order, until the queue is empty or the
// session ends.
func (s *Session) run() {
	for {
		ops := s.mb.next(s.journal.idle)
		if len(ops) == 0 {
			return
		}
		for i := range ops {
			if s.ended {
				dropOps(ops[i:]) // their connections are closing
				break
			}
			s.runOp(&ops[i])
		}
		if s.ended {
			s.cleanup()
			return
		}
	}
}

// runOp runs one op and settles it: what it changed is committed once, then
// sent.
func (s *Session) runOp(o *op) {
	if o.note != nil {
		s.safely("note", func() { o.note(s) })
	} else {
		s.handleCommand(o.cmd)
	}
	s.settle()
	s.only = nil
}

// dropOps answers the commands among ops that will not run.
func dropOps(ops []op) {
	for _, o := range ops {
		o.cmd.frame.answered()
	}
}

// pendingReply is the reply of the command being handled: sent once what
// the command changed is stored (or replaced by UNAVAILABLE if it could not
// be), and remembered under its requestId.
type pendingReply struct {
	in       protocol.Inbound
	msg      []byte
	remember bool
	result   string // success, or the failure code: the metric's label
	received time.Time
	done     func() // the frame's Done, or nil
	conn     Conn   // the sender: the reply goes to it alone
}

// settle ends an op: one commit of what it changed, then its messages to
// the connection in order (the reply, then the events), then the end of the
// session if the op asked for it.
func (s *Session) settle() {
	if s.ended && s.handedOver {
		s.finishReply(nil)
		return
	}
	s.stateUpdated()
	s.takeIntervals()
	var reps []store.Reply
	if r := s.reply; r != nil && r.remember {
		reps = []store.Reply{{RequestID: r.in.Request.RequestID, Msg: r.msg}}
	}
	ready, err := s.journal.commit(s.snapshot, reps)
	if errors.Is(err, store.ErrNotOwner) || errors.Is(err, store.ErrConflict) {
		s.handOver(err.Error())
		s.finishReply(nil)
		return
	}
	if err != nil && !errors.Is(err, errUnsynced) {
		time.AfterFunc(s.m.opts.HealthInterval, func() { s.post((*Session).retrySync) })
	}
	if err == nil && s.m.opts.Pusher != nil {
		s.flushPushes()
	}
	if s.conn != nil && s.wire == nil {
		s.wire = make([]Message, 0, len(ready)+1) // the reply and the events
	}
	s.finishReply(err)
	for _, e := range ready {
		s.deliver(e.Payload)
	}
	s.sendWire()
	if s.feedHeld {
		// The live view goes after this op's messages (a subscribe's reply).
		s.feedHeld = false
		s.feed.release()
	}
	if s.endWith != nil && !s.journal.unsynced && !s.ended {
		s.finish(*s.endWith, "session ended")
	}
}

// finishReply sends the pending reply, or UNAVAILABLE when its command's
// changes could not be stored (err), and records the command's metrics.
func (s *Session) finishReply(err error) {
	r := s.reply
	if r == nil {
		return
	}
	s.reply = nil
	result, msg := r.result, r.msg
	switch {
	case s.handedOver:
		if r.done != nil {
			r.done()
		}
		return
	case err != nil:
		result = string(protocol.CodeUnavailable)
		msg, _ = protocol.Marshal(protocol.FailureReply(r.in, protocol.Failf(protocol.CodeUnavailable,
			"the change could not be stored (%v); its events follow once the store is back", err)))
	case r.remember:
		s.replies.put(r.in.Request.RequestID, r.msg, time.Now())
	}
	s.deliverTo(r.conn, msg)
	s.replyConn = r.conn
	s.m.opts.Metrics.CommandDone(metricCommand(r.in.Request.Command), result, time.Since(r.received).Seconds())
	// The connection reads its next frame once this batch is written.
	s.replyDone = r.done
}

// retrySync commits the events held during a store outage and delivers them.
func (s *Session) retrySync() {
	if !s.journal.unsynced || s.ended {
		return
	}
	s.takeIntervals()
	ready, err := s.journal.retry(s.snapshot)
	switch {
	case errors.Is(err, store.ErrNotOwner) || errors.Is(err, store.ErrConflict):
		s.handOver(err.Error())
		return
	case err != nil:
		time.AfterFunc(s.m.opts.HealthInterval, func() { s.post((*Session).retrySync) })
	case s.m.opts.Pusher != nil:
		s.flushPushes()
	}
	for _, e := range ready {
		s.deliver(e.Payload)
	}
}

func (s *Session) handleCommand(c command) {
	if !s.attached(c.conn) {
		c.frame.answered() // from a connection that was taken over or closed
		return
	}
	in := c.frame.In
	if in.Failure == nil && s.limiter != nil && !s.limiter.AllowN(c.frame.Received, 1) {
		in.Failure = protocol.Failf(protocol.CodeRateLimited, "more than the allowed commands per second; slow down")
	}
	now := time.Now()
	id := in.Request.RequestID
	if in.Failure == nil && id != "" {
		if msg, ok := s.rememberedReply(id, now); ok {
			s.deliverTo(c.conn, msg)
			s.replyDone, s.replyConn = c.frame.Done, c.conn
			return
		}
	}
	reply := s.execute(in)
	msg, err := protocol.Marshal(reply)
	if err != nil {
		s.logf(zap.ErrorLevel, "cannot encode reply", zap.Error(err))
		msg, _ = protocol.Marshal(protocol.FailureReply(in, protocol.Failf(protocol.CodeInternal, "reply could not be encoded")))
	}
	result := protocol.ResultSuccess
	if reply.Failure != nil {
		result = string(reply.Failure.Code)
	}
	cmd := commandsByName[in.Request.Command]
	remember := in.Failure == nil && id != "" && cmd != nil && cmd.Cacheable && (reply.Failure == nil || !reply.Failure.Code.Transient())
	s.reply = &pendingReply{in: in, msg: msg, remember: remember, result: result, received: c.frame.Received, done: c.frame.Done, conn: c.conn}
}

// rememberedReply finds the first reply to a requestId: in this node's
// cache, or, for a session this node took over recently, in the store.
func (s *Session) rememberedReply(id string, now time.Time) ([]byte, bool) {
	if msg, ok := s.replies.get(id, now); ok {
		return msg, true
	}
	if s.restored.IsZero() || now.Sub(s.restored) > s.m.opts.RequestIDTTL {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.m.opts.StoreTimeout)
	defer cancel()
	msg, ok, err := s.m.store.Reply(ctx, s.id, id)
	if err != nil || !ok {
		return nil, false
	}
	s.replies.put(id, msg, now)
	return msg, true
}

// deliver queues an encoded message for the connections (s.only's, during
// an op that has one); the op's messages leave together in sendWire.
func (s *Session) deliver(msg []byte) { s.deliverTo(s.only, msg) }

// deliverTo queues an encoded message for one connection (nil: all).
func (s *Session) deliverTo(c Conn, msg []byte) {
	if s.conn == nil {
		return
	}
	if c != nil && len(s.conns) > 1 && s.wireTo == nil {
		s.wireTo = make([]Conn, len(s.wire), cap(s.wire))
	}
	if s.wireTo != nil {
		s.wireTo = append(s.wireTo, c)
	}
	s.wire = append(s.wire, Message{Body: msg})
}

// sendWire hands the op's messages to the connections, a batch each; the
// command's Done follows the sender's batch.
func (s *Session) sendWire() {
	msgs, to, done, sender := s.wire, s.wireTo, s.replyDone, s.replyConn
	s.wire, s.wireTo, s.replyDone, s.replyConn, s.only = nil, nil, nil, nil, nil
	if len(msgs) == 0 || s.conn == nil {
		if done != nil {
			done()
		}
		return
	}
	var slow []Conn
	for i, a := range s.conns {
		batch := msgs
		if to != nil {
			batch = make([]Message, 0, len(msgs))
			for j, m := range msgs {
				if to[j] == nil || to[j] == a.conn {
					batch = append(batch, m)
				}
			}
		}
		var d func()
		if done != nil && (a.conn == sender || (sender == nil && i == 0)) {
			d, done = done, nil
		}
		if len(batch) == 0 {
			if d != nil {
				d()
			}
			continue
		}
		if !a.conn.Send(batch, d) {
			slow = append(slow, a.conn)
		}
	}
	if done != nil {
		done() // its connection is gone
	}
	for _, c := range slow {
		s.logf(zap.WarnLevel, "slow consumer: connection closed, session kept", zap.String("remote", c.RemoteAddr()))
		s.detach(c)
	}
	if len(s.wire) > 0 {
		s.sendWire() // the others hear that it left
	}
}

// emit queues an event behind the current op's reply; it is delivered once
// committed.
func (s *Session) emit(target, name string, data any) {
	if err := s.journal.emit(target, name, data); err != nil {
		s.logf(zap.ErrorLevel, "cannot encode event data", zap.String("event", name), zap.Error(err))
		return
	}
	if s.m.opts.Pusher != nil { // webhooks configured: only then is the data looked at again
		if ev, ok := data.(protocol.InteractionEvent); ok {
			s.pushInteraction(name, ev)
		}
	}
}

// stateUpdated emits state.updated once after an op's channel changes.
func (s *Session) stateUpdated() {
	if !s.stateDirty {
		return
	}
	s.stateDirty = false
	st := s.state()
	if st.Status != s.status {
		s.status, s.statusSince = st.Status, time.Now()
	}
	s.emit(s.id, protocol.EvStateUpdated, st)
	s.publishPresence(st)
}

func (s *Session) publishPresence(st protocol.StateUpdated) {
	if s.statusSince.IsZero() {
		s.status, s.statusSince = st.Status, time.Now()
	}
	s.presenceSent = true
	s.m.dir.publish(Presence{AgentID: s.ident.AgentID, DisplayName: s.displayName, SessionID: s.id, Teams: s.teams, Status: st.Status,
		StatusSince: s.statusSince, Channels: st.Channels, Today: st.Today, Seq: s.journal.seq})
}

func (s *Session) state() protocol.StateUpdated {
	chans := make([]protocol.ChannelState, len(s.channels))
	for i, c := range s.channels {
		chans[i] = c.Snapshot()
		chans[i].ChangedBy = s.setBy[c.ID()]
		if len(s.ixs) == 0 {
			continue
		}
		for _, ix := range s.channelInteractions(c) {
			if ix.Live() {
				info := ix.Info()
				chans[i].Interactions = append(chans[i].Interactions, protocol.InteractionSummary{ID: info.ID,
					Direction: info.Direction, State: info.State, Queue: info.Queue, StateSince: info.StateSince})
			}
		}
	}
	st := protocol.StateUpdated{AgentID: s.ident.AgentID, DisplayName: s.displayName, Status: protocol.AggregateStatus(chans), Channels: chans}
	if s.today.Day != "" && s.today.Day == time.Now().UTC().Format(time.DateOnly) {
		today := s.today
		st.Today = &today
	}
	return st
}

// entry encodes a timeline entry of this session.
func (s *Session) entry(e history.Entry) []byte {
	e.Agent, e.Session = s.ident.AgentID, s.id
	b, _ := json.Marshal(e)
	return b
}

// takeIntervals moves the channels' new timeline intervals to the journal.
func (s *Session) takeIntervals() {
	for _, c := range s.channels {
		for _, iv := range c.TakeNew() {
			s.journal.timeline = append(s.journal.timeline, s.entry(history.Entry{Channel: c.ID(), Group: c.Group(), Type: c.Spec().Type,
				State: iv.State, Status: iv.Status, ReasonCode: iv.ReasonCode, ReasonName: iv.ReasonName, At: iv.Start.UnixMilli(),
				ChangedBy: s.changedBy}))
		}
	}
}

// recordInteraction appends an interaction event to the timeline.
func (s *Session) recordInteraction(c *channel.Channel, id, event string, at time.Time) {
	s.journal.timeline = append(s.journal.timeline, s.entry(history.Entry{Kind: history.KindInteraction, Channel: c.ID(),
		Group: c.Group(), Type: c.Spec().Type, Interaction: id, Event: event, At: at.UnixMilli()}))
}

// recordEnd closes the session's intervals in the timeline.
func (s *Session) recordEnd(at time.Time) {
	s.takeIntervals()
	s.journal.timeline = append(s.journal.timeline, s.entry(history.Entry{Kind: history.KindEnd, At: at.UnixMilli()}))
}
