package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ctibroker/ctibroker/internal/redistest"
	"github.com/ctibroker/ctibroker/internal/testutil"
	"github.com/ctibroker/ctibroker/protocol"
)

// testBroker is a real broker serving on a free loopback port.
type testBroker struct {
	srv  *Server
	addr string
	stop func()
	// simToken: the admin token simAt sends (auth.mode jwt).
	simToken string
	// simBase: where the sim's control API is ("http://host:port") when
	// the sim runs in an adapter process; empty: the broker's.
	simBase string
}

// startBroker starts a broker configured by environment-style assignments
// (CTIBROKER_SESSION__GRACE=1s) over the built-in defaults.
func startBroker(tb testing.TB, env ...string) *testBroker {
	tb.Helper()
	return startBrokerYAML(tb, "", env...)
}

// startBrokerYAML starts a broker with a YAML config file (for what the
// environment cannot express, such as lists) and environment assignments.
func startBrokerYAML(tb testing.TB, yaml string, env ...string) *testBroker {
	tb.Helper()
	return startBrokerLog(tb, zaptest.NewLogger(tb, zaptest.Level(zap.WarnLevel)), yaml, env...)
}

// startBrokerObserved starts a broker whose log (info and above) the test
// can inspect.
func startBrokerObserved(tb testing.TB, env ...string) (*testBroker, *observer.ObservedLogs) {
	tb.Helper()
	core, logs := observer.New(zap.InfoLevel)
	return startBrokerLog(tb, zap.New(core), "", env...), logs
}

func startBrokerLog(tb testing.TB, log *zap.Logger, yaml string, env ...string) *testBroker {
	tb.Helper()
	cfg, err := loadTB(tb, yaml, env)
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := New(cfg, log, log)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	b := &testBroker{srv: srv, addr: ln.Addr().String()}
	var stopped bool
	b.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("Serve: %v", err)
			}
		case <-time.After(cfg.Shutdown.Timeout + 5*time.Second):
			tb.Errorf("broker did not stop within shutdown.timeout")
		}
	}
	tb.Cleanup(b.stop)
	return b
}

func (b *testBroker) url(path string) string { return "http://" + b.addr + path }

// redisEnv configures a broker for the test's Redis, with short timers so
// that failures are detected quickly.
func redisEnv(rs *redistest.Server) []string {
	return []string{"CTIBROKER_REDIS__URL=" + rs.URL(), "CTIBROKER_REDIS__LEASETTL=1s",
		"CTIBROKER_REDIS__TIMEOUT=500ms", "CTIBROKER_REDIS__HEALTHINTERVAL=100ms"}
}

func (b *testBroker) readyz() int {
	resp, err := http.Get(b.url("/readyz"))
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// sim posts a control event to the simulated switch and returns the status
// and decoded body.
func (b *testBroker) sim(tb testing.TB, body string) (int, map[string]any) {
	tb.Helper()
	return b.simAt(tb, "/v1/sim/events", body)
}

// simAt posts body to a path of the sim control API.
func (b *testBroker) simAt(tb testing.TB, path, body string) (int, map[string]any) {
	tb.Helper()
	url := b.url(path)
	if b.simBase != "" {
		url = b.simBase + path
	}
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if b.simToken != "" {
		req.Header.Set("Authorization", "Bearer "+b.simToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// client is a real WebSocket client; a goroutine reads every frame into msgs.
type client struct {
	ws     *websocket.Conn
	msgs   chan []byte
	closed chan error // receives the read error once the connection ends
}

const msgTimeout = 5 * time.Second

func dial(tb testing.TB, b *testBroker, query string, header http.Header) (*client, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), msgTimeout)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, "ws://"+b.addr+"/v1/ws?"+query, &websocket.DialOptions{HTTPHeader: header})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial: HTTP %d: %w", resp.StatusCode, err)
		}
		return nil, err
	}
	ws.SetReadLimit(-1)
	c := &client{ws: ws, msgs: make(chan []byte, 4096), closed: make(chan error, 1)}
	go func() {
		for {
			_, data, err := ws.Read(context.Background())
			if err != nil {
				c.closed <- err
				close(c.msgs)
				return
			}
			c.msgs <- data
		}
	}()
	tb.Cleanup(func() { _ = ws.CloseNow() })
	return c, nil
}

