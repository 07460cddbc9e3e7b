package broker

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// WebSocket frames written byte by byte, as a misbehaving client would: the
// broker must answer what RFC 6455 says, with a close frame, never a bare
// TCP close, and only after the replies to what the client sent before.

const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
)

// rawWS is a client that writes frames by hand.
type rawWS struct {
	tb   testing.TB
	conn net.Conn
	br   *bufio.Reader
}

func dialRaw(tb testing.TB, b *testBroker, query string) *rawWS {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", b.addr, 2*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	fmt.Fprintf(conn, "GET /v1/ws?%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", query, b.addr, base64.StdEncoding.EncodeToString(key))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		tb.Fatalf("upgrade: %v %v", resp, err)
	}
	return &rawWS{tb: tb, conn: conn, br: br}
}

// frame encodes a client frame: rsv is the RSV bits (0x70 mask of the first
// byte), and masked says whether the payload is masked as clients must.
func frame(fin bool, rsv, opcode byte, masked bool, payload []byte) []byte {
	b0 := rsv | opcode
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	var m byte
	if masked {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		out = append(out, m|byte(n))
	case n < 1<<16:
		out = append(out, m|126, byte(n>>8), byte(n))
	default:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if !masked {
		return append(out, payload...)
	}
	key := []byte{0x12, 0x34, 0x56, 0x78}
	out = append(out, key...)
	for i, c := range payload {
		out = append(out, c^key[i%4])
	}
	return out
}

func (w *rawWS) write(p []byte) {
	w.tb.Helper()
	if _, err := w.conn.Write(p); err != nil {
		w.tb.Fatal(err)
	}
}

// readFrame reads one server frame; ok is false when the TCP connection
// ended first.
func (w *rawWS) readFrame() (opcode byte, payload []byte, ok bool) {
	w.tb.Helper()
	var h [2]byte
	if _, err := io.ReadFull(w.br, h[:]); err != nil {
		return 0, nil, false
	}
	if h[1]&0x80 != 0 {
		w.tb.Fatal("the server masked a frame")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(w.br, e[:]); err != nil {
			return 0, nil, false
		}
		n = uint64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(w.br, e[:]); err != nil {
			return 0, nil, false
		}
		n = binary.BigEndian.Uint64(e[:])
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(w.br, payload); err != nil {
		return 0, nil, false
	}
	return h[0] & 0x0f, payload, true
}

// readAll reads the server's frames until its close frame and returns the
// text messages and the close code; closeCode is 0 when the TCP connection
// ended without a close frame.
func (w *rawWS) readAll() (texts []string, closeCode int) {
	w.tb.Helper()
	_ = w.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		op, payload, ok := w.readFrame()
		if !ok {
			return texts, 0
		}
		switch op {
		case opText:
			texts = append(texts, string(payload))
		case opClose:
			if len(payload) < 2 {
				return texts, 1005
			}
			return texts, int(binary.BigEndian.Uint16(payload))
		}
	}
}

// sessionID reads up to session.initialized and returns the session id.
func (w *rawWS) sessionID() string {
	w.tb.Helper()
	_ = w.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		op, payload, ok := w.readFrame()
		if !ok {
			w.tb.Fatal("connection closed before session.initialized")
		}
		var m map[string]any
		if op == opText && json.Unmarshal(payload, &m) == nil && m["name"] == "session.initialized" {
			return m["target"].(string)
		}
	}
}

func TestRFC6455BadFramesGetACloseFrame(t *testing.T) {
	b := startBroker(t, "CTIBROKER_WS__MAXMESSAGE=1024")
	for _, tt := range []struct {
		name  string
		frame []byte
		want  int
	}{
		{"pong with RSV1 set", frame(true, 0x40, opPong, true, []byte("x")), 1002},
		{"pong with RSV3 set", frame(true, 0x10, opPong, true, nil), 1002},
		{"unmasked pong", frame(true, 0, opPong, false, []byte("x")), 1002},
		{"fragmented pong", frame(false, 0, opPong, true, []byte("x")), 1002},
		{"126-byte pong", frame(true, 0, opPong, true, make([]byte, 126)), 1002},
		{"126-byte ping", frame(true, 0, opPing, true, make([]byte, 126)), 1002},
		{"unmasked text", frame(true, 0, opText, false, []byte(`{}`)), 1002},
		{"unknown opcode 3", frame(true, 0, 0x3, true, []byte("x")), 1002},
		{"unknown opcode 11", frame(true, 0, 0xB, true, nil), 1002},
		{"continuation without a start", frame(true, 0, 0x0, true, []byte("x")), 1002},
		{"text over ws.maxmessage", frame(true, 0, opText, true, []byte(strings.Repeat("x", 2048))), 1009},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := dialRaw(t, b, "agent=a"+strconv.Itoa(len(tt.frame))+strconv.Itoa(int(tt.frame[0])))
			w.sessionID()
			w.write(tt.frame)
			if _, code := w.readAll(); code != tt.want {
				t.Fatalf("close %d, want %d (0: TCP closed without a close frame)", code, tt.want)
			}
		})
	}
}

// A client that sends commands and then closes, or breaks the protocol,
// gets every reply first and then the close frame, every time.
func TestRFC6455RepliesBeforeTheCloseFrame(t *testing.T) {
	b := startBroker(t, "CTIBROKER_LIMITS__COMMANDRATE=0")
	for _, tt := range []struct {
		name string
		last []byte
		want int
	}{
		{"close", frame(true, 0, opClose, true, []byte{0x03, 0xe8}), 1000},
		{"bad opcode", frame(true, 0, 0x3, true, nil), 1002},
		{"unmasked pong", frame(true, 0, opPong, false, nil), 1002},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 30 {
				w := dialRaw(t, b, fmt.Sprintf("agent=r%d-%d", len(tt.last)+int(tt.last[0]), i))
				sid := w.sessionID()
				var burst []byte
				for j := range 20 {
					burst = append(burst, frame(true, 0, opText, true, fmt.Appendf(nil,
						`{"command":"session.request.externalnotreadyreasons","target":%q,"requestId":"r%d"}`, sid, j))...)
				}
				w.write(append(burst, tt.last...))
				texts, code := w.readAll()
				replies := 0
				for _, m := range texts {
					if strings.Contains(m, `"result":"success"`) {
						replies++
					}
				}
				if replies != 20 || code != tt.want {
					t.Fatalf("connection %d: %d of 20 replies, then close %d (want %d; 0: no close frame)", i, replies, code, tt.want)
				}
			}
		})
	}
}
