package wsbuf_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/ctibroker/ctibroker/internal/wsbuf"
)

// upgradeRequest is a client's WebSocket handshake, written by hand.
const upgradeRequest = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// handshake dials srv, sends the upgrade request by hand followed by
// first, and reads the 101: the client's connection, closed at cleanup.
func handshake(t *testing.T, srv *httptest.Server, first []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(append([]byte(upgradeRequest), first...)); err != nil {
		t.Fatal(err)
	}
	status, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.Contains(status, "101") {
		t.Fatalf("handshake: %q %v", status, err)
	}
	return c
}

// maskedText is a client's text frame (masked, as clients must send).
func maskedText(payload string) []byte {
	key := [4]byte{1, 2, 3, 4}
	f := []byte{0x81, 0x80 | byte(len(payload)), key[0], key[1], key[2], key[3]}
	for i := range len(payload) {
		f = append(f, payload[i]^key[i%4])
	}
	return f
}

// A client that sends its first frame together with the upgrade request
// (before the 101) must not lose it: net/http has already buffered it. A
// server waiting in WaitReadable must not wait for more: the frame is not
// on the socket any more.
func TestHijackKeepsBytesSentBeforeTheUpgrade(t *testing.T) {
	for _, tc := range []struct {
		name      string
		message   string
		waitFirst bool
	}{
		{"short", "hello", false},
		{"longest single-byte-length frame", strings.Repeat("x", 125), false},
		{"short, WaitReadable first", "hello", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan string, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var conn *wsbuf.Conn
				var wrap func(net.Conn) net.Conn // none: the plain small-buffer path
				if tc.waitFirst {
					wrap = func(c net.Conn) net.Conn { conn = wsbuf.NewConn(c); return conn }
				}
				ws, err := websocket.Accept(&wsbuf.Writer{ResponseWriter: w, Wrap: wrap}, r, nil)
				if err != nil {
					t.Errorf("accept: %v", err)
					return
				}
				defer ws.CloseNow()
				if tc.waitFirst {
					conn.WaitReadable()
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, b, err := ws.Read(ctx)
				if err != nil {
					t.Errorf("read: %v", err)
				}
				got <- string(b)
			}))
			defer srv.Close()
			handshake(t, srv, maskedText(tc.message))
			select {
			case m := <-got:
				if m != tc.message {
					t.Fatalf("server read %q, want %q", m, tc.message)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the frame sent with the upgrade request never arrived")
			}
		})
	}
}

// net/http can read a byte past the request in the background, and a
// client may send right after the 101, which goes out before the hijack: a
// pong split there must still be taken out, and the filter must stay in
// step with the frames after it.
func TestHijackFiltersEarlyBytes(t *testing.T) {
	var pongs atomic.Int32
	got := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wrap := func(c net.Conn) net.Conn {
			conn := wsbuf.NewConn(c)
			conn.OnPong = func() { pongs.Add(1) }
			return conn
		}
		ws, err := websocket.Accept(&wsbuf.Writer{ResponseWriter: w, Wrap: wrap}, r, nil)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		defer ws.CloseNow()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for range 2 {
			_, b, err := ws.Read(ctx)
			if err != nil {
				t.Errorf("read: %v", err)
				return
			}
			got <- string(b)
		}
	}))
	defer srv.Close()
	pong := wsbuf.ClientFrame(0x8A, []byte("early"))
	c := handshake(t, srv, pong[:3])
	rest := append(append(append([]byte(nil), pong[3:]...), maskedText("first")...), pong...)
	if _, err := c.Write(append(rest, maskedText("second")...)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"first", "second"} {
		select {
		case m := <-got:
			if m != want {
				t.Fatalf("server read %q, want %q", m, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%q never arrived", want)
		}
	}
	// The split pong ends on the socket, where it is reported, as the
	// second is.
	if n := pongs.Load(); n != 2 {
		t.Fatalf("%d pongs reported, want 2: the filter lost step with the frames", n)
	}
}

// Messages of every size around the buffers' go through intact, both
// ways, one at a time and many written at once: with net/http's buffers
// swapped for small ones (plain), and with a Conn under the library,
// waiting in WaitReadable before each read as the broker does.
func TestSmallBuffersCarryLargeMessages(t *testing.T) {
	sizes := []int{1, 20, wsbuf.ReaderSize - 6, wsbuf.ReaderSize, wsbuf.WriteSize - 1, wsbuf.ReadSize - 6,
		wsbuf.ReadSize, wsbuf.ReadSize + 1, 3 * wsbuf.ReadSize, 20_000}
	for _, withConn := range []bool{false, true} {
		t.Run(fmt.Sprintf("conn=%v", withConn), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var conn *wsbuf.Conn
				var wrap func(net.Conn) net.Conn
				if withConn {
					wrap = func(c net.Conn) net.Conn { conn = wsbuf.NewConn(c); return conn }
				}
				ws, err := websocket.Accept(&wsbuf.Writer{ResponseWriter: w, Wrap: wrap}, r, nil)
				if err != nil {
					return
				}
				ws.SetReadLimit(-1)
				defer ws.CloseNow()
				ctx := context.Background()
				for {
					if conn != nil {
						conn.WaitReadable()
					}
					typ, b, err := ws.Read(ctx)
					if err != nil {
						return
					}
					if ws.Write(ctx, typ, b) != nil {
						return
					}
				}
			}))
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
			if err != nil {
				t.Fatal(err)
			}
			ws.SetReadLimit(-1)
			defer ws.CloseNow()
			echo := func(msgs []string) {
				t.Helper()
				for _, m := range msgs {
					if err := ws.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
						t.Fatal(err)
					}
				}
				for _, m := range msgs {
					_, b, err := ws.Read(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if string(b) != m {
						t.Fatalf("%d bytes: echoed %d bytes, not the same", len(m), len(b))
					}
				}
			}
			var all []string
			for i, n := range sizes {
				msg := strings.Repeat(string(rune('a'+i)), n)
				echo([]string{msg})
				all = append(all, msg, msg[:n/2])
			}
			echo(all) // written back to back: messages share reads
		})
	}
}

