// Package wsbuf is the socket under coder/websocket for connections that
// mostly sit idle: small buffers (Writer), coalesced writes, pings that
// cost no allocation, and a wait for the peer at the minimum goroutine
// stack (Conn).
//
// The library keeps the buffers Hijack returns for the connection's whole
// life. net/http's are 4 KiB each way, 8 KiB at every idle connection, and
// the messages here are a few hundred bytes:
//   - reads: a command arrives with one read system call; a larger message
//     is read straight into its own buffer. With a Conn, the library's
//     reader holds 32 bytes, and a read buffer is lent only while bytes
//     wait for the library;
//   - writes: the buffer only needs to hold a frame header (up to 14 bytes)
//     and the start of its payload; the rest is copied through. A caller
//     that writes many frames corks the Conn, or each frame costs a system
//     call or two.
package wsbuf

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
)

// Buffer sizes of a hijacked connection.
const (
	// ReadSize is the most one read system call takes; without Wrap it is
	// the size of the library's reader too.
	ReadSize = 512
	// ReaderSize is the library's reader's with a Conn, which lends a
	// ReadSize buffer only while bytes wait for the library (Conn.Read):
	// enough for a frame header.
	ReaderSize = 32
	WriteSize  = 64
)

// Writer is a ResponseWriter whose Hijack returns small buffers. Wrap, if
// set, wraps the hijacked connection; the library reads and writes the
// wrapper.
type Writer struct {
	http.ResponseWriter
	Wrap func(net.Conn) net.Conn
}

// Hijack implements http.Hijacker.
func (w *Writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, fmt.Errorf("response writer cannot be hijacked")
	}
	raw, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	// The handshake response may still sit in the hijacked writer.
	if err := brw.Writer.Flush(); err != nil {
		raw.Close()
		return nil, nil, fmt.Errorf("flush the handshake: %w", err)
	}
	// What the HTTP server read past the request must come first: a client
	// that sends right after the 101 (written before the hijack) can lose
	// its first byte to net/http's background read.
	var early []byte
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		early = bytes.Clone(b)
	}
	conn := raw
	if w.Wrap != nil {
		conn = w.Wrap(raw)
	}
	c, isConn := conn.(*Conn)
	size := ReadSize
	if isConn {
		size = ReaderSize
	}
	r := bufio.NewReaderSize(conn, size)
	if isConn {
		// Conn hands them to the library's first read, through its pong
		// filter, as every byte the library reads.
		c.br = r
		if err := c.setEarly(early); err != nil {
			raw.Close()
			return nil, nil, err
		}
	} else if len(early) > 0 {
		// The library keeps what our reader has buffered and reads the
		// connection after it, so the bytes go into our reader's buffer.
		r = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(early), conn), max(ReadSize, len(early)))
		if _, err := r.Peek(len(early)); err != nil {
			raw.Close()
			return nil, nil, fmt.Errorf("keep the early bytes: %w", err)
		}
	}
	return conn, bufio.NewReadWriter(r, bufio.NewWriterSize(conn, WriteSize)), nil
}
