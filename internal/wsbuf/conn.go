package wsbuf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// Conn sits between coder/websocket and the socket (Writer's Wrap makes
// one). It does three things the library cannot do cheaply (the third,
// waiting for the peer, is in wait.go):
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
//     through here, to know where a frame ends. The pong is taken out of
//     the incoming stream (pongFilter), which the library reads only
//     through here: handling it would cost the library another 750 bytes.
//
// Locking: mu guards corked, buf, frames and pingDue, and is held during
// every write to the socket, so a control frame written concurrently (a
// pong from the reader, a ping) goes between frames, never into one.
type Conn struct {
	net.Conn
	mu      sync.Mutex
	corked  bool
	buf     []byte
	frames  frameTracker
	pingDue bool // a ping waits for the frame being written to end

	// The read side (wait.go has its locking).
	rmu     sync.Mutex
	in      pongFilter
	br      *bufio.Reader // the library's reader, from Writer.Hijack
	pend    []byte        // read by WaitReadable, not yet by the library
	pendBuf *[]byte       // pend's buffer, from pendBuffers
	pendErr error         // what the socket returned to WaitReadable
	closing bool          // see StopWaiting
	// raw and readable are set by the first WaitReadable, on the reader's
	// goroutine.
	raw      syscall.RawConn
	readable func(fd uintptr) bool
	// OnPong is called for every pong the peer sends, on the goroutine
	// reading (Read or WaitReadable). Set it before the reader starts.
	OnPong func()
}

// NewConn wraps a hijacked connection.
func NewConn(c net.Conn) *Conn { return &Conn{Conn: c} }

// pingFrame is a ping without payload, as a server sends it (unmasked).
var pingFrame = []byte{0x89, 0x00}

// corkBuffers lends batch buffers: an idle connection holds none.
var corkBuffers = sync.Pool{New: func() any { return new([]byte) }}

// Read reads for the library's reader, without the peer's pongs: they go
// to OnPong instead. What WaitReadable read comes first. The library's
// reader holds only ReaderSize bytes (see Writer.Hijack): a small read
// reads up to ReadSize bytes from the socket into a lent buffer and keeps
// the rest for the next Read, so a message still takes one system call
// and an idle connection holds no read buffer; a large read goes straight
// into p.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	n, ok, err := c.readPendingLocked(p)
	c.rmu.Unlock()
	if ok {
		return n, err
	}
	if len(p) >= ReadSize {
		return c.readSocket(p)
	}
	buf := pendBuffers.Get().(*[]byte)
	n, err = c.readSocket(*buf)
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if n == 0 {
		pendBuffers.Put(buf)
		return 0, err
	}
	c.pendBuf, c.pend, c.pendErr = buf, (*buf)[:n], err
	n, _, _ = c.readPendingLocked(p)
	return n, nil
}

// readSocket reads the socket into p and takes the pongs out.
func (c *Conn) readSocket(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		c.rmu.Lock()
		kept, pongs, ferr := c.in.filter(p[:n])
		c.rmu.Unlock()
		c.reportPongs(pongs)
		if ferr != nil {
			return len(kept), ferr
		}
		if len(kept) > 0 || err != nil || n == 0 {
			return len(kept), err
		}
		// All of it was pongs: a Read must not return nothing.
	}
}

func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frames.consume(p)
	if c.corked {
		c.bufferLocked(p)
		_ = c.pingIfDueLocked() // corked: it only buffers
		return len(p), nil
	}
	n, err := c.Conn.Write(p)
	if err == nil {
		err = c.pingIfDueLocked()
	}
	return n, err
}

func (c *Conn) bufferLocked(p []byte) {
	if c.buf == nil {
		c.buf = (*corkBuffers.Get().(*[]byte))[:0]
	}
	c.buf = append(c.buf, p...)
}

// pingIfDueLocked sends a pending ping if the stream is between frames.
func (c *Conn) pingIfDueLocked() error {
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
func (c *Conn) Ping(timeout time.Duration) error {
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
func (c *Conn) Cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// Uncork writes what was buffered, within timeout, and stops buffering.
func (c *Conn) Uncork(timeout time.Duration) error {
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
	head   [maxHeader]byte // the current frame's header so far
	n      int             // bytes of head seen
	left   uint64          // payload bytes of the current frame still to come
	closed bool            // a close frame was written
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
		if t.n < 2 || t.n < headerSize(t.head[1]) {
			continue
		}
		t.left = payloadLength(t.head[:t.n])
		if t.head[0]&0x0f == opClose {
			t.closed = true
		}
		t.n = 0
	}
}

// pongFilter takes the peer's pongs out of the incoming frame stream, in
// the pieces the socket returns. coder/websocket allocates about 750 bytes
// handling a pong (a 5-second context, its timer, an AfterFunc
// registration), once per ping at every idle connection. A pong is known
// by its frame's first byte, so it is dropped as it comes, without
// buffering.
type pongFilter struct {
	head  [maxHeader]byte
	n     int
	left  uint64
	drop  bool // the current frame is a pong
	pings bool // a ping has come
}

// errBadPong: a pong frame that is fragmented or longer than a control
// frame may be (RFC 6455 5.5); the library would fail the connection too.
var errBadPong = errors.New("invalid pong frame")

// filter removes the pong frames from p, in place, and returns what is left
// and how many pongs ended in p.
func (f *pongFilter) filter(p []byte) (kept []byte, pongs int, err error) {
	w := 0
	for i := 0; i < len(p); {
		if f.left > 0 {
			k := int(min(uint64(len(p)-i), f.left))
			if !f.drop {
				if w != i {
					copy(p[w:], p[i:i+k])
				}
				w += k
			}
			i += k
			f.left -= uint64(k)
			if f.left == 0 && f.drop {
				f.drop = false
				pongs++
			}
			continue
		}
		b := p[i]
		i++
		if f.n == 0 {
			f.drop = b&0x0f == opPong
			f.pings = f.pings || b&0x0f == opPing
		}
		f.head[f.n] = b
		f.n++
		if !f.drop {
			p[w] = b
			w++
		}
		if f.n < 2 || f.n < headerSize(f.head[1]) {
			continue
		}
		f.left = payloadLength(f.head[:f.n])
		f.n = 0
		if f.drop {
			if f.head[0]&0x80 == 0 || f.left > 125 {
				return p[:w], pongs, errBadPong
			}
			if f.left == 0 {
				f.drop = false
				pongs++
			}
		}
	}
	return p[:w], pongs, nil
}

const (
	maxHeader = 14 // 2 bytes, an 8-byte length, a 4-byte mask
	opClose   = 0x8
	opPing    = 0x9
	opPong    = 0xA
)

// headerSize is the size of a frame header whose second byte is b1.
func headerSize(b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 { // masked: a client's frame
		n += 4
	}
	return n
}

// payloadLength reads a complete header's payload length.
func payloadLength(head []byte) uint64 {
	switch l := uint64(head[1] & 0x7f); l {
	case 126:
		return uint64(binary.BigEndian.Uint16(head[2:4]))
	case 127:
		return binary.BigEndian.Uint64(head[2:10])
	default:
		return l
	}
}
