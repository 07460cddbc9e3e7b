package broker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ctibroker/ctibroker/internal/redistest"
	"github.com/ctibroker/ctibroker/internal/testutil"
	"github.com/ctibroker/ctibroker/protocol"
)

// Multi-node tests: real ctibroker processes sharing a real redis-server.

var brokerBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// brokerBinary builds cmd/ctibroker once per test run.
func brokerBinary(tb testing.TB) string {
	tb.Helper()
	brokerBin.once.Do(func() {
		brokerBin.dir, brokerBin.err = os.MkdirTemp("", "ctibroker-test-bin")
		if brokerBin.err != nil {
			return
		}
		brokerBin.path = filepath.Join(brokerBin.dir, "ctibroker")
		out, err := exec.Command("go", "build", "-o", brokerBin.path, "../cmd/ctibroker").CombinedOutput()
		if err != nil {
			brokerBin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if brokerBin.err != nil {
		tb.Fatal(brokerBin.err)
	}
	return brokerBin.path
}

type node struct {
	tb   testing.TB
	id   string
	env  []string
	args []string // after "serve"
	addr string
	cmd  *exec.Cmd
	log  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startNode starts a broker process on a free loopback port.
func startNode(tb testing.TB, rs *redistest.Server, id string, env ...string) *node {
	tb.Helper()
	return startNodeYAML(tb, rs, id, "", env...)
}

// startNodeYAML starts a node with a configuration file as well (for what
// the environment cannot express, such as lists).
func startNodeYAML(tb testing.TB, rs *redistest.Server, id, yaml string, env ...string) *node {
	tb.Helper()
	var args []string
	if yaml != "" {
		path := filepath.Join(tb.TempDir(), "ctibroker.yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			tb.Fatal(err)
		}
		args = []string{"--config", path}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	n := &node{tb: tb, id: id, addr: addr, args: args, env: append(append(redisEnv(rs), "CTIBROKER_LISTEN="+addr, "CTIBROKER_NODE__ID="+id,
		"CTIBROKER_LOG__LEVEL=warn", "CTIBROKER_SESSION__GRACE=1m"), env...)}
	n.start()
	tb.Cleanup(n.kill)
	return n
}

// brokerlessEnviron is this process's environment without CTIBROKER_
// variables: the harness's own (CTIBROKER_REQUIRE_REDIS) would be rejected
// by the broker as an unknown configuration key, as it should be.
func brokerlessEnviron() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, EnvPrefix) {
			out = append(out, kv)
		}
	}
	return out
}

func (n *node) start() {
	n.tb.Helper()
	n.log = &syncBuffer{}
	n.cmd = exec.Command(brokerBinary(n.tb), append([]string{"serve"}, n.args...)...)
	n.cmd.Env = append(brokerlessEnviron(), n.env...)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		n.tb.Fatal(err)
	}
	b := n.broker()
	deadline := time.Now().Add(15 * time.Second)
	for b.readyz() != http.StatusOK {
		if time.Now().After(deadline) {
			n.tb.Fatalf("node %s not ready:\n%s", n.id, n.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL: no shutdown, no lease release.
func (n *node) kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	_ = n.cmd.Wait()
	n.cmd = nil
}

func (n *node) broker() *testBroker { return &testBroker{addr: n.addr} }

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	id, name string
	data     map[string]any
}

// follow opens GET /v1/agents/{agent}/events and streams its events.
func follow(tb testing.TB, addr, agent, lastEventID string) <-chan sseEvent {
	tb.Helper()
	return followRequest(tb, context.Background(), "http://"+addr+"/v1/agents/"+agent+"/events", lastEventID)
}

// followRequest streams the Server-Sent Events of url until the test ends.
func followRequest(tb testing.TB, parent context.Context, url, lastEventID string) <-chan sseEvent {
	tb.Helper()
	out, code := openStream(tb, parent, url, nil, lastEventID)
	if code != http.StatusOK {
		tb.Fatalf("events stream: HTTP %d", code)
	}
	return out
}

// openStream opens an SSE stream with headers; it returns the HTTP status,
// and the events when it is 200.
func openStream(tb testing.TB, parent context.Context, url string, header http.Header, lastEventID string) (<-chan sseEvent, int) {
	tb.Helper()
	ctx, cancel := context.WithCancel(parent)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil, resp.StatusCode
	}
	out := make(chan sseEvent, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.name = line[7:]
			case strings.HasPrefix(line, "data: "):
				_ = json.Unmarshal([]byte(line[6:]), &ev.data)
			case line == "" && ev.name != "":
				out <- ev
				ev = sseEvent{}
			}
		}
	}()
	tb.Cleanup(func() { cancel(); <-done })
	return out, http.StatusOK
}

