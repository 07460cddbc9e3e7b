package broker

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/internal/lazylog"
	"github.com/ctibroker/ctibroker/internal/workers"
	"github.com/ctibroker/ctibroker/internal/wsbuf"
	"github.com/ctibroker/ctibroker/metrics"
	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/session"
)

// wsConn is one client WebSocket. An idle connection has one goroutine, its
// reader (readLoop), parked at the minimum stack; everything else runs only
// while there is work:
//   - a read, started by the reader when the peer has sent something, reads
//     and submits messages until none has come for readLinger. It runs on
//     the server's pool, whose goroutines keep the stack the library's read
//     path needs, and the reader waits for it: one read at a time;
//   - a flush, started by Send or a close request when none is running,
//     writes the queued batches and returns when the queue is empty. It runs
//     on the server's pool too.
//     At most one runs at a time (writing, under mu), so it is the socket's
//     only writer of data frames and the only one to send the close frame;
//   - a ping, from a timer, writes a ping frame between the library's frames
//     (wsbuf.Conn.Ping) and returns; the reader sees the pong (pong), before
//     the library would.
//
// Locking: mu guards queue, queued, writing, closeReq, closing's
// transitions and the ping timer. It is never held while writing to the
// socket. closing is also read without mu as a fast path.
type wsConn struct {
	ws      *websocket.Conn
	cork    *wsbuf.Conn // the socket under ws: corks batches, sends pings
	remote  string
	cfg     *WSConfig
	metrics *metrics.Metrics
	agent   string
	logBase *zap.Logger // lazylog.Base of the server's logger; see logger
	// base is the server's context, shared by every connection (a context
	// of its own would cost an idle connection about 600 bytes): it ends
	// when the broker gives up on a graceful shutdown. abort closes the
	// socket, which ends reads, writes and pings.
	base context.Context
	// pool runs reads and flushes: the server's, shared by every
	// connection.
	pool *workers.Pool

	mu        sync.Mutex
	queue     [][][]byte // batches to write; grows on demand, nil when idle
	queued    int        // messages in queue, at most limit
	bytes     int        // bytes in queue, at most byteLimit
	limit     int
	byteLimit int
	writing   bool          // a flush goroutine runs (or the write side died)
	closeReq  *closeRequest // the first close request wins
	closing   atomic.Bool   // no more messages are accepted
	ping      *time.Timer   // see pingTick
	// awaitingPong: a ping is out and ping is armed with the timeout.
	awaitingPong bool
	expiry       *time.Timer // closes the connection when its token expires
	// workers counts flush goroutines. Add happens under mu while
	// closing is false; wait sets closing under mu first, so no Add can
	// race with its Wait.
	workers  sync.WaitGroup
	closedBy atomic.Int32 // close code the broker sent, 0 if none
}

type closeRequest struct {
	code   protocol.CloseCode
	reason string
	// drain sends the queued messages first.
	drain bool
}

var _ session.Conn = (*wsConn)(nil)

func newWSConn(base context.Context, pool *workers.Pool, ws *websocket.Conn, cork *wsbuf.Conn, agent, remote string, cfg *WSConfig, limits LimitsConfig, log *zap.Logger) *wsConn {
	return &wsConn{base: base, pool: pool, ws: ws, cork: cork, agent: agent, remote: remote, cfg: cfg,
		limit: limits.SendQueue, byteLimit: limits.SendQueueBytes, logBase: log}
}

// logger writes the connection's log lines. It is made per line and costs
// nothing unless the line is written: a logger kept per connection would
// cost every idle connection.
func (c *wsConn) logger() lazylog.Logger {
	return lazylog.New(c.logBase, zap.String("agent", c.agent), zap.String("remote", c.remote))
}

// startPings arms the ping timer. The first ping comes after a random part
// of the interval, so that connections opened together (a broker restart,
// a load test) do not ping together forever after.
func (c *wsConn) startPings() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing.Load() || c.cfg.PingInterval <= 0 {
		return
	}
	first := c.cfg.PingInterval/2 + rand.N(c.cfg.PingInterval/2+1)
	c.ping = time.AfterFunc(first, c.pingTick)
}

