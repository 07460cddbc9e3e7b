package broker

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
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

// Every idle connection holds its buffers, so they are small:
//   - reads: a command is a few hundred bytes and arrives with one read
//     system call; a larger message is read straight into its own buffer;
//   - writes: the corked connection already coalesces a batch, so the
//     library's buffer only needs to hold a frame header (up to 14 bytes)
//     and the start of its payload; the rest is copied through.
const (
	readBufferSize  = 512
	writeBufferSize = 64
)

// corkingWriter hands the WebSocket library a corked connection when it
// hijacks the HTTP connection.
type corkingWriter struct {
	http.ResponseWriter
	conn *corkedConn
}

func (w *corkingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, fmt.Errorf("response writer cannot be hijacked")
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	// The handshake response may still sit in the hijacked writer.
	if err := brw.Writer.Flush(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	w.conn = &corkedConn{Conn: conn}
	// Small buffers: messages are a few hundred bytes, larger ones bypass
	// the buffers, and every idle connection pays for them. What the HTTP
	// server had already read stays in front of the connection.
	var src io.Reader = conn
	if n := brw.Reader.Buffered(); n > 0 { // rare: clients wait for the 101
		buffered, _ := brw.Reader.Peek(n)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(buffered)), conn)
	}
	r := bufio.NewReaderSize(src, readBufferSize)
	return w.conn, bufio.NewReadWriter(r, bufio.NewWriterSize(w.conn, writeBufferSize)), nil
}
