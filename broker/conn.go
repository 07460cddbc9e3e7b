package broker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ctibroker/ctibroker/metrics"
	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/session"
)

// wsConn is one client WebSocket, served with coder/websocket's own reading,
// writing, pings and close handshake. Goroutines:
//   - the reader (read), for the connection's life. It reads a frame,
//     submits it to the session and reads the next one only once the
//     command's reply has been written: a connection has one command in
//     flight, so the replies to what a client sent always go out before the
//     close frame the library answers the client's close (or protocol
//     error) with, and a client cannot queue work faster than it is
//     answered;
//   - a writer (flush), only while messages are queued: it writes them in
//     order, then, when a close was requested, the close frame. What is
//     queued while the reader submits a frame (the command's reply and
//     events, as a rule) the reader writes itself (flushSubmitted); a
//     goroutine of its own writes the rest (events from elsewhere);
//   - a ping, from the connection's timer, only when the connection was
//     silent for a ping interval (nats-server's rule: a peer that sends
//     data is alive).
//
// Locking: mu guards everything below it. It is never held while writing
// to the socket.
type wsConn struct {
	ws     *websocket.Conn
	remote string
	// userAgent: set before the connection attaches, then read-only.
	userAgent string
	agent     string
	// batch: the client chose SubprotocolBatch; messages are joined into
	// frames.
	batch   bool
	cfg     *WSConfig
	metrics *metrics.Metrics
	log     *zap.Logger

	// lastRead is when the peer last sent a frame (Unix ns); inFlight is set
	// while a command is being answered: no ping is needed then.
	lastRead atomic.Int64
	inFlight atomic.Bool
	// replied gets a value when the command in flight has been answered
	// (its reply written or dropped); gone is closed when the connection is
	// finished.
	replied chan struct{}
	gone    chan struct{}

	mu        sync.Mutex
	queue     []batch // waiting for the writer; nil when idle
	queued    int     // messages in queue, at most limit
	bytes     int     // bytes in queue, at most byteLimit
	limit     int
	byteLimit int
	writing   bool // a flush runs (a goroutine of its own, or the reader's flushSubmitted)
	// submitting: the reader is submitting a frame; Send leaves what it
	// queues to the reader's flushSubmitted.
	submitting bool
	closeReq   *closeRequest // the first close request wins
	closing    bool          // no more messages are accepted
	ping       *time.Timer
	expiry     *time.Timer // closes the connection when its token expires
	// flushes counts running flushes. Add happens under mu while closing
	// is false (wait sets closing under mu first), or on the reader's
	// goroutine, which is the one that calls wait: no Add races its Wait.
	flushes  sync.WaitGroup
	closedBy atomic.Int32 // close code the broker sent, 0 if none
	goneOnce sync.Once

	// stall bounds a write (see write). Owned by the flush that runs (see
	// writing): one at a time, each started under mu after the last ended.
	stall *time.Timer
}

// batch is messages written together; done, when set, is called once they
// have been written or dropped.
type batch struct {
	msgs []session.Message
	done func()
}

type closeRequest struct {
	code   protocol.CloseCode
	reason string
	// drain writes the queued messages first (bounded by ws.writetimeout);
	// a slow consumer's queue is dropped instead.
	drain bool
}

var _ session.Conn = (*wsConn)(nil)

func newWSConn(ws *websocket.Conn, agent, remote string, cfg *WSConfig, limits LimitsConfig, m *metrics.Metrics, log *zap.Logger) *wsConn {
	c := &wsConn{ws: ws, agent: agent, remote: remote, cfg: cfg, metrics: m, log: log, batch: ws.Subprotocol() == SubprotocolBatch,
		limit: limits.SendQueue, byteLimit: limits.SendQueueBytes,
		replied: make(chan struct{}, 1), gone: make(chan struct{})}
	c.lastRead.Store(time.Now().UnixNano())
	return c
}