// seqOf returns an event's seq.
func seqOf(m map[string]any) uint64 {
	f, _ := m["seq"].(float64)
	return uint64(f)
}

// recorder collects what an agent connection received: events by seq, and
// the requestIds of success replies.
type recorder struct {
	mu     sync.Mutex
	events map[uint64]string // seq -> name
	acked  map[string]uint64 // requestId -> highest seq received before its reply
	last   uint64
}

func newRecorder() *recorder {
	return &recorder{events: map[uint64]string{}, acked: map[string]uint64{}}
}

func (r *recorder) add(tb testing.TB, m map[string]any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if name, ok := m["name"].(string); ok {
		seq := seqOf(m)
		if prev, dup := r.events[seq]; dup && prev != name {
			tb.Errorf("seq %d delivered as %s and as %s", seq, prev, name)
		}
		r.events[seq] = name
		r.last = max(r.last, seq)
		return
	}
	if m["result"] == "success" {
		if id, ok := m["requestId"].(string); ok {
			r.acked[id] = r.last
		}
	}
}

func toggle(i int) (string, any) {
	if i%2 == 0 {
		return protocol.CmdChannelReady, nil
	}
	return protocol.CmdChannelNotReady, map[string]string{"reasoncode": []string{"lunch", "break"}[i/2%2]}
}

func TestClusterThreeNodesSeeTheSameEvents(t *testing.T) {
	rs := redistest.Start(t)
	nodes := []*node{startNode(t, rs, "n1"), startNode(t, rs, "n2"), startNode(t, rs, "n3")}
	streams := []<-chan sseEvent{follow(t, nodes[1].addr, "alice", ""), follow(t, nodes[2].addr, "alice", ""), follow(t, nodes[0].addr, "alice", "")}
	c, sid := attach(t, nodes[0].broker(), "agent=alice")
	rec := newRecorder()
	c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1001", "type": "TELEPHONY"}})
	c.request(t, protocol.CmdChannelActivate, sid+".p", nil)
	for i := range 40 {
		cmd, data := toggle(i)
		c.send(t, map[string]any{"command": cmd, "target": sid + ".p", "data": data, "requestId": strconv.Itoa(i)})
	}
	for n := 0; n < 40; {
		m := c.next(t)
		rec.add(t, m)
		if m["result"] != nil {
			n++
		}
	}
	// Every listener on every node sees the agent's events after it
	// subscribed, in seq order, each once.
	for i, s := range streams {
		var got []uint64
		deadline := time.After(10 * time.Second)
		for len(got) == 0 || got[len(got)-1] < rec.last {
			select {
			case ev := <-s:
				if ev.name == "reset" {
					t.Fatalf("listener %d: reset", i)
				}
				seq := seqOf(ev.data)
				if len(got) > 0 && seq != got[len(got)-1]+1 {
					t.Fatalf("listener %d: seq %d after %d", i, seq, got[len(got)-1])
				}
				if name := ev.data["name"]; rec.events[seq] != "" && name != rec.events[seq] {
					t.Fatalf("listener %d: seq %d is %v, the agent got %s", i, seq, name, rec.events[seq])
				}
				got = append(got, seq)
			case <-deadline:
				t.Fatalf("listener %d on %s stopped at %v, agent at %d", i, nodes[(i+1)%3].id, got, rec.last)
			}
		}
	}
}

