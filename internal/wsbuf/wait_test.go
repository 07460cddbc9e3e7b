package wsbuf

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctibroker/ctibroker/internal/testutil"
)

// tcpConn returns a Conn over the server end of a loopback TCP connection,
// with a reader as the library's (Writer.Hijack sets it), the client end,
// and the count of pongs reported.
func tcpConn(t testing.TB) (*Conn, net.Conn, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	var pongs atomic.Int32
	c := NewConn(server)
	c.br = bufio.NewReaderSize(c, ReadSize)
	c.OnPong = func() { pongs.Add(1) }
	return c, client, &pongs
}

// clientFrame is a masked frame with first byte b0 (FIN, opcode) and payload.
func clientFrame(b0 byte, payload []byte) []byte {
	key := [4]byte{9, 8, 7, 6}
	f := []byte{b0}
	if len(payload) < 126 {
		f = append(f, 0x80|byte(len(payload)))
	} else {
		f = append(f, 0x80|126, byte(len(payload)>>8), byte(len(payload)))
	}
	f = append(f, key[:]...)
	for i, c := range payload {
		f = append(f, c^key[i%4])
	}
	return f
}

// waitInBackground runs WaitReadable; the channel closes when it returns.
func waitInBackground(c *Conn) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.WaitReadable()
	}()
	return done
}

func write(t testing.TB, c net.Conn, p []byte) {
	t.Helper()
	if _, err := c.Write(p); err != nil {
		t.Fatal(err)
	}
}

func returned(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

func awaitReturn(t testing.TB, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("WaitReadable did not return")
	}
}

// An idle connection's pongs are taken while it waits, whole or in pieces,
// one write or many, and do not wake it; a message does, and reaches the
// library without them, read once.
func TestWaitReadableTakesPongsAndWakesForData(t *testing.T) {
	c, client, pongs := tcpConn(t)
	done := waitInBackground(c)
	pong := clientFrame(0x8A, nil)
	withData := clientFrame(0x8A, []byte("keepalive"))
	write(t, client, pong)
	write(t, client, append(append([]byte(nil), withData...), pong...))
	write(t, client, withData[:3])
	testutil.Eventually(t, "three pongs taken while waiting", func() bool { return pongs.Load() == 3 })
	write(t, client, withData[3:])
	testutil.Eventually(t, "the split pong taken", func() bool { return pongs.Load() == 4 })
	if returned(done) {
		t.Fatal("WaitReadable returned for pongs")
	}
	msg := clientFrame(0x81, []byte("hello"))
	write(t, client, append(append([]byte(nil), pong...), msg...))
	awaitReturn(t, done)
	if n := pongs.Load(); n != 5 {
		t.Fatalf("%d pongs reported, want 5", n)
	}
	if c.pend == nil {
		t.Fatal("the message was not read into pend")
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c.br, got); err != nil || string(got) != string(msg) {
		t.Fatalf("the library read %q, %v; want the message alone", got, err)
	}
	if c.pend != nil || c.pendBuf != nil {
		t.Fatal("the buffer was kept after the library read it all")
	}
}