func mustDial(tb testing.TB, b *testBroker, query string) *client {
	tb.Helper()
	c, err := dial(tb, b, query, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func (c *client) sendRaw(tb testing.TB, typ websocket.MessageType, data []byte) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), msgTimeout)
	defer cancel()
	if err := c.ws.Write(ctx, typ, data); err != nil {
		tb.Fatalf("write: %v", err)
	}
}

func (c *client) send(tb testing.TB, v any) {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	c.sendRaw(tb, websocket.MessageText, b)
}

// next returns the next message, failing after msgTimeout.
func (c *client) next(tb testing.TB) map[string]any {
	tb.Helper()
	data := c.nextRaw(tb)
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		tb.Fatalf("server sent invalid JSON %q: %v", data, err)
	}
	return m
}

// nextErr is next, with an error rather than a failed test.
func (c *client) nextErr() (map[string]any, error) {
	select {
	case data, ok := <-c.msgs:
		if !ok {
			return nil, fmt.Errorf("connection closed while waiting for a message: %v", <-c.closed)
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("server sent invalid JSON %q: %v", data, err)
		}
		return m, nil
	case <-time.After(msgTimeout):
		return nil, errors.New("no message within timeout")
	}
}

// nextRaw returns the next message as sent, failing after msgTimeout.
func (c *client) nextRaw(tb testing.TB) []byte {
	tb.Helper()
	select {
	case data, ok := <-c.msgs:
		if !ok {
			tb.Fatalf("connection closed while waiting for a message: %v", <-c.closed)
		}
		return data
	case <-time.After(msgTimeout):
		tb.Fatal("no message within timeout")
	}
	return nil
}

// until reads messages until one matches pred, returning it.
func (c *client) until(tb testing.TB, pred func(map[string]any) bool) map[string]any {
	tb.Helper()
	deadline := time.Now().Add(msgTimeout)
	for time.Now().Before(deadline) {
		if m := c.next(tb); pred(m) {
			return m
		}
	}
	tb.Fatal("no matching message within timeout")
	return nil
}

func isEvent(name string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["name"] == name }
}

// waitClose waits for the server to close the connection and returns its
// close code, draining messages sent before.
func (c *client) waitClose(tb testing.TB) websocket.StatusCode {
	tb.Helper()
	return c.waitCloseFrame(tb).Code
}

// waitCloseFrame is waitClose, returning the close frame's reason too.
func (c *client) waitCloseFrame(tb testing.TB) websocket.CloseError {
	tb.Helper()
	timeout := time.After(msgTimeout)
	for {
		select {
		case _, ok := <-c.msgs:
			if !ok {
				var ce websocket.CloseError
				if !errors.As(<-c.closed, &ce) {
					ce.Code = -1
				}
				return ce
			}
		case <-timeout:
			tb.Fatal("connection not closed within timeout")
		}
	}
}

// request sends a command and returns its reply, skipping events before it.
func (c *client) request(tb testing.TB, command, target string, data any) map[string]any {
	tb.Helper()
	req := map[string]any{"command": command, "target": target}
	if data != nil {
		req["data"] = data
	}
	c.send(tb, req)
	return c.until(tb, func(m map[string]any) bool { return m["result"] != nil })
}

// attach dials an agent and returns the client and its session id.
func attach(tb testing.TB, b *testBroker, query string) (*client, string) {
	tb.Helper()
	c, sid, _ := attachSeeing(tb, b, query)
	return c, sid
}

// attachSeeing is attach, also returning the messages that came before
// session.initialized.
func attachSeeing(tb testing.TB, b *testBroker, query string) (*client, string, []map[string]any) {
	tb.Helper()
	c := mustDial(tb, b, query)
	var before []map[string]any
	init := c.until(tb, func(m map[string]any) bool {
		if m["name"] == protocol.EvSessionInitialized {
			return true
		}
		before = append(before, m)
		return false
	})
	return c, init["target"].(string), before
}

var eventually = testutil.Eventually

func compactJSON(tb testing.TB, s string) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(s)); err != nil {
		tb.Fatalf("invalid JSON %q: %v", s, err)
	}
	return buf.String()
}

// listenedAddr waits for the broker's log line msg (a listener it bound
// itself, on port 0: a port picked free beforehand may be taken by another
// test's connection before the broker binds it) and returns its address.
func listenedAddr(tb testing.TB, logs *observer.ObservedLogs, msg string) string {
	tb.Helper()
	var addr string
	eventually(tb, msg, func() bool {
		for _, e := range logs.FilterMessage(msg).All() {
			if a, ok := e.ContextMap()["addr"].(string); ok {
				addr = a
				return true
			}
		}
		return false
	})
	return addr
}