func TestClusterNodeKilledMidTraffic(t *testing.T) {
	rs := redistest.Start(t)
	a, b := startNode(t, rs, "node-a"), startNode(t, rs, "node-b")
	listener := follow(t, b.addr, "alice", "")
	c, sid := attach(t, a.broker(), "agent=alice")
	rec := newRecorder()
	rec.add(t, map[string]any{"name": protocol.EvSessionInitialized, "seq": float64(1)})
	for _, r := range []struct {
		cmd, target string
		data        any
	}{
		{protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1001", "type": "TELEPHONY"}}},
		{protocol.CmdChannelActivate, sid + ".p", nil},
	} {
		c.send(t, map[string]any{"command": r.cmd, "target": r.target, "data": r.data})
		for {
			m := c.next(t)
			rec.add(t, m)
			if m["result"] == "success" {
				break
			}
			if m["result"] != nil {
				t.Fatal(m)
			}
		}
	}
	// Traffic: commands pipelined while node A is killed. A reader records
	// everything the agent got until the socket dies.
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for data := range c.msgs {
			var m map[string]any
			_ = json.Unmarshal(data, &m)
			rec.add(t, m)
		}
	}()
	sent := 0
	for ; sent < 400; sent++ {
		cmd, data := toggle(sent)
		req, _ := json.Marshal(map[string]any{"command": cmd, "target": sid + ".p", "data": data, "requestId": strconv.Itoa(sent)})
		if err := c.ws.Write(context.Background(), 1, req); err != nil {
			break
		}
		if sent == 60 {
			a.kill()
		}
		time.Sleep(time.Millisecond)
	}
	<-readerDone
	rec.mu.Lock()
	ackedBeforeKill := len(rec.acked)
	lastSeen := rec.last
	rec.mu.Unlock()
	if ackedBeforeKill < 10 {
		t.Fatalf("only %d commands acknowledged before the kill", ackedBeforeKill)
	}

	// The agent reconnects to node B: B waits out A's lease, restores the
	// session and replays exactly the events after the last one seen.
	c2 := mustDial(t, b.broker(), fmt.Sprintf("agent=alice&since=%d", lastSeen))
	for {
		m := c2.next(t)
		rec.add(t, m)
		if m["name"] == protocol.EvSessionInitialized {
			data := m["data"].(map[string]any)
			if m["target"] != sid || data["resumed"] != true {
				t.Fatalf("not the same session resumed: %v", m)
			}
			break
		}
	}
	// Every acknowledged command's events, and everything after, form one
	// contiguous seq range: nothing acknowledged was lost, nothing repeated.
	rec.mu.Lock()
	for seq := uint64(1); seq <= rec.last; seq++ {
		if _, ok := rec.events[seq]; !ok {
			t.Fatalf("seq %d missing after failover (last %d)", seq, rec.last)
		}
	}
	rec.mu.Unlock()
	// The session works on B; the listener on B saw every event once, in order.
	// "training" is a reason the traffic never used: certainly a change.
	if r := c2.request(t, protocol.CmdChannelNotReady, sid+".p", map[string]string{"reasoncode": "training"}); r["result"] != "success" {
		t.Fatalf("command on node B after failover: %v", r)
	}
	c2.until(t, isEvent(protocol.EvStateUpdated))
	final := drainListener(t, listener, rec.last+2)
	checkContiguous(t, final, 3) // the listener subscribed after the first events

	// Node A comes back: the agent moves back to it (A asks B to hand the
	// session over); seqs continue without duplicates.
	a.start()
	c3 := mustDial(t, a.broker(), fmt.Sprintf("agent=alice&since=%d", rec.last+2))
	if code := c2.waitClose(t); int(code) != int(protocol.CloseTakenOver) {
		t.Fatalf("node B's connection closed with %d, want %d", code, protocol.CloseTakenOver)
	}
	init := c3.until(t, isEvent(protocol.EvSessionInitialized))
	if init["target"] != sid || seqOf(init) != rec.last+3 {
		t.Fatalf("after moving back: %v (want seq %d)", init, rec.last+3)
	}
	if r := c3.request(t, protocol.CmdChannelReady, sid+".p", nil); r["result"] != "success" {
		t.Fatal(r)
	}
	checkContiguous(t, drainListener(t, listener, seqOf(init)+2), 3)
}

// drainListener reads a listener until it reached seq `until`.
func drainListener(t *testing.T, l <-chan sseEvent, until uint64) []uint64 {
	t.Helper()
	var got []uint64
	deadline := time.After(15 * time.Second)
	for len(got) == 0 || got[len(got)-1] < until {
		select {
		case ev := <-l:
			if ev.name == "reset" {
				t.Fatalf("listener got a reset: %v", ev)
			}
			got = append(got, seqOf(ev.data))
		case <-deadline:
			t.Fatalf("listener stopped at %v, want %d", got, until)
		}
	}
	t.Logf("listener drained %d events: %d..%d (until %d)", len(got), got[0], got[len(got)-1], until)
	return got
}

func checkContiguous(t *testing.T, seqs []uint64, minLen int) {
	t.Helper()
	if len(seqs) < minLen {
		t.Fatalf("only %d events: %v", len(seqs), seqs)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("listener seqs not contiguous at %d: %v", i, seqs)
		}
	}
}