// logf writes a log line with the connection's fields; it costs nothing
// when the level is off.
func (c *wsConn) logf(level zapcore.Level, msg string, fields ...zap.Field) {
	if ce := c.log.Check(level, msg); ce != nil {
		ce.Write(append(fields, zap.String("agent", c.agent), zap.String("remote", c.remote))...)
	}
}

// read submits the peer's frames to the session until the socket or the
// session ends.
func (c *wsConn) read(s *session.Session) {
	for {
		f, err := c.readFrame()
		if err != nil {
			c.readEnded(err)
			return
		}
		c.lastRead.Store(time.Now().UnixNano())
		c.inFlight.Store(true)
		c.mu.Lock()
		c.submitting = true
		c.mu.Unlock()
		err = s.Submit(c, f)
		c.flushSubmitted()
		if err != nil {
			return
		}
		select {
		case <-c.replied:
			c.inFlight.Store(false)
		case <-c.gone:
			return
		}
	}
}

// readFrame reads the next message (the library bounds its size by
// ws.maxmessage) into a buffer lent by frames, and decodes it there: the
// decoded frame keeps none of it, and an idle connection, waiting for a
// message to begin, holds no buffer.
func (c *wsConn) readFrame() (session.Frame, error) {
	typ, r, err := c.ws.Reader(context.Background())
	if err != nil {
		return session.Frame{}, err
	}
	buf := frames.Get().(*[]byte)
	defer lend(buf)
	b := bytes.NewBuffer((*buf)[:0])
	_, err = b.ReadFrom(r)
	*buf = b.Bytes()
	if err != nil {
		return session.Frame{}, err
	}
	return session.NewFrame(*buf, typ != websocket.MessageText, c.answered), nil
}

// flushSubmitted ends a submission: the reader writes what was queued
// meanwhile itself (usually the command's reply and events, as the session
// ran the command on the reader's goroutine), unless a writer runs. The
// reader would only wait for the reply otherwise, and a writer goroutine per
// command wakes another thread for it.
func (c *wsConn) flushSubmitted() {
	c.mu.Lock()
	c.submitting = false
	run := len(c.queue) > 0 && c.claimFlushLocked()
	c.mu.Unlock()
	if run {
		c.flush()
	}
}

// answered is the session's acknowledgement that the command in flight has
// been answered.
func (c *wsConn) answered() {
	select {
	case c.replied <- struct{}{}:
	default:
	}
}

// readEnded handles the end of reading. The library has already answered a
// close frame, and a protocol error it knows (1002, 1009) with its close
// frame; an unmasked frame it only reports: that one is answered here with
// 1002. A dead socket gets nothing.
func (c *wsConn) readEnded(err error) {
	status := websocket.CloseStatus(err)
	switch {
	case status != -1:
		c.logf(zap.DebugLevel, "peer closed", zap.Int("code", int(status)))
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNRESET):
		c.logf(zap.DebugLevel, "read ended", zap.Error(err))
	default:
		code := protocol.CloseProtocolError
		if errors.Is(err, websocket.ErrMessageTooBig) {
			code = protocol.CloseMessageTooBig
		}
		c.logf(zap.InfoLevel, "protocol error", zap.Error(err))
		c.requestClose(closeRequest{code: code, reason: "protocol error", drain: true})
	}
}

// startPings arms the ping timer. The first check comes after a random part
// of the interval, so that connections opened together (a broker restart,
// a load test) do not ping together forever after.
func (c *wsConn) startPings() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.cfg.PingInterval <= 0 {
		return
	}
	c.ping = time.AfterFunc(c.cfg.PingInterval/2+rand.N(c.cfg.PingInterval/2+1), c.pingTick)
}

