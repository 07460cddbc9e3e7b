package broker

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ctibroker/ctibroker/protocol"
)

// capListener caps the client connections the main listener holds, every
// kind together (WebSocket, event streams, REST keep-alive):
//   - per remote IP, limits.connectionsperip (0: no per-IP cap);
//   - in all, limits.connections, plus protocol.HealthReserve connections that only
//     health checks and metrics may use (see capped), so that the broker can
//     still be watched when it is full.
//
// A connection over a cap is answered with a canned HTTP 503 and closed,
// without reading its request. mu guards byIP; open is also read by capped.
type capListener struct {
	net.Listener
	max, perIP int

	open atomic.Int64
	mu   sync.Mutex
	byIP map[string]int
	// refusing bounds the goroutines answering refused connections.
	refusing chan struct{}
}

func newCapListener(ln net.Listener, max, perIP int) *capListener {
	return &capListener{Listener: ln, max: max, perIP: perIP, byIP: map[string]int{}, refusing: make(chan struct{}, protocol.RefuseConcurrency)}
}

// Accept returns the next connection within the caps.
func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c.RemoteAddr())
		l.mu.Lock()
		ok := l.open.Load() < int64(l.max+protocol.HealthReserve) && (l.perIP <= 0 || l.byIP[ip] < l.perIP)
		if ok {
			l.open.Add(1)
			l.byIP[ip]++
		}
		l.mu.Unlock()
		if ok {
			return &cappedConn{Conn: c, l: l, ip: ip}, nil
		}
		l.refuse(c)
	}
}

// full reports whether the connections beyond the reserve are taken.
func (l *capListener) full() bool { return l.open.Load() > int64(l.max) }

// refusal is the whole answer to a connection over a cap.
var refusal = func() []byte {
	body := fmt.Sprintf(`{"error":{"code":%q,"message":"too many connections; retry"}}`, protocol.CodeUnavailable)
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		protocol.CodeUnavailable.HTTPStatus(), http.StatusText(protocol.CodeUnavailable.HTTPStatus()), len(body), body)
}()

// refuse answers 503 and closes, within protocol.RefuseSeconds*time.Second. It reads the request's
// head first (up to protocol.RefuseReadBytes bytes): an HTTP client takes an answer that
// comes before its request for a broken connection, and closing with the
// request unread would reset the connection under the answer.
func (l *capListener) refuse(c net.Conn) {
	select {
	case l.refusing <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-l.refusing }()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(protocol.RefuseSeconds * time.Second))
		head := make([]byte, 0, protocol.RefuseReadBytes)
		buf := make([]byte, 512)
		for len(head) < protocol.RefuseReadBytes && !bytes.Contains(head, []byte("\r\n\r\n")) {
			n, err := c.Read(buf[:min(len(buf), protocol.RefuseReadBytes-len(head))])
			head = append(head, buf[:n]...)
			if err != nil {
				return
			}
		}
		if _, err := c.Write(refusal); err != nil {
			return
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
}

func (l *capListener) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open.Add(-1)
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
}

type cappedConn struct {
	net.Conn
	l    *capListener
	ip   string
	once sync.Once
}

func (c *cappedConn) Close() error {
	c.once.Do(func() { c.l.release(c.ip) })
	return c.Conn.Close()
}

func remoteIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// healthPaths may use the reserve above limits.connections.
var healthPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// capped refuses every request but health checks and metrics with 503
// while the listener is full.
func capped(l *capListener, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if l.full() && !healthPaths[r.URL.Path] {
			w.Header().Set("Retry-After", "5")
			writeError(w, protocol.CodeUnavailable, "too many connections; retry")
			return
		}
		h.ServeHTTP(w, r)
	})
}