// Two nodes race for the same session: connections to A and to B take it
// over from each other again and again while sending commands. The version
// check and the lease must keep one history: the stored stream is one
// contiguous seq range, and every event a client received is in it, unchanged.
func TestClusterNodesRaceForOneSession(t *testing.T) {
	rs := redistest.Start(t)
	env := []string{"CTIBROKER_LIMITS__HISTORY=100000", "CTIBROKER_LIMITS__COMMANDRATE=0"}
	nodes := []*node{startNode(t, rs, "race-a", env...), startNode(t, rs, "race-b", env...)}
	c, sid := attach(t, nodes[0].broker(), "agent=alice")
	c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1001", "type": "TELEPHONY"}})
	c.request(t, protocol.CmdChannelActivate, sid+".p", nil)
	_ = c.ws.CloseNow()

	var mu sync.Mutex
	seen := map[uint64]string{} // seq -> event name, as received by clients
	var wg sync.WaitGroup
	deadline := time.Now().Add(3 * time.Second)
	for w, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; time.Now().Before(deadline); round++ {
				cl, err := dial(t, n.broker(), "agent=alice", nil)
				if err != nil {
					continue
				}
				for i := range 20 {
					cmd, data := toggle(w + i)
					req, _ := json.Marshal(map[string]any{"command": cmd, "target": sid + ".p", "data": data})
					if cl.ws.Write(context.Background(), 1, req) != nil {
						break
					}
				}
				timeout := time.After(2 * time.Second)
			read:
				for {
					select {
					case data, ok := <-cl.msgs:
						if !ok {
							break read
						}
						var m map[string]any
						_ = json.Unmarshal(data, &m)
						if name, ok := m["name"].(string); ok {
							mu.Lock()
							if prev, dup := seen[seqOf(m)]; dup && prev != name {
								t.Errorf("seq %d seen as %s and as %s", seqOf(m), prev, name)
							}
							seen[seqOf(m)] = name
							mu.Unlock()
						}
					case <-timeout:
						break read
					}
				}
				_ = cl.ws.CloseNow()
			}
		}()
	}
	wg.Wait()
	rc := rs.Client()
	stream, err := rc.XRange(context.Background(), "ctibroker:sess:{"+sid+"}:ev", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	// An entry holds a commit's events, one field per seq, and is named
	// after its last; together the entries hold contiguous seqs.
	stored := map[uint64]string{}
	var last uint64
	for _, e := range stream {
		first := true
		for seq := last + 1; ; seq++ {
			v, ok := e.Values[strconv.FormatUint(seq, 10)]
			if !ok {
				break
			}
			ev := mustEvent(t, v)
			if seqOf(ev) != seq {
				t.Fatalf("field %d of entry %s holds seq %d", seq, e.ID, seqOf(ev))
			}
			stored[seq], last, first = ev["name"].(string), seq, false
		}
		if first || e.ID != strconv.FormatUint(last, 10)+"-0" || len(e.Values) == 0 {
			t.Fatalf("stream entry %s (after seq %d) does not continue the stored seqs: %v", e.ID, last, e.Values)
		}
	}
	if len(stored) < 20 {
		t.Fatalf("only %d events stored: the race did not happen", len(stored))
	}
	mu.Lock()
	defer mu.Unlock()
	for seq, name := range seen {
		if stored[seq] != name {
			t.Fatalf("a client received seq %d as %s, the store has %q: lost update", seq, name, stored[seq])
		}
	}
	t.Logf("%d events stored, %d distinct seen by the racing clients", len(stored), len(seen))
}

