package broker

import (
	"net"
	"sync"
	"time"
)

// corkedConn coalesces writes: between Cork and Uncork, Write only buffers,
// and Uncork sends everything with one write system call. The WebSocket
// library flushes every frame; corking a batch of queued messages turns one
// syscall per message into one per batch.
//
// Locking: mu guards corked and buf and is held during Uncork's write, so a
// control frame written concurrently (a pong from the reader) goes after
// the batch, never into the middle of it.
type corkedConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    []byte
}

// corkBuffers lends batch buffers: an idle connection holds none.
var corkBuffers = sync.Pool{New: func() any { return new([]byte) }}

func (c *corkedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked {
		if c.buf == nil {
			c.buf = (*corkBuffers.Get().(*[]byte))[:0]
		}
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// Cork starts buffering.
func (c *corkedConn) Cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// Uncork writes what was buffered, within timeout, and stops buffering.
func (c *corkedConn) Uncork(timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if c.buf == nil {
		return nil
	}
	if err := c.Conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	_, err := c.Conn.Write(c.buf)
	// Clear the deadline: direct writes later (pongs) must not inherit it.
	if derr := c.Conn.SetWriteDeadline(time.Time{}); err == nil {
		err = derr
	}
	if cap(c.buf) <= 64<<10 { // a burst's buffer is left to the collector
		buf := c.buf[:0]
		corkBuffers.Put(&buf)
	}
	c.buf = nil
	return err
}