// What a peer's pongs get, through the library and Conn, whether the server
// waits in the library's Read or in WaitReadable first: a valid one is
// reported and taken out of the stream (the message after it arrives); an
// invalid one fails the read, without a panic, and is not counted.
func TestConnReportsPongsAndRejectsBadOnes(t *testing.T) {
	type testCase struct {
		name      string
		pong      []byte
		pongs     int32
		wantErr   bool
		waitFirst bool
	}
	var cases []testCase
	for _, waitFirst := range []bool{false, true} {
		prefix := "library reads: "
		if waitFirst {
			prefix = "WaitReadable first: "
		}
		for _, tc := range []testCase{
			{"empty pong", wsbuf.ClientFrame(0x8A, nil), 1, false, false},
			{"pong with data", wsbuf.ClientFrame(0x8A, []byte("abc")), 1, false, false},
			{"longer than a control frame", wsbuf.ClientFrame(0x8A, bytes.Repeat([]byte("x"), 126)), 0, true, false},
			{"fragmented", wsbuf.ClientFrame(0x0A, nil), 0, true, false},
		} {
			tc.name, tc.waitFirst = prefix+tc.name, waitFirst
			cases = append(cases, tc)
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var pongs atomic.Int32
			type result struct {
				msg string
				err error
			}
			got := make(chan result, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var conn *wsbuf.Conn
				wrap := func(c net.Conn) net.Conn {
					conn = wsbuf.NewConn(c)
					conn.OnPong = func() { pongs.Add(1) }
					return conn
				}
				ws, err := websocket.Accept(&wsbuf.Writer{ResponseWriter: w, Wrap: wrap}, r, nil)
				if err != nil {
					t.Errorf("accept: %v", err)
					return
				}
				defer ws.CloseNow()
				if tc.waitFirst {
					conn.WaitReadable()
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, b, err := ws.Read(ctx)
				got <- result{string(b), err}
			}))
			defer srv.Close()
			c := handshake(t, srv, nil)
			if _, err := c.Write(append(tc.pong, maskedText("after")...)); err != nil {
				t.Fatal(err)
			}
			var r result
			select {
			case r = <-got:
			case <-time.After(5 * time.Second):
				t.Fatal("the server's read did not return")
			}
			switch {
			case tc.wantErr && r.err == nil:
				t.Fatalf("read %q, want an error", r.msg)
			case !tc.wantErr && (r.err != nil || r.msg != "after"):
				t.Fatalf("read %q, %v; want the message after the pong", r.msg, r.err)
			}
			if n := pongs.Load(); n != tc.pongs {
				t.Fatalf("%d pongs reported, want %d", n, tc.pongs)
			}
		})
	}
}