func mustEvent(t *testing.T, v any) map[string]any {
	var ev map[string]any
	if err := json.Unmarshal([]byte(v.(string)), &ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

// A supervisor on one node watches agents on another; when its node dies it
// resumes on the other node from a snapshot that says "resync".
func TestClusterSupervisorAcrossNodes(t *testing.T) {
	rs := redistest.Start(t)
	a, b := startNode(t, rs, "sv-a"), startNode(t, rs, "sv-b")
	sv, svsid := attach(t, a.broker(), "supervisor=boss")
	if r := sv.request(t, protocol.CmdSupervisorSubscribe, svsid, map[string]any{"teams": []string{"sales"}}); r["result"] != "success" {
		t.Fatal(r)
	}
	sv.until(t, isEvent(protocol.EvSupervisorSnapshot))

	alice, asid := attach(t, b.broker(), "agent=alice&teams=sales")
	alice.request(t, protocol.CmdAddChannel, asid, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}})
	alice.request(t, protocol.CmdChannelActivate, asid+".p", nil)
	status := func(m map[string]any) string {
		cur, _ := m["data"].(map[string]any)["current"].(map[string]any)
		return fmt.Sprint(cur["status"])
	}
	changed := sv.until(t, func(m map[string]any) bool {
		return m["name"] == protocol.EvSupervisorAgentChanged && status(m) == "not_ready"
	})
	if _, has := changed["seq"]; has {
		t.Fatalf("a live change carries a seq: %v", changed)
	}

	// The supervisor's node dies; it resumes on the other node (its only
	// session event was session.initialized, seq 1), and its subscription
	// starts again from a snapshot that says so.
	a.kill()
	sv2 := mustDial(t, b.broker(), "supervisor=boss&since=1")
	init := sv2.until(t, isEvent(protocol.EvSessionInitialized))
	if init["target"] != svsid || init["data"].(map[string]any)["resumed"] != true {
		t.Fatalf("supervisor session not resumed: %v", init)
	}
	snap := sv2.until(t, isEvent(protocol.EvSupervisorSnapshot))
	data := snap["data"].(map[string]any)
	if data["reason"] != "resync" || len(data["agents"].([]any)) != 1 {
		t.Fatalf("after failover: %v", snap)
	}
	// And keeps receiving changes.
	alice.request(t, protocol.CmdChannelReady, asid+".p", nil)
	sv2.until(t, func(m map[string]any) bool {
		return m["name"] == protocol.EvSupervisorAgentChanged && status(m) == "ready"
	})
}

// History is in Redis: a broker restart loses none of it.
func TestHistorySurvivesRestartWithRedis(t *testing.T) {
	rs := redistest.Start(t)
	acw := []string{"CTIBROKER_ACW__TELEPHONY__AUTO=true", "CTIBROKER_ACW__TELEPHONY__THEN=ready"}
	n := startNode(t, rs, "hist-1", acw...)
	_, sid := agentDayOn(t, n.broker(), "alice")
	_, before := getJSON(t, n.broker().url("/v1/agents/alice/history"), nil)
	n.kill()
	n2 := startNode(t, rs, "hist-2", acw...)
	code, after := getJSON(t, n2.broker().url("/v1/agents/alice/history"), nil)
	if code != 200 || num(after["total"]) != num(before["total"]) || num(before["total"]) < 5 {
		t.Fatalf("history before restart: %v\nafter: %d %v", before["total"], code, after)
	}
	if code, body := getJSON(t, n2.broker().url("/v1/sessions/"+sid), nil); code != 200 || len(body["interactions"].([]any)) != 1 {
		t.Fatalf("session after restart: %d %v", code, body)
	}
}

// An agent whose node is killed resumes on another node within 2 s, long
// before the session's lease (5 s here) would expire: the new node sees that
// the owner's liveness key is gone and takes the lease at once. Nothing
// acknowledged is lost.
func TestClusterFailoverWithinTwoSeconds(t *testing.T) {
	took := failover(t, redistest.Start(t), "CTIBROKER_REDIS__LEASETTL=5s")
	t.Logf("resumed on node B %v after the kill", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Fatalf("resumed %v after the kill, want at most 2s", took)
	}
}

