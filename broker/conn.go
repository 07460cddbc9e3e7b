package broker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/ctibroker/ctibroker/metrics"
	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/session"
)

// wsConn is one client WebSocket. Goroutines: the HTTP handler's goroutine is
// the reader (serve), writeLoop is the only writer of the socket and the only
// goroutine that closes it. Others talk to it through Send and Close, which
// never block.
type wsConn struct {
	ws     *websocket.Conn
	cork   *corkedConn // nil when the connection could not be corked
	remote string
	cfg    WSConfig
	// log gains the session id once attached, while writeLoop runs.
	log atomic.Pointer[zap.Logger]

	// queue holds the batches waiting for writeLoop; it grows as needed and
	// is bounded by limit messages. An idle connection holds no buffer.
	qmu      sync.Mutex
	queue    [][][]byte
	queued   int
	limit    int
	pending  chan struct{}     // capacity 1: wakes writeLoop
	closeReq chan closeRequest // capacity 1: the first close wins
	closing  atomic.Bool
	done     chan struct{} // closed when writeLoop returned
	ctx      context.Context
	cancel   context.CancelFunc
	closedBy atomic.Int32 // close code the broker sent, 0 if none
	metrics  *metrics.Metrics
}

type closeRequest struct {
	code   protocol.CloseCode
	reason string
	// drain sends the queued messages first.
	drain bool
}

var _ session.Conn = (*wsConn)(nil)

func newWSConn(parent context.Context, ws *websocket.Conn, remote string, cfg WSConfig, queue int, log *zap.Logger) *wsConn {
	ctx, cancel := context.WithCancel(parent)
	c := &wsConn{ws: ws, remote: remote, cfg: cfg,
		limit: queue, pending: make(chan struct{}, 1), closeReq: make(chan closeRequest, 1),
		done: make(chan struct{}), ctx: ctx, cancel: cancel}
	c.log.Store(log)
	return c
}

// Send implements session.Conn.
func (c *wsConn) Send(msgs [][]byte) bool {
	if c.closing.Load() {
		return false
	}
	c.qmu.Lock()
	// A batch larger than the limit is accepted into an empty queue (a long
	// replay on attach); the limit catches messages piling up unread.
	if c.queued > 0 && c.queued+len(msgs) > c.limit {
		c.qmu.Unlock()
		c.metrics.Dropped()
		c.requestClose(closeRequest{code: protocol.CloseTryAgainLater, reason: "slow consumer: send queue full"})
		return false
	}
	c.queue = append(c.queue, msgs)
	c.queued += len(msgs)
	c.qmu.Unlock()
	select {
	case c.pending <- struct{}{}:
	default:
	}
	return true
}

// take removes every queued batch.
func (c *wsConn) take() [][][]byte {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	q := c.queue
	c.queue, c.queued = nil, 0
	return q
}

// Close implements session.Conn: queued messages are sent first.
func (c *wsConn) Close(code protocol.CloseCode, reason string) {
	c.requestClose(closeRequest{code: code, reason: reason, drain: true})
}

// RemoteAddr implements session.Conn.
func (c *wsConn) RemoteAddr() string { return c.remote }

func (c *wsConn) requestClose(r closeRequest) {
	if c.closing.Swap(true) {
		return
	}
	c.closeReq <- r
}

// writeLoop writes queued messages, pings, and finally closes the socket.
func (c *wsConn) writeLoop() {
	defer close(c.done)
	defer c.cancel()
	ping := time.NewTicker(c.cfg.PingInterval)
	defer ping.Stop()
	pingDone := make(chan error, 1)
	pinging := false
	for {
		select {
		case <-c.pending:
			if !c.writeBatch(c.take()) {
				return
			}
		case r := <-c.closeReq:
			if r.drain && !c.writeBatch(c.take()) {
				return
			}
			c.closedBy.Store(int32(r.code))
			c.log.Load().Debug("closing connection", zap.Int("code", int(r.code)), zap.String("reason", r.reason))
			// Close waits for the peer's close frame for a bounded time.
			_ = c.ws.Close(websocket.StatusCode(r.code), r.reason)
			return
		case <-ping.C:
			if pinging {
				continue
			}
			pinging = true
			go func() {
				ctx, cancel := context.WithTimeout(c.ctx, c.cfg.PingTimeout)
				defer cancel()
				// Ping needs the reader (serve) running to see the pong.
				pingDone <- c.ws.Ping(ctx)
			}()
		case err := <-pingDone:
			pinging = false
			if err != nil {
				c.log.Load().Info("peer did not answer ping", zap.Error(err))
				_ = c.ws.CloseNow()
				return
			}
		case <-c.ctx.Done():
			_ = c.ws.CloseNow()
			return
		}
	}
}

// writeBatch writes the queued batches with one system call when the
// connection is corked.
func (c *wsConn) writeBatch(batches [][][]byte) bool {
	if len(batches) == 0 {
		return true
	}
	if c.cork != nil {
		c.cork.Cork()
	}
	ok := true
	for _, msgs := range batches {
		if ok = c.writeAll(msgs); !ok {
			break
		}
	}
	if c.cork != nil {
		if err := c.cork.Uncork(c.cfg.WriteTimeout); err != nil && ok {
			c.log.Load().Debug("write failed", zap.Error(err))
			c.closing.Store(true)
			_ = c.ws.CloseNow()
			return false
		}
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
	ctx := context.Background()
	if c.cork == nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(c.ctx, c.cfg.WriteTimeout)
		defer cancel()
	}
	if err := c.ws.Write(ctx, websocket.MessageText, msg); err != nil {
		c.log.Load().Debug("write failed", zap.Error(err))
		c.closing.Store(true)
		_ = c.ws.CloseNow()
		return false
	}
	c.metrics.Delivered()
	return true
}

// wait blocks until writeLoop has finished (and with it any ping goroutine's
// context has been cancelled).
func (c *wsConn) wait() { <-c.done }

// readLoop reads frames, decodes them and submits them to the session in
// order until the socket closes.
func (c *wsConn) readLoop(s *session.Session, limiter *rate.Limiter) {
	for {
		typ, frame, err := c.ws.Read(c.ctx)
		received := time.Now()
		if err != nil {
			if status := websocket.CloseStatus(err); status == websocket.StatusMessageTooBig {
				c.closedBy.Store(int32(protocol.CloseMessageTooBig))
			}
			c.log.Load().Debug("read ended", zap.Error(err))
			return
		}
		var in protocol.Inbound
		if typ != websocket.MessageText {
			in = protocol.RejectFrame(frame, "binary frames are not accepted: send JSON text frames")
		} else {
			in = protocol.DecodeRequest(frame)
		}
		if in.Failure == nil && limiter != nil && !limiter.Allow() {
			in.Failure = protocol.Failf(protocol.CodeRateLimited, "more than the allowed commands per second; slow down")
		}
		if err := s.Submit(c.ctx, c, in, received); err != nil {
			return
		}
	}
}