// pingTick runs on the timer's goroutine: a ping when the peer was silent
// for an interval and no command is being answered, then the next check.
// The library's Ping waits for the pong, which the reader receives; a peer
// that does not answer within ws.pingtimeout is dropped.
func (c *wsConn) pingTick() {
	next := c.cfg.PingInterval
	if quiet := time.Since(time.Unix(0, c.lastRead.Load())); quiet < next || c.inFlight.Load() {
		next -= min(quiet, next-time.Millisecond)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.PingTimeout)
		err := c.ws.Ping(ctx)
		cancel()
		if err != nil {
			c.logf(zap.InfoLevel, "peer did not answer ping", zap.Duration("timeout", c.cfg.PingTimeout), zap.Error(err))
			c.abort()
			return
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closing {
		c.ping.Reset(next)
	}
}

// Send implements session.Conn.
func (c *wsConn) Send(msgs []session.Message, done func()) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		if done != nil {
			done()
		}
		return false
	}
	// The limits catch messages piling up unread: a connection that still
	// has that much waiting when more comes is a slow consumer. A batch is
	// bounded by whoever makes it (a replay by limits.history, a live batch
	// by the change log), so the queue holds at most the limits plus one.
	size := 0
	for i := range msgs {
		size += msgs[i].Len()
	}
	if c.queued >= c.limit || c.bytes >= c.byteLimit {
		c.mu.Unlock()
		c.metrics.Dropped()
		c.requestClose(closeRequest{code: protocol.CloseTryAgainLater, reason: "slow consumer: send queue full"})
		if done != nil {
			done()
		}
		return false
	}
	c.queue = append(c.queue, batch{msgs, done})
	c.queued += len(msgs)
	c.bytes += size
	if !c.submitting { // else the reader writes it (flushSubmitted)
		c.startWriterLocked()
	}
	c.mu.Unlock()
	return true
}

// startWriterLocked starts a flush goroutine unless a flush runs. mu is
// held.
func (c *wsConn) startWriterLocked() {
	if c.claimFlushLocked() {
		go c.flush()
	}
}

// claimFlushLocked makes the caller the one flush that runs, unless one
// does already; the caller then runs flush. mu is held.
func (c *wsConn) claimFlushLocked() bool {
	if c.writing {
		return false
	}
	c.writing = true
	c.flushes.Add(1)
	return true
}

// Close implements session.Conn: queued messages are sent first.
func (c *wsConn) Close(code protocol.CloseCode, reason string) {
	c.requestClose(closeRequest{code: code, reason: reason, drain: true})
}

// RemoteAddr implements session.Conn.
func (c *wsConn) RemoteAddr() string { return c.remote }

// UserAgent is the client's User-Agent header, bounded and valid UTF-8.
func (c *wsConn) UserAgent() string { return c.userAgent }

func (c *wsConn) requestClose(r closeRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	c.closeReq = &r
	c.closing = true
	c.stopTimersLocked()
	c.startWriterLocked()
}

func (c *wsConn) stopTimersLocked() {
	if c.ping != nil {
		c.ping.Stop()
	}
	if c.expiry != nil {
		c.expiry.Stop()
	}
}

// abort closes the socket at once, without a close frame: the peer is gone
// or did not answer a ping, or the broker gave up waiting.
func (c *wsConn) abort() {
	c.mu.Lock()
	c.closing = true
	c.stopTimersLocked()
	c.mu.Unlock()
	_ = c.ws.CloseNow()
	c.finished()
}

// finished unblocks the reader's wait for a reply, once.
func (c *wsConn) finished() { c.goneOnce.Do(func() { close(c.gone) }) }