// BenchmarkFailover measures kill -9 to the resumed session.initialized on
// another node, against the lease-expiry baseline (nodettl = leasettl: the
// liveness key lapses no sooner than the lease).
func BenchmarkFailover(b *testing.B) {
	rs := redistest.Start(b)
	for _, nodeTTL := range []string{"1s", "5s"} {
		b.Run("nodettl="+nodeTTL, func(b *testing.B) {
			var total time.Duration
			for b.Loop() {
				total += failover(b, rs, "CTIBROKER_REDIS__LEASETTL=5s", "CTIBROKER_REDIS__NODETTL="+nodeTTL,
					"CTIBROKER_REDIS__PREFIX=bench"+strconv.Itoa(rand.IntN(1e9))+":")
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/failover")
		})
	}
}

// failover runs an agent on node A, kills A and resumes on node B; it
// returns the time from the kill to the resumed session.initialized, after
// checking the session and its acknowledged state survived.
func failover(tb testing.TB, rs *redistest.Server, env ...string) time.Duration {
	tb.Helper()
	a, b := startNode(tb, rs, "node-a", env...), startNode(tb, rs, "node-b", env...)
	defer b.kill()
	c, sid := attach(tb, a.broker(), "agent=alice")
	c.request(tb, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1001", "type": "TELEPHONY"}})
	c.request(tb, protocol.CmdChannelActivate, sid+".p", nil)
	if r := c.request(tb, protocol.CmdChannelReady, sid+".p", nil); r["result"] != "success" {
		tb.Fatal(r)
	}
	last := seqOf(c.until(tb, isEvent(protocol.EvStateUpdated)))
	killed := time.Now()
	a.kill()
	took, m := resumeOn(tb, b, fmt.Sprintf("agent=alice&since=%d", last), killed)
	if m["target"] != sid || m["data"].(map[string]any)["resumed"] != true {
		tb.Fatalf("not the same session resumed: %v", m)
	}
	code, v := getJSON(tb, b.broker().url("/v1/agents/alice"), nil)
	if code != http.StatusOK || !strings.Contains(fmt.Sprint(v["channels"]), "status:ready") {
		tb.Fatalf("state after failover: %d %v", code, v)
	}
	return took
}

// resumeOn reconnects to node n until a session.initialized arrives, as a
// client does, and returns it with the time since from.
func resumeOn(t testing.TB, n *node, query string, from time.Time) (time.Duration, map[string]any) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		c, err := dial(t, n.broker(), query, nil)
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		for m := range c.msgs {
			var msg map[string]any
			_ = json.Unmarshal(m, &msg)
			if msg["name"] == protocol.EvSessionInitialized {
				return time.Since(from), msg
			}
		}
	}
	t.Fatal("never resumed")
	return 0, nil
}

// Interactions cross nodes with their session: a supervisor on another
// node sees an agent's call in its view, and when the agent's node dies
// the session resumes elsewhere with the call recreated before
// session.initialized. (Each node's simulated switch is its own, so node
// B's switch does not know node A's calls: with a real, shared switch the
// agent goes on controlling it; see the note in issue 15.)
func TestClusterInteractionsAcrossNodes(t *testing.T) {
	rs := redistest.Start(t)
	a, b := startNode(t, rs, "ix-a"), startNode(t, rs, "ix-b")
	alice, sid := attach(t, a.broker(), "agent=alice&teams=sales")
	alice.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1001", "type": "TELEPHONY"}})
	alice.request(t, protocol.CmdChannelActivate, sid+".p", map[string]any{"channeloptions": map[string]any{"queue": "sales"}})
	alice.request(t, protocol.CmdChannelReady, sid+".p", nil)
	code, resp := a.broker().simAt(t, "/v1/sim/calls", `{"queue":"sales","from":"+15550111"}`)
	if code != 202 {
		t.Fatalf("sim call: %d %v", code, resp)
	}
	ix := resp["interaction"].(string)
	eventually(t, "the offer", func() bool {
		return alice.request(t, protocol.CmdInteractionAccept, sid+".p."+ix, nil)["result"] == "success"
	})

	sv, svsid := attach(t, b.broker(), "supervisor=boss")
	if r := sv.request(t, protocol.CmdSupervisorSubscribe, svsid, map[string]any{"teams": []string{"sales"}}); r["result"] != "success" {
		t.Fatal(r)
	}
	snap := sv.until(t, isEvent(protocol.EvSupervisorSnapshot))
	agents := snap["data"].(map[string]any)["agents"].([]any)
	chans := agents[0].(map[string]any)["channels"].([]any)
	calls, _ := chans[0].(map[string]any)["interactions"].([]any)
	if len(calls) != 1 || calls[0].(map[string]any)["id"] != ix || calls[0].(map[string]any)["state"] != protocol.IxStarted {
		t.Fatalf("the supervisor on node B sees %v, want alice's call STARTED", chans)
	}

	a.kill()
	alice2 := mustDial(t, b.broker(), "agent=alice")
	var names []string
	var created map[string]any
	for len(names) == 0 || names[len(names)-1] != protocol.EvSessionInitialized {
		m := alice2.next(t)
		name, _ := m["name"].(string)
		names = append(names, name)
		if name == protocol.EvInteractionCreated {
			created = m["data"].(map[string]any)["interaction"].(map[string]any)
		}
		if name == protocol.EvSessionInitialized && m["data"].(map[string]any)["resumed"] != true {
			t.Fatalf("not resumed on node B: %v", m)
		}
	}
	if created == nil || created["id"] != ix || created["state"] != protocol.IxStarted || created["from"] != "+15550111" {
		t.Fatalf("on node B: %v, interaction %v; want the call recreated before session.initialized", names, created)
	}
}