// pingTick runs on the ping timer's goroutine. One timer serves both ends
// of a ping: armed with the interval it sends one, armed with the timeout
// while the pong is awaited it closes the connection. The ping goes through
// the corked connection (see wsbuf.Conn) and the reader sees the pong
// (pong): nothing waits in between, and nothing is allocated per ping.
func (c *wsConn) pingTick() {
	c.mu.Lock()
	if c.closing.Load() {
		c.mu.Unlock()
		return
	}
	if c.awaitingPong {
		c.mu.Unlock()
		c.logger().Info("peer did not answer ping", zap.Duration("timeout", c.cfg.PingTimeout))
		c.abort()
		return
	}
	c.awaitingPong = true
	c.ping.Reset(c.cfg.PingTimeout)
	c.mu.Unlock()
	if err := c.cork.Ping(c.cfg.PingTimeout); err != nil {
		c.logger().Debug("ping failed", zap.Error(err))
		c.abort()
	}
}

// pong runs on the reader's goroutine (wsbuf.Conn.Read) for every pong the
// peer sends: the peer is alive, the next ping is due an interval from now.
func (c *wsConn) pong() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.awaitingPong && !c.closing.Load() {
		c.awaitingPong = false
		c.ping.Reset(c.cfg.PingInterval)
	}
}

// Send implements session.Conn.
func (c *wsConn) Send(msgs [][]byte) bool {
	if c.closing.Load() {
		return false
	}
	c.mu.Lock()
	if c.closing.Load() {
		c.mu.Unlock()
		return false
	}
	// A batch larger than the limits is accepted into an empty queue (a
	// long replay on attach); the limits catch messages piling up unread.
	size := 0
	for _, m := range msgs {
		size += len(m)
	}
	if c.queued > 0 && (c.queued+len(msgs) > c.limit || c.bytes+size > c.byteLimit) {
		c.mu.Unlock()
		c.metrics.Dropped()
		c.requestClose(closeRequest{code: protocol.CloseTryAgainLater, reason: "slow consumer: send queue full"})
		return false
	}
	c.queue = append(c.queue, msgs)
	c.queued += len(msgs)
	c.bytes += size
	c.startWriterLocked()
	c.mu.Unlock()
	return true
}

// startWriterLocked starts a flush goroutine unless one runs. mu is held.
func (c *wsConn) startWriterLocked() {
	if c.writing {
		return
	}
	c.writing = true
	c.workers.Add(1)
	c.pool.Go(c.flush)
}

// Close implements session.Conn: queued messages are sent first.
func (c *wsConn) Close(code protocol.CloseCode, reason string) {
	c.requestClose(closeRequest{code: code, reason: reason, drain: true})
}

// RemoteAddr implements session.Conn.
func (c *wsConn) RemoteAddr() string { return c.remote }

func (c *wsConn) requestClose(r closeRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing.Load() {
		return
	}
	c.closeReq = &r
	c.stopPingsLocked()
	c.startWriterLocked()
	c.closing.Store(true)
}

func (c *wsConn) stopPingsLocked() {
	if c.ping != nil {
		c.ping.Stop()
	}
}

// abort closes the socket at once, without a close frame: the peer is gone,
// did not answer a ping, or the broker gave up waiting. The reader's Read
// fails and it returns.
func (c *wsConn) abort() {
	c.mu.Lock()
	c.closing.Store(true)
	c.stopPingsLocked()
	c.mu.Unlock()
	_ = c.ws.CloseNow()
}

// flush writes the queued batches until the queue is empty, then returns,
// unless it has sent the close frame: then writing stays set and no writer
// starts again.
func (c *wsConn) flush() {
	defer c.workers.Done()
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
			batches = nil
		}
		if !c.writeBatch(batches) {
			return
		}
		if req != nil {
			c.closedBy.Store(int32(req.code))
			c.logger().Debug("closing connection", zap.Int("code", int(req.code)), zap.String("reason", req.reason))
			// Close waits for the peer's close frame for a bounded time,
			// reading on this goroutine.
			c.cork.StopWaiting()
			_ = c.ws.Close(websocket.StatusCode(req.code), req.reason)
			return
		}
	}
}