// flush writes the queued batches until the queue is empty, then returns;
// after a close request, it writes the close frame last.
func (c *wsConn) flush() {
	defer c.flushes.Done()
	for {
		c.mu.Lock()
		batches := c.queue
		c.queue, c.queued, c.bytes = nil, 0, 0
		req := c.closeReq
		if len(batches) == 0 && req == nil {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		if req != nil && !req.drain {
			dropped(batches)
			batches = nil
		}
		if !c.write(batches) {
			return
		}
		if req != nil {
			c.closedBy.Store(int32(req.code))
			c.logf(zap.DebugLevel, "closing connection", zap.Int("code", int(req.code)), zap.String("reason", req.reason))
			// The library writes the close frame (unless it already
			// answered the peer's) and waits a bounded time for the peer's.
			_ = c.ws.Close(websocket.StatusCode(req.code), req.reason)
			c.finished()
			return
		}
	}
}

// write writes batches within ws.writetimeout; a failed write aborts the
// connection. Every batch's done is called. A message is written as one
// WebSocket message; with the batch subprotocol, a batch's messages are
// joined into frames, separated by newlines.
//
// The bound is a timer rather than a context with a deadline: the library
// closes the connection when a write's context expires, which is what
// stalled does, and a context without Done costs it nothing, where a
// deadline context per write (and the library's AfterFunc on it) was a
// seventh of a command's allocations. The timer is made by the first write
// and re-armed by the next ones.
func (c *wsConn) write(batches []batch) bool {
	if len(batches) == 0 {
		return true
	}
	if c.stall == nil {
		c.stall = time.AfterFunc(c.cfg.WriteTimeout, c.stalled)
	} else {
		c.stall.Reset(c.cfg.WriteTimeout)
	}
	defer c.stall.Stop()
	buf := frames.Get().(*[]byte)
	defer lend(buf)
	ctx := context.Background()
	for i, b := range batches {
		if err := c.writeBatch(ctx, b.msgs, buf); err != nil {
			c.logf(zap.DebugLevel, "write failed", zap.Error(err))
			dropped(batches[i:])
			c.abort()
			return false
		}
		if b.done != nil {
			b.done()
		}
	}
	return true
}

// stalled runs on the stall timer's goroutine: a write has taken longer
// than ws.writetimeout, so the peer is not reading. Closing the socket ends
// the write, which then drops what waits. (A write that finished just as
// the timer fired is cut off too: it took the whole timeout anyway.)
func (c *wsConn) stalled() {
	c.logf(zap.InfoLevel, "write timed out", zap.Duration("timeout", c.cfg.WriteTimeout))
	c.abort()
}

// frames lends the reader a buffer to read a message into, and writers one
// to assemble a message or a frame in.
var frames = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// lend returns buf to frames, keeping what it grew to within bounds.
func lend(buf *[]byte) {
	if cap(*buf) <= protocol.MaxFrameBytes+4096 {
		*buf = (*buf)[:0]
		frames.Put(buf)
	}
}

func (c *wsConn) writeBatch(ctx context.Context, msgs []session.Message, buf *[]byte) error {
	frame, n := (*buf)[:0], 0
	flush := func() error {
		if len(frame) == 0 {
			return nil
		}
		err := c.ws.Write(ctx, websocket.MessageText, frame)
		c.metrics.DeliveredN(n)
		*buf = frame[:0] // keep what it grew to (lend bounds it)
		frame, n = *buf, 0
		return err
	}
	for i := range msgs {
		m := &msgs[i]
		switch {
		case !c.batch && len(m.Head) == 0:
			if err := c.ws.Write(ctx, websocket.MessageText, m.Body); err != nil {
				return err
			}
			c.metrics.Delivered()
			continue
		case c.batch && n > 0 && (n == protocol.MaxFrameMessages || len(frame)+1+m.Len() > protocol.MaxFrameBytes):
			if err := flush(); err != nil {
				return err
			}
		case c.batch && n > 0:
			frame = append(frame, '\n')
		}
		frame = m.AppendTo(frame)
		n++
		if !c.batch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

func dropped(batches []batch) {
	for _, b := range batches {
		if b.done != nil {
			b.done()
		}
	}
}

// wait stops new writers and pings and blocks until the running ones have
// returned. A requested close finishes first (bounded by the write timeout
// and the close handshake).
func (c *wsConn) wait() {
	c.mu.Lock()
	c.closing = true
	c.stopTimersLocked()
	c.mu.Unlock()
	c.flushes.Wait()
	c.finished()
}