// A supervisor on node B acts on an agent whose session node A owns: the
// action is forwarded to A through Redis, applied and stored there, and
// answered only then; the agent's desktop on A sees who did it.
func TestClusterSupervisorActsOnAnotherNode(t *testing.T) {
	rs := redistest.Start(t)
	// Alice has two desktops on node A (session.multiconnect share).
	a, b := startNode(t, rs, "act-a", shareEnv...), startNode(t, rs, "act-b", shareEnv...)
	alice, asid := attach(t, a.broker(), "agent=alice&teams=sales")
	alice.request(t, protocol.CmdAddChannel, asid, map[string]any{"channel": map[string]string{"id": "p", "name": "1", "type": "TELEPHONY"}})
	alice.request(t, protocol.CmdChannelActivate, asid+".p", nil)
	alice2, init2 := dialTab(t, a.broker(), "agent=alice&teams=sales", "second desktop")
	if init2["sessionId"] != asid {
		t.Fatalf("alice's second desktop: %v", init2)
	}
	sv, svsid := attach(t, b.broker(), "supervisor=boss")
	if r := sv.request(t, protocol.CmdSupervisorSubscribe, svsid, map[string]any{"agents": []string{"alice"}}); r["result"] != "success" {
		t.Fatalf("subscribe: %v", r)
	}
	var r map[string]any
	eventually(t, "the action to land", func() bool {
		r = sv.request(t, protocol.CmdSupervisorSetState, svsid, map[string]any{"agentId": "alice", "status": "ready"})
		f, _ := r["failure"].(map[string]any)
		return f == nil || f["code"] != "NOT_FOUND" // node B's board may not have seen alice yet
	})
	if r["result"] != "success" {
		t.Fatalf("setstate from node B: %v", r)
	}
	for i, desktop := range []*client{alice, alice2} {
		changed := desktop.until(t, func(m map[string]any) bool {
			d, _ := m["data"].(map[string]any)
			return m["name"] == protocol.EvChannelInfoChanged && d["changedBy"] != nil
		})
		data := changed["data"].(map[string]any)
		by, _ := data["changedBy"].(map[string]any)
		if data["agentStatus"].(map[string]any)["status"] != "ready" || by["id"] != "boss" || by["role"] != "supervisor" {
			t.Fatalf("alice's desktop %d on node A: %v", i+1, changed)
		}
	}
	// The supervisor's live view (on node B) shows who set her state.
	sv.until(t, func(m map[string]any) bool {
		if m["name"] != protocol.EvSupervisorAgentChanged {
			return false
		}
		cur, _ := m["data"].(map[string]any)["current"].(map[string]any)
		chans, _ := cur["channels"].([]any)
		if len(chans) == 0 {
			return false
		}
		by, _ := chans[0].(map[string]any)["changedBy"].(map[string]any)
		return by["id"] == "boss" && cur["status"] == "ready"
	})
	eventually(t, "changedBy in the view", func() bool {
		_, v := getJSON(t, b.broker().url("/v1/agents/alice"), nil)
		chans, _ := v["channels"].([]any)
		if len(chans) == 0 {
			return false
		}
		by, _ := chans[0].(map[string]any)["changedBy"].(map[string]any)
		return by["id"] == "boss"
	})
	// Her history names who made the change.
	eventually(t, "the history entry", func() bool {
		_, body := getJSON(t, a.broker().url("/v1/agents/alice/history"), nil)
		for _, iv := range body["list"].([]any) {
			if by, _ := iv.(map[string]any)["changedBy"].(map[string]any); by["id"] == "boss" && iv.(map[string]any)["status"] == "ready" {
				return true
			}
		}
		return false
	})
	if r := sv.request(t, protocol.CmdSupervisorSetState, svsid, map[string]any{"agentId": "alice", "status": "not_ready"}); r["result"] != "success" {
		t.Fatalf("not ready from node B: %v", r)
	}
	for i, desktop := range []*client{alice, alice2} {
		m := desktop.until(t, func(m map[string]any) bool {
			d, _ := m["data"].(map[string]any)
			st, _ := d["agentStatus"].(map[string]any)
			return m["name"] == protocol.EvChannelInfoChanged && st["status"] == "not_ready"
		})
		if by, _ := m["data"].(map[string]any)["changedBy"].(map[string]any); by["id"] != "boss" || m["data"].(map[string]any)["agentStatus"].(map[string]any)["lastReasonCode"] != "supervisor" {
			t.Fatalf("desktop %d after not ready: %v", i+1, m)
		}
	}
	if r := sv.request(t, protocol.CmdSupervisorLogout, svsid, map[string]any{"agentId": "alice"}); r["result"] != "success" {
		t.Fatalf("logout from node B: %v", r)
	}
	for i, desktop := range []*client{alice, alice2} {
		if m := desktop.until(t, func(m map[string]any) bool {
			d, _ := m["data"].(map[string]any)
			return m["name"] == protocol.EvChannelInfoChanged && d["state"] == "INACTIVE"
		}); m["data"].(map[string]any)["changedBy"] == nil {
			t.Fatalf("desktop %d after the logout: %v", i+1, m)
		}
	}
}