// What wakes the waiter besides messages: the peer's ping (the library
// answers it; SawPing tells the reader), an invalid pong (the read fails),
// the end of the stream.
func TestWaitReadableWakesForPingsAndErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		send    []byte
		close   bool
		want    []byte // what the library then reads
		wantErr error
		ping    bool
	}{
		{name: "a ping", send: clientFrame(0x89, []byte("p")), want: clientFrame(0x89, []byte("p")), ping: true},
		{name: "a pong longer than a control frame", send: clientFrame(0x8A, make([]byte, 126)), wantErr: errBadPong},
		{name: "a message, then the end of the stream", send: clientFrame(0x81, nil), close: true, want: clientFrame(0x81, nil), wantErr: io.EOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, client, _ := tcpConn(t)
			done := waitInBackground(c)
			write(t, client, tc.send)
			if tc.close {
				client.Close()
			}
			awaitReturn(t, done)
			if got := c.SawPing(); got != tc.ping {
				t.Fatalf("SawPing %v, want %v", got, tc.ping)
			}
			got := make([]byte, len(tc.want))
			if _, err := io.ReadFull(c.br, got); err != nil || string(got) != string(tc.want) {
				t.Fatalf("the library read %q, %v; want %q", got, err, tc.want)
			}
			if tc.wantErr == nil {
				return
			}
			if tc.close {
				c.WaitReadable() // sees the end of the stream, which the next read returns
			}
			if _, err := c.br.ReadByte(); !errors.Is(err, tc.wantErr) {
				t.Fatalf("the library's next read: %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// Cases where the library has something to do at once.
func TestWaitReadableReturnsAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, c *Conn, client net.Conn)
	}{
		{"bytes sent with the upgrade request", func(t *testing.T, c *Conn, _ net.Conn) {
			if err := c.setEarly(clientFrame(0x81, []byte("e"))); err != nil {
				t.Fatal(err)
			}
		}},
		{"a close handshake", func(_ *testing.T, c *Conn, _ net.Conn) { c.StopWaiting() }},
		{"bytes in the library's buffer", func(t *testing.T, c *Conn, client net.Conn) {
			write(t, client, []byte("ab"))
			if _, err := c.br.ReadByte(); err != nil {
				t.Fatal(err)
			}
		}},
		{"the peer closed", func(_ *testing.T, _ *Conn, client net.Conn) { client.Close() }},
		{"the socket closed", func(_ *testing.T, c *Conn, _ net.Conn) { c.Close() }},
		{"no reader known (not hijacked)", func(_ *testing.T, c *Conn, _ net.Conn) { c.br = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, client, _ := tcpConn(t)
			tc.setup(t, c, client)
			awaitReturn(t, waitInBackground(c))
		})
	}
	t.Run("not a socket", func(t *testing.T) {
		c, _ := pipeConn(t)
		awaitReturn(t, waitInBackground(c))
	})
}

// A waiter parked when its socket is closed (abort) or the peer leaves.
func TestWaitReadableEndsWithTheConnection(t *testing.T) {
	for _, tc := range []struct {
		name  string
		close func(c *Conn, client net.Conn)
	}{
		{"socket closed", func(c *Conn, _ net.Conn) { c.Close() }},
		{"peer gone", func(_ *Conn, client net.Conn) { client.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, client, pongs := tcpConn(t)
			done := waitInBackground(c)
			write(t, client, clientFrame(0x8A, nil))
			testutil.Eventually(t, "the waiter took a pong", func() bool { return pongs.Load() == 1 })
			tc.close(c, client)
			awaitReturn(t, done)
		})
	}
}

// Taking a pong costs no allocation: an idle connection's pings make no
// garbage. make test runs it without the race detector, under which
// sync.Pool drops buffers on purpose.
func TestTakingPongsAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under -race; make test runs this without it")
	}
	c, client, pongs := tcpConn(t)
	msg := clientFrame(0x81, nil)
	write(t, client, msg)
	c.WaitReadable() // sets raw and readable
	if _, err := io.ReadFull(c.br, make([]byte, len(msg))); err != nil {
		t.Fatal(err)
	}
	pong := clientFrame(0x8A, nil)
	take := func(fd uintptr) { c.readable(fd) }
	allocs := testing.AllocsPerRun(50, func() {
		want := pongs.Load() + 1
		if _, err := client.Write(pong); err != nil {
			t.Fatal(err)
		}
		for pongs.Load() != want {
			if err := c.raw.Control(take); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per pong taken", allocs)
	}
}

// The point of WaitReadable: a goroutine parked in it keeps the runtime's
// minimum stack (2 KiB); one parked in the library's read path needs 4.
// It runs in a process of its own in which every goroutine starts at the
// minimum (the runtime otherwise starts them at the average size it saw in
// use, which the other tests raise), and make test runs it once more
// without the race detector, which doubles the stack guard.
func TestWaitersKeepTheMinimumStack(t *testing.T) {
	if raceEnabled {
		t.Skip("stack sizes under -race are not a normal build's; make test runs this without it")
	}
	if os.Getenv("WSBUF_STACK_TEST") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestWaitersKeepTheMinimumStack$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "WSBUF_STACK_TEST=1", "GODEBUG=adaptivestackstart=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return
	}
	const n = 200
	conns := make([]*Conn, n)
	for i := range conns {
		conns[i], _, _ = tcpConn(t)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	dones := make([]<-chan struct{}, n)
	for i, c := range conns {
		dones[i] = waitInBackground(c)
	}
	testutil.Eventually(t, "all waiting", func() bool {
		runtime.GC()
		runtime.ReadMemStats(&after)
		return after.StackInuse-before.StackInuse >= n*2048
	})
	if per := (after.StackInuse - before.StackInuse) / n; per > 2048+512 {
		t.Fatalf("%d bytes of stack per waiting goroutine, want the 2 KiB minimum", per)
	}
	for i, c := range conns {
		c.Close()
		awaitReturn(t, dones[i])
	}
}
