package broker

import (
	"encoding/binary"
	"net"
	"sync"
	"time"
)

// corkedConn sits between coder/websocket and the socket. It does two things
// the library cannot do cheaply:
//   - it coalesces writes: between Cork and Uncork, Write only buffers, and
//     Uncork sends everything with one write system call. The library
//     flushes every frame; corking a batch of queued messages turns one
//     syscall per message into one per batch;
//   - it sends pings (Ping). The library's Conn.Ping allocates about 1 KiB
//     per call (a 5-second context, its timer and an AfterFunc registration)
//     and needs a goroutine waiting for the pong; at one ping per 30 s per
//     idle connection that garbage was most of what an idle broker made.
//     A ping is two bytes, written between the library's frames: frames
//     follows the outgoing byte stream, which the library writes only
//     through here, to know where a frame ends. The pong is seen through
//     the library's OnPongReceived.
//
// Locking: mu guards corked, buf, frames and pingDue, and is held during
// every write to the socket, so a control frame written concurrently (a
// pong from the reader, a ping) goes between frames, never into one.
type corkedConn struct {
	net.Conn
	mu      sync.Mutex
	corked  bool
	buf     []byte
	frames  frameTracker
	pingDue bool // a ping waits for the frame being written to end
}

// pingFrame is a ping without payload, as a server sends it (unmasked).
var pingFrame = []byte{0x89, 0x00}

// corkBuffers lends batch buffers: an idle connection holds none.
var corkBuffers = sync.Pool{New: func() any { return new([]byte) }}

func (c *corkedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frames.consume(p)
	if c.corked {
		c.bufferLocked(p)
		c.pingIfDueLocked()
		return len(p), nil
	}
	n, err := c.Conn.Write(p)
	if err == nil {
		err = c.pingIfDueLocked()
	}
	return n, err
}

func (c *corkedConn) bufferLocked(p []byte) {
	if c.buf == nil {
		c.buf = (*corkBuffers.Get().(*[]byte))[:0]
	}
	c.buf = append(c.buf, p...)
}

// pingIfDueLocked sends a pending ping if the stream is between frames.
func (c *corkedConn) pingIfDueLocked() error {
	if !c.pingDue || !c.frames.atBoundary() {
		return nil
	}
	c.pingDue = false
	if c.frames.closed {
		return nil // nothing may follow a close frame
	}
	if c.corked {
		c.bufferLocked(pingFrame)
		return nil
	}
	_, err := c.Conn.Write(pingFrame)
	return err
}

// Ping sends a ping: now if no frame is half written (within timeout), or
// right after the frame being written. It fails once the close frame went.
func (c *corkedConn) Ping(timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.frames.closed {
		return net.ErrClosed
	}
	c.pingDue = true
	if !c.frames.atBoundary() || c.corked {
		return c.pingIfDueLocked()
	}
	if err := c.Conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	err := c.pingIfDueLocked()
	// Clear the deadline: the library's writes later must not inherit it.
	if derr := c.Conn.SetWriteDeadline(time.Time{}); err == nil {
		err = derr
	}
	return err
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

// frameTracker follows a stream of WebSocket frames written in pieces of
// any size, to tell where one frame ends and the next begins.
type frameTracker struct {
	head   [14]byte // the current frame's header so far
	n      int      // bytes of head seen
	left   uint64   // payload bytes of the current frame still to come
	closed bool     // a close frame was written
}

func (t *frameTracker) atBoundary() bool { return t.n == 0 && t.left == 0 }

func (t *frameTracker) consume(p []byte) {
	for len(p) > 0 {
		if t.left > 0 {
			k := min(uint64(len(p)), t.left)
			t.left -= k
			p = p[k:]
			continue
		}
		t.head[t.n] = p[0]
		t.n++
		p = p[1:]
		if t.n < 2 {
			continue
		}
		size := 2
		switch t.head[1] & 0x7f {
		case 126:
			size += 2
		case 127:
			size += 8
		}
		if t.head[1]&0x80 != 0 { // masked (a client's frame)
			size += 4
		}
		if t.n < size {
			continue
		}
		switch l := uint64(t.head[1] & 0x7f); l {
		case 126:
			t.left = uint64(binary.BigEndian.Uint16(t.head[2:4]))
		case 127:
			t.left = binary.BigEndian.Uint64(t.head[2:10])
		default:
			t.left = l
		}
		if t.head[0]&0x0f == 0x8 {
			t.closed = true
		}
		t.n = 0
	}
}