// An agent whose node died and who never comes back is adopted by a
// surviving node and logged out there after the grace period (its channels
// deactivated on the switch), instead of staying ready in every supervisor's
// view, and on the switch, until redis.sessionttl. An agent who came back meanwhile keeps its session.
func TestClusterOrphanedSessionExpiresOnASurvivingNode(t *testing.T) {
	rs := redistest.Start(t)
	env := []string{"CTIBROKER_SESSION__GRACE=2s"}
	a, b := startNode(t, rs, "node-a", env...), startNode(t, rs, "node-b", env...)
	ready := func(agent, extension string) uint64 {
		t.Helper()
		c, sid := attach(t, a.broker(), "agent="+agent)
		c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": extension, "type": "TELEPHONY"}})
		c.request(t, protocol.CmdChannelActivate, sid+".p", nil)
		if r := c.request(t, protocol.CmdChannelReady, sid+".p", nil); r["result"] != "success" {
			t.Fatal(r)
		}
		return seqOf(c.until(t, isEvent(protocol.EvStateUpdated)))
	}
	ready("gone", "1001")
	last := ready("back", "1002")
	a.kill()
	resumeOn(t, b, fmt.Sprintf("agent=back&since=%d", last), time.Now())

	// The lease lapses (1s), a sweep finds it (every second with a 2s
	// grace), the grace runs (2s): well within the wait.
	testutil.EventuallyWithin(t, 20*time.Second, "the orphaned agent logged out", func() bool {
		_, v := getJSON(t, b.broker().url("/v1/agents/gone"), nil)
		return v["status"] == "logged_out"
	})
	code, v := getJSON(t, b.broker().url("/v1/agents/back"), nil)
	if code != http.StatusOK || !strings.Contains(fmt.Sprint(v["channels"]), "status:ready") {
		t.Fatalf("the agent who came back: %d %v", code, v)
	}
}

// A Redis outage longer than a lease lapses every lease. The live owner
// re-takes its own, and no other node's orphan sweep adopts a session
// whose agent is still connected (the agent would be closed with 4001).
func TestClusterRedisOutageAdoptsNoLiveSession(t *testing.T) {
	rs := redistest.Start(t)
	env := []string{"CTIBROKER_SESSION__GRACE=2s"} // B sweeps every second
	a, _ := startNode(t, rs, "node-a", env...), startNode(t, rs, "node-b", env...)
	type agent struct {
		c   *client
		sid string
	}
	var agents []agent
	for i := range 20 {
		c, sid := attach(t, a.broker(), fmt.Sprintf("agent=a%d", i))
		c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": strconv.Itoa(2000 + i), "type": "TELEPHONY"}})
		agents = append(agents, agent{c, sid})
	}
	rs.Pause()
	time.Sleep(2 * time.Second) // the leases (1s) lapse
	rs.Resume()
	testutil.Eventually(t, "node A ready after the outage", func() bool { return a.broker().readyz() == http.StatusOK })
	// A window of four sweeps of node B, in which an adoption would close
	// a connection on A: nothing to poll for, so it is waited out.
	time.Sleep(4 * time.Second)
	for _, ag := range agents {
		select {
		case err := <-ag.c.closed:
			t.Fatalf("an agent connected to A was closed after the outage: %v", err)
		default:
		}
		if r := ag.c.request(t, protocol.CmdChannelActivate, ag.sid+".p", nil); r["result"] != "success" {
			t.Fatalf("a command on A after the outage: %v", r)
		}
	}
}
