package wsbuf

import (
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// Waiting for the peer at the minimum stack.
//
// A goroutine parked in the library's Read sits about 1.5 KiB deep (its
// message reader, frame parser, bufio, net and poll), more than the
// runtime's 2 KiB minimum stack leaves usable, so every idle connection's
// reader had a 4 KiB stack, and kept it: the runtime shrinks a stack only
// when less than a quarter of it is in use. A goroutine parked in
// WaitReadable is a few hundred bytes deep. The connection's own goroutine
// waits there and does each read on a pooled goroutine, whose stack is
// already grown.
//
// When the socket is readable, WaitReadable reads it into a buffer lent
// for as long as the bytes wait for the library (pend; Read hands them
// over), so the bytes are read once, as the library would. They go through
// the pong filter first: the peer's pongs never wake the reader.
//
// Locking: rmu guards in, pend, pendErr, closing and the calls to
// the library's reader (br) made here. The library reads br only while it
// holds its own read lock: on the reader's pooled goroutine, which the
// waiting goroutine waits for, or in its close handshake, which StopWaiting
// announces first. The socket is read under the runtime's read lock of the
// descriptor, so WaitReadable's reads and Read's never interleave.

// pendBuffers lends the buffers WaitReadable reads into.
var pendBuffers = sync.Pool{New: func() any { b := make([]byte, ReadSize); return &b }}

// WaitReadable blocks until the library has something to read: bytes, the
// end of the stream, an error, or a close in progress. Without a socket to
// wait on (not a syscall.Conn), it returns at once and the library waits
// instead.
func (c *Conn) WaitReadable() {
	if c.Buffered() || !c.canWait() {
		return
	}
	// RawConn.Read calls readable, waits for the socket while it returns
	// false, and fails once the socket is closed; the library's Read
	// reports that.
	_ = c.raw.Read(c.readable)
}

// WaitReadableFor is WaitReadable for at most d; false when nothing came.
// The reader's pooled goroutine lingers in it after a message: a busy
// connection's next message is read without a trip through the waiting
// goroutine.
func (c *Conn) WaitReadableFor(d time.Duration) bool {
	if c.Buffered() || !c.canWait() {
		return true
	}
	if err := c.Conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		return true // closed: the library reports it
	}
	err := c.raw.Read(c.readable)
	// The library's reads must not inherit the deadline.
	if derr := c.Conn.SetReadDeadline(time.Time{}); derr != nil {
		return true
	}
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

// canWait reports whether the socket can be waited on here; the first call
// sets raw and readable, on the reader's goroutine.
func (c *Conn) canWait() bool {
	if c.raw != nil {
		return true
	}
	if !canRecvNoWait {
		return false
	}
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	c.raw, c.readable = raw, c.fill
	return true
}

// fill runs under the descriptor's read lock: it reads what the socket
// holds into pend, without the pongs, and reports whether the library has
// something to read now; false: wait for the socket.
func (c *Conn) fill(fd uintptr) bool {
	for {
		ready, pongs := c.fillOnce(fd)
		c.reportPongs(pongs)
		if ready || pongs == 0 {
			return ready
		}
		// Only pongs: whatever came after them may be there already.
	}
}

func (c *Conn) fillOnce(fd uintptr) (ready bool, pongs int) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.closing || c.pend != nil || c.pendErr != nil {
		return true, 0
	}
	buf := pendBuffers.Get().(*[]byte)
	n, err := recvNoWait(fd, *buf)
	for err == syscall.EINTR {
		n, err = recvNoWait(fd, *buf)
	}
	switch {
	case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
		pendBuffers.Put(buf)
		return false, 0
	case err != nil:
		pendBuffers.Put(buf)
		c.pendErr = err
		return true, 0
	case n == 0:
		pendBuffers.Put(buf)
		c.pendErr = io.EOF
		return true, 0
	}
	kept, pongs, ferr := c.in.filter((*buf)[:n])
	if ferr != nil {
		c.pendErr = ferr
	}
	if len(kept) == 0 {
		pendBuffers.Put(buf)
		return ferr != nil, pongs
	}
	c.pendBuf, c.pend = buf, kept
	return true, pongs
}

func (c *Conn) reportPongs(n int) {
	for range n {
		if c.OnPong != nil {
			c.OnPong()
		}
	}
}

// readPendingLocked hands Read what fill read; ok false when there is
// nothing. rmu is held.
func (c *Conn) readPendingLocked(p []byte) (n int, ok bool, err error) {
	if c.pend != nil {
		n = copy(p, c.pend)
		c.pend = c.pend[n:]
		if len(c.pend) == 0 {
			if c.pendBuf != nil {
				pendBuffers.Put(c.pendBuf)
			}
			c.pendBuf, c.pend = nil, nil
		}
		return n, true, nil
	}
	if c.pendErr != nil {
		return 0, true, c.pendErr
	}
	return 0, false, nil
}

// Buffered reports whether the library has bytes to read without reading
// the socket (its reader's buffer, what WaitReadable or Writer.Hijack
// read), or must be called anyway (an error or the end of the stream was
// seen, a close in progress).
func (c *Conn) Buffered() bool {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.closing || c.br == nil || c.pend != nil || c.pendErr != nil || c.br.Buffered() > 0
}

// setEarly keeps the bytes that came with the upgrade request for the
// library's first read. They may hold pongs too (or the start of one),
// which answer nothing yet.
func (c *Conn) setEarly(early []byte) error {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	kept, _, err := c.in.filter(early)
	if len(kept) > 0 {
		c.pend = kept // not from pendBuffers: any size
	}
	return err
}

// SawPing reports whether the peer has sent a ping. The library answers
// pings, and a read that has handled one goes on to wait for a message
// inside the library: a peer that pings is read the library's way, from
// a goroutine of its own (see the broker's readLoop).
func (c *Conn) SawPing() bool {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.in.pings
}

// StopWaiting is called before the library's close handshake, which reads
// the socket from the closing goroutine: from then on WaitReadable and
// Buffered leave the socket and the library's reader alone.
func (c *Conn) StopWaiting() {
	c.rmu.Lock()
	c.closing = true
	c.rmu.Unlock()
}