// writeBatch writes the queued batches with one system call when the
// connection is corked. A failed write aborts the connection.
func (c *wsConn) writeBatch(batches [][][]byte) bool {
	if len(batches) == 0 {
		return true
	}
	c.cork.Cork()
	ok := true
	for _, msgs := range batches {
		if ok = c.writeAll(msgs); !ok {
			break
		}
	}
	if err := c.cork.Uncork(c.cfg.WriteTimeout); err != nil && ok {
		c.logger().Debug("write failed", zap.Error(err))
		c.abort()
		return false
	}
	return ok
}

func (c *wsConn) writeAll(msgs [][]byte) bool {
	for _, m := range msgs {
		if !c.write(m) {
			return false
		}
	}
	return true
}

func (c *wsConn) write(msg []byte) bool {
	// Corked writes only fill a buffer: the real write (in Uncork) has the
	// deadline. Without a context deadline the library sets no timer per
	// message.
	if err := c.ws.Write(context.Background(), websocket.MessageText, msg); err != nil {
		c.logger().Debug("write failed", zap.Error(err))
		c.abort()
		return false
	}
	c.metrics.Delivered()
	return true
}

// wait stops new writers and pings and blocks until the running ones have
// returned. A requested close finishes first (bounded by the write timeout
// and the close handshake).
func (c *wsConn) wait() {
	c.mu.Lock()
	c.closing.Store(true)
	c.stopPingsLocked()
	c.mu.Unlock()
	c.workers.Wait()
}

// readLoop submits the peer's messages to the session in order until the
// socket closes. It waits in wsbuf.Conn.WaitReadable, which keeps an idle
// connection's goroutine at the runtime's minimum stack (2 KiB; the
// library's read path would double it, see internal/wsbuf/wait.go), and
// does the reads on the pool. A peer that pings is read here, the
// library's way (wsbuf.Conn.SawPing).
func (c *wsConn) readLoop(s *session.Session) {
	var reading sync.WaitGroup
	next := readWait
	read := func() {
		defer reading.Done()
		next = c.readAvailable(s)
	}
	for next == readWait {
		c.cork.WaitReadable()
		if c.cork.SawPing() {
			next = readDirect
			break
		}
		reading.Add(1)
		c.pool.Go(read)
		reading.Wait()
	}
	if next == readDirect {
		for c.readOne(s) {
		}
	}
}

// What readLoop does after a read.
type readNext int

const (
	readWait   readNext = iota // wait for the peer again
	readDirect                 // the peer pings: read here from now on
	readEnded                  // the socket or the session has ended
)

// readLinger is how long a read waits for the connection's next message
// before it hands the waiting back to readLoop. A client sending a stream
// of commands is read without a handoff per message; an agent's desktop,
// a command every few seconds, pays one per command (about 1 µs).
const readLinger = 20 * time.Millisecond

// readAvailable reads and submits messages while they come within
// readLinger of each other.
func (c *wsConn) readAvailable(s *session.Session) readNext {
	for {
		if !c.readOne(s) {
			return readEnded
		}
		if !c.cork.WaitReadableFor(readLinger) {
			return readWait
		}
		if c.cork.SawPing() {
			return readDirect
		}
	}
}

// readOne reads a message and submits it; false when the socket or the
// session has ended. Read gets no context: a context would cost a
// registration per frame, and abort or the close handshake ends it.
func (c *wsConn) readOne(s *session.Session) bool {
	typ, frame, err := c.ws.Read(context.Background())
	if err != nil {
		c.readEnded(err)
		return false
	}
	return c.submit(s, typ, frame)
}

func (c *wsConn) readEnded(err error) {
	if status := websocket.CloseStatus(err); status == websocket.StatusMessageTooBig {
		c.closedBy.Store(int32(protocol.CloseMessageTooBig))
	}
	c.logger().Debug("read ended", zap.Error(err))
}

// submit hands a frame to the session; false when the session has ended.
func (c *wsConn) submit(s *session.Session, typ websocket.MessageType, data []byte) bool {
	f := session.Frame{Data: data, Binary: typ != websocket.MessageText, Received: time.Now()}
	return s.Submit(c.base, c, f) == nil
}
