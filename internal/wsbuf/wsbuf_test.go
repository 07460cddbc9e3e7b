package wsbuf_test

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/ctibroker/ctibroker/internal/wsbuf"
)

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
// (before the 101) must not lose it: net/http has already buffered it.
func TestHijackKeepsBytesSentBeforeTheUpgrade(t *testing.T) {
	for _, tc := range []struct {
		name    string
		message string
	}{
		{"short", "hello"},
		{"longest single-byte-length frame", strings.Repeat("x", 125)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan string, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ws, err := websocket.Accept(&wsbuf.Writer{ResponseWriter: w}, r, nil)
				if err != nil {
					t.Errorf("accept: %v", err)
					return
				}
				defer ws.CloseNow()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, b, err := ws.Read(ctx)
				if err != nil {
					t.Errorf("read: %v", err)
				}
				got <- string(b)
			}))
			defer srv.Close()
			c, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
			if _, err := c.Write(append([]byte(req), maskedText(tc.message)...)); err != nil {
				t.Fatal(err)
			}
			status, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || !strings.Contains(status, "101") {
				t.Fatalf("handshake: %q %v", status, err)
			}
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

// Messages larger than both buffers go through intact, both ways.
func TestSmallBuffersCarryLargeMessages(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(&wsbuf.Writer{ResponseWriter: w}, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ctx := context.Background()
		for {
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
	defer ws.CloseNow()
	for _, n := range []int{1, wsbuf.WriteSize - 1, wsbuf.ReadSize, wsbuf.ReadSize + 1, 20_000} {
		msg := strings.Repeat("m", n)
		if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != msg {
			t.Fatalf("%d bytes: echoed %d bytes, not the same", n, len(b))
		}
	}
}
