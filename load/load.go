// Package load generates load against a broker over real WebSockets and
// measures it: agents cycling ready / not ready / after-call work, optional
// supervisors watching everything, and a bare-WebSocket echo baseline
// answering with the same message sizes, so that every figure can be given
// as a ratio to what the machine can do at all.
package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/coder/websocket"
	"golang.org/x/time/rate"
)

// Config describes a run.
type Config struct {
	// URL of the WebSocket endpoint, e.g. ws://127.0.0.1:8080/v1/ws. Loopback only.
	URL string
	// SupervisorURL, when set, is where supervisors connect (another node
	// of the same cluster: changes then cross Redis).
	SupervisorURL string
	Agents        int
	Supervisors   int
	// Rate is the total commands per second over all agents; 0: as fast as
	// each agent's round trips allow.
	Rate     float64
	Duration time.Duration
	// Sources spreads connections over 127.0.0.1 .. 127.0.0.<Sources>, for
	// more than one range of ephemeral ports.
	Sources int
	// Idle agents connect and add a channel, then send nothing.
	Idle bool
	// Interactions: instead of cycling statuses, each agent runs call
	// flows: channel.dial (until the far end answers), interaction.hold,
	// interaction.retrieve, interaction.release (the broker's sim must
	// answer dials at once: adapter.sim.dialanswer 0s).
	Interactions bool
	// Prefix of the agent ids (several runs against one broker).
	Prefix string
	// OnReady, when set, runs once every connection is set up, before the
	// measured period (to read the broker's memory with them open).
	OnReady func()
	// Batch offers the subprotocol ctibroker.v1.batch: the broker may then
	// put several messages in one frame, separated by newlines.
	Batch bool
	// Compact: supervisors subscribe with "format": "compact".
	Compact bool
	// MetricsURL, when set, is sampled during the measured period: the
	// broker's CPU per command and per supervisor delivery, its highest RSS.
	MetricsURL string
}

// Report is what a run measured.
type Report struct {
	Mode             string           `json:"mode"`
	Agents           int              `json:"agents"`
	Supervisors      int              `json:"supervisors"`
	Connected        int64            `json:"connected"`
	ConnectFailures  int64            `json:"connectFailures"`
	Seconds          float64          `json:"seconds"`
	Commands         int64            `json:"commands"`
	CommandsPerSec   float64          `json:"commandsPerSec"`
	RTT              Quantiles        `json:"rttMicros"`
	Failures         map[string]int64 `json:"failures"`
	AgentEvents      int64            `json:"agentEvents"`
	AgentEventsPS    float64          `json:"agentEventsPerSec"`
	AgentDelivery    Quantiles        `json:"agentDeliveryMillis"`
	SupEvents        int64            `json:"supervisorEvents"`
	SupEventsPS      float64          `json:"supervisorEventsPerSec"`
	SupDelivery      Quantiles        `json:"supervisorDeliveryMillis"`
	SupExpected      int64            `json:"supervisorChangesExpected"`
	SupLost          int64            `json:"supervisorChangesLost"`
	ReplyBytes       float64          `json:"avgReplyBytes"`
	EventBytes       float64          `json:"avgEventBytes"`
	EventsPerCommand float64          `json:"eventsPerCommand"`
	Broker           *BrokerMemory    `json:"broker,omitempty"`
	// SupConflated counts changes a supervisor received folded into a later
	// one ("conflated": n); SupResyncs the resync snapshots received while
	// measuring (they replace everything before them).
	SupConflated  int64   `json:"supervisorChangesConflated"`
	SupEventBytes float64 `json:"avgSupervisorEventBytes"`
	SupResyncs    int64   `json:"supervisorResyncs"`
	// Batched: the broker agreed to batch frames.
	Batched bool `json:"batched"`
	// From MetricsURL: the broker's CPU time in the measured period (and
	// the drain), per command and per supervisor delivery, and its highest
	// RSS.
	BrokerCPUSeconds float64 `json:"brokerCpuSeconds,omitempty"`
	CPUPerCommand    float64 `json:"cpuMicrosPerCommand,omitempty"`
	CPUPerDelivery   float64 `json:"cpuMicrosPerSupervisorDelivery,omitempty"`
	RSSMax           float64 `json:"rssMaxBytes,omitempty"`
}

// Quantiles of a histogram.
type Quantiles struct {
	P50  int64 `json:"p50"`
	P90  int64 `json:"p90"`
	P99  int64 `json:"p99"`
	P999 int64 `json:"p99_9"`
	Max  int64 `json:"max"`
	N    int64 `json:"n"`
}

func quantiles(h *hdrhistogram.Histogram) Quantiles {
	return Quantiles{P50: h.ValueAtQuantile(50), P90: h.ValueAtQuantile(90), P99: h.ValueAtQuantile(99),
		P999: h.ValueAtQuantile(99.9), Max: h.Max(), N: h.TotalCount()}
}

// CheckLoopback refuses any target that is not on this machine's loopback.
func CheckLoopback(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("url: %w", err)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("url: %q is not a loopback address; this tool only loads the local machine", host)
	}
	return nil
}

// message is what the tool reads of every message (as a client would).
type message struct {
	Command   string `json:"command"`
	Result    string `json:"result"`
	Target    string `json:"target"`
	Name      string `json:"name"`
	Seq       uint64 `json:"seq"`
	Timestamp int64  `json:"timestamp"`
	// Data is kept raw: only the interaction flow reads it.
	Data    json.RawMessage `json:"data"`
	Failure *struct {
		Code string `json:"code"`
	} `json:"failure"`
}

// stats are shared by all workers.
type stats struct {
	mu                      sync.Mutex
	rtt, agentLat, supLat   *hdrhistogram.Histogram
	failures                map[string]int64
	commands, agentEvents   atomic.Int64
	supEvents, supConflated atomic.Int64
	supBytes                atomic.Int64
	supResyncs              atomic.Int64
	batched                 atomic.Bool
	measuring               atomic.Bool  // the measured period started
	measuredUpdates         atomic.Int64 // state.updated received by agents since
	replyBytes, eventBytes  atomic.Int64
	replies                 atomic.Int64
	connected, connectFails atomic.Int64
}

func newStats() *stats {
	return &stats{rtt: hdrhistogram.New(1, 60_000_000, 3), agentLat: hdrhistogram.New(0, 600_000, 3),
		supLat: hdrhistogram.New(0, 600_000, 3), failures: map[string]int64{}}
}

func (s *stats) record(h *hdrhistogram.Histogram, v int64) {
	s.mu.Lock()
	_ = h.RecordValue(max(v, 0))
	s.mu.Unlock()
}

func (s *stats) fail(code string) {
	s.mu.Lock()
	s.failures[code]++
	s.mu.Unlock()
}

// Subprotocols the tool offers with Config.Batch, in order of preference.
const (
	SubprotocolBatch = "ctibroker.v1.batch"
	Subprotocol      = "ctibroker.v1"
)

// conn is a client connection. When the server chose SubprotocolBatch a
// frame may hold several messages, separated by newlines.
type conn struct {
	ws    *websocket.Conn
	batch bool
	buf   []byte // the last frame read
	rest  []byte // what is left of it to return
	at    int64  // when it was read, Unix ms: its messages arrived together
}

// dial connects from source address 127.0.0.<1+i%sources>.
func dial(ctx context.Context, rawURL string, i, sources int, query string, batch bool) (*conn, error) {
	src := net.IPv4(127, 0, 0, byte(1+i%max(sources, 1)))
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 10 * time.Second}
	client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	opts := &websocket.DialOptions{HTTPClient: client}
	if batch {
		opts.Subprotocols = []string{SubprotocolBatch, Subprotocol}
	}
	for {
		ws, resp, err := websocket.Dial(ctx, rawURL+"?"+query, opts)
		if err == nil {
			ws.SetReadLimit(1 << 22)
			return &conn{ws: ws, batch: ws.Subprotocol() == SubprotocolBatch}, nil
		}
		// A broker that paces its upgrades (limits.upgradespercpu) answers
		// 503 with Retry-After when the queue is long: come back then, as a
		// desktop does.
		wait, ok := retryAfter(resp)
		if !ok {
			return nil, err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, err
		}
	}
}

// retryAfter is how long a 503 answer asks to wait before a retry (1 s when
// it does not say, at most a minute); false for any other answer.
func retryAfter(resp *http.Response) (time.Duration, bool) {
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		return 0, false
	}
	n, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || n < 1 {
		n = 1
	}
	return time.Duration(min(n, 60)) * time.Second, true
}

// next returns the next message. It is valid until the next call: frames
// are read into a buffer the connection reuses (the tool must not spend the
// machine's CPU the broker is measured on).
func (c *conn) next(ctx context.Context) ([]byte, error) {
	for len(c.rest) == 0 {
		_, r, err := c.ws.Reader(ctx)
		if err != nil {
			return nil, err
		}
		c.buf = c.buf[:0]
		c.at = time.Now().UnixMilli()
		for {
			if len(c.buf) == cap(c.buf) {
				c.buf = append(c.buf, 0)[:len(c.buf)]
			}
			n, err := r.Read(c.buf[len(c.buf):cap(c.buf)])
			c.buf = c.buf[:len(c.buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, err
			}
		}
		if !c.batch {
			return c.buf, nil
		}
		c.rest = c.buf
	}
	m, rest, _ := bytes.Cut(c.rest, []byte{'\n'})
	c.rest = rest
	return m, nil
}

func (c *conn) read(ctx context.Context) (message, int, error) {
	b, err := c.next(ctx)
	if err != nil {
		return message{}, 0, err
	}
	var m message
	if err := json.Unmarshal(b, &m); err != nil {
		return m, len(b), fmt.Errorf("invalid JSON from the server: %w", err)
	}
	return m, len(b), nil
}

func (c *conn) send(ctx context.Context, v any) error {
	b, _ := json.Marshal(v)
	return c.ws.Write(ctx, websocket.MessageText, b)
}

var errClosed = errors.New("connection closed")

// Run runs the load against a broker and measures it.
func Run(ctx context.Context, cfg Config) (Report, error) {
	for _, u := range []string{cfg.URL, cfg.SupervisorURL} {
		if err := CheckLoopback(u); u != "" && err != nil {
			return Report{}, err
		}
	}
	if cfg.Duration <= 0 || cfg.Duration > time.Hour {
		return Report{}, errors.New("duration must be between 0 and 1h")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "load" + strconv.FormatInt(time.Now().UnixNano()%1e6, 10)
	}
	st := newStats()
	limiter := commandLimiter(cfg.Rate)
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration+2*time.Minute) // setup + run + drain, bounded
	defer cancel()

	// Agents log in and set up first; then supervisors subscribe (the agents
	// are in their snapshot); then the measured period starts, and every
	// state change from then on is a change every supervisor must receive.
	var agentsReady sync.WaitGroup
	start := make(chan struct{})
	deadline := make(chan struct{})
	var agentWG sync.WaitGroup
	for i := range cfg.Agents {
		agentWG.Add(1)
		agentsReady.Add(1)
		go func() {
			defer agentWG.Done()
			agent(runCtx, cfg, i, st, limiter, &agentsReady, start, deadline)
		}()
	}
	agentsReady.Wait()

	stopSup := make(chan struct{})
	var supWG, supSetup sync.WaitGroup
	supCounts := make([]atomic.Int64, cfg.Supervisors)
	for i := range cfg.Supervisors {
		supWG.Add(1)
		supSetup.Add(1)
		go func() {
			defer supWG.Done()
			supervisor(runCtx, cfg, i, st, &supCounts[i], &supSetup, stopSup)
		}()
	}
	supSetup.Wait()
	if cfg.OnReady != nil {
		cfg.OnReady()
	}
	setupCommands := st.commands.Load()
	mon := startMonitor(runCtx, cfg.MetricsURL)
	st.measuring.Store(true)
	t0 := time.Now()
	close(start)
	time.AfterFunc(cfg.Duration, func() { close(deadline) })
	agentWG.Wait()
	elapsed := time.Since(t0)

	// Let supervisors drain what is in flight, then stop them.
	expected := st.measuredUpdates.Load()
	drainUntil := time.Now().Add(10 * time.Second)
	for cfg.Supervisors > 0 && time.Now().Before(drainUntil) {
		done := true
		for i := range supCounts {
			if supCounts[i].Load() < expected {
				done = false
			}
		}
		if done {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stopSup)
	supWG.Wait()
	var cpu, rssMax float64
	if mon != nil {
		cpu, rssMax = mon.finish(ctx)
	}

	r := st.report("broker", cfg, elapsed, st.commands.Load()-setupCommands, cpu, rssMax)
	if cfg.Supervisors > 0 {
		r.SupExpected = expected * int64(cfg.Supervisors)
		for i := range supCounts {
			r.SupLost += max(expected-supCounts[i].Load(), 0)
		}
	}
	r.SupConflated, r.SupResyncs, r.Batched = st.supConflated.Load(), st.supResyncs.Load(), st.batched.Load()
	if r.SupEvents > 0 {
		r.SupEventBytes = float64(st.supBytes.Load()) / float64(r.SupEvents)
	}
	return r, nil
}

// commandLimiter paces a run's commands at r per second in all, in bursts of
// at most a hundredth of a second's; nil (as fast as they go) when r is 0.
func commandLimiter(r float64) *rate.Limiter {
	if r <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(r), max(int(r/100), 1))
}

// report is what every closed-loop run reports from its stats: the counts,
// rates and latencies, message sizes, and the server's CPU per command and
// per supervisor delivery. commands is the measured period's.
func (st *stats) report(mode string, cfg Config, elapsed time.Duration, commands int64, cpu, rssMax float64) Report {
	r := Report{Mode: mode, Agents: cfg.Agents, Supervisors: cfg.Supervisors, Seconds: elapsed.Seconds(),
		Connected: st.connected.Load(), ConnectFailures: st.connectFails.Load(), Failures: st.failures, Commands: commands}
	r.CommandsPerSec = float64(r.Commands) / elapsed.Seconds()
	r.RTT, r.AgentDelivery, r.SupDelivery = quantiles(st.rtt), quantiles(st.agentLat), quantiles(st.supLat)
	r.AgentEvents, r.SupEvents = st.agentEvents.Load(), st.supEvents.Load()
	r.AgentEventsPS, r.SupEventsPS = float64(r.AgentEvents)/elapsed.Seconds(), float64(r.SupEvents)/elapsed.Seconds()
	if n := st.replies.Load(); n > 0 {
		r.ReplyBytes = float64(st.replyBytes.Load()) / float64(n)
		r.EventsPerCommand = float64(r.AgentEvents) / float64(n)
	}
	if r.AgentEvents > 0 {
		r.EventBytes = float64(st.eventBytes.Load()) / float64(r.AgentEvents)
	}
	r.BrokerCPUSeconds, r.RSSMax = cpu, rssMax
	if r.Commands > 0 {
		r.CPUPerCommand = cpu / float64(r.Commands) * 1e6
	}
	if r.SupEvents > 0 {
		r.CPUPerDelivery = cpu / float64(r.SupEvents) * 1e6
	}
	return r
}

// agent: connect, add and activate a channel, then cycle statuses.
func agent(ctx context.Context, cfg Config, i int, st *stats, limiter *rate.Limiter, ready *sync.WaitGroup, start, deadline <-chan struct{}) {
	readyOnce := sync.OnceFunc(ready.Done)
	defer readyOnce()
	id := fmt.Sprintf("%s-%d", cfg.Prefix, i)
	c, err := dial(ctx, cfg.URL, i, cfg.Sources, "agent="+id, cfg.Batch)
	if err != nil {
		st.connectFails.Add(1)
		return
	}
	defer c.ws.CloseNow()
	st.connected.Add(1)
	if c.batch {
		st.batched.Store(true)
	}
	sid := ""
	for sid == "" {
		m, _, err := c.read(ctx)
		if err != nil {
			return
		}
		if m.Name == "session.initialized" {
			sid = m.Target
		}
	}
	// roundTrip sends one command and reads until its reply, recording the
	// events that arrive on the way (the last one in seen).
	var reply, seen message
	roundTrip := func(v any) error {
		t := time.Now()
		if err := c.send(ctx, v); err != nil {
			return err
		}
		for {
			m, n, err := c.read(ctx)
			if err != nil {
				return err
			}
			if m.Result == "" {
				seen = m
				st.agentEvents.Add(1)
				st.eventBytes.Add(int64(n))
				if m.Name == "state.updated" && st.measuring.Load() {
					st.measuredUpdates.Add(1)
				}
				if st.measuring.Load() {
					st.record(st.agentLat, time.Now().UnixMilli()-m.Timestamp)
				}
				continue
			}
			reply = m
			st.commands.Add(1)
			st.replies.Add(1)
			st.replyBytes.Add(int64(n))
			st.record(st.rtt, time.Since(t).Microseconds())
			if m.Failure != nil {
				st.fail(m.Failure.Code)
			}
			return nil
		}
	}
	channel := sid + ".p"
	if roundTrip(map[string]any{"command": "session.addchannel", "target": sid, "data": map[string]any{"channel": map[string]string{"id": "p", "name": id, "type": "TELEPHONY"}}}) != nil {
		return
	}
	if !cfg.Idle && roundTrip(map[string]any{"command": "channel.activate", "target": channel}) != nil {
		return
	}
	// The set-up's last events follow its reply: read them now, so that
	// they are not taken for changes of the measured period.
	for !cfg.Idle {
		m, n, err := c.read(ctx)
		if err != nil {
			return
		}
		st.agentEvents.Add(1)
		st.eventBytes.Add(int64(n))
		if m.Name == "state.updated" {
			break
		}
	}
	readyOnce()
	select {
	case <-start:
	case <-ctx.Done():
		return
	}
	if cfg.Idle {
		// Keep reading (pings need a reader) until the end.
		rctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-deadline:
			case <-ctx.Done():
			}
			cancel()
		}()
		for {
			if _, err := c.next(rctx); err != nil {
				return
			}
		}
	}
	cycle := []map[string]any{
		{"command": "channel.ready", "target": channel},
		{"command": "channel.notready", "target": channel, "data": map[string]string{"reasoncode": "lunch"}},
		{"command": "channel.notready", "target": channel, "data": map[string]string{"reasoncode": "acw"}},
	}
	if cfg.Interactions {
		cycle = nil
	}
	ix := "" // the interaction of the flow in progress
	for k := 0; ; k++ {
		select {
		case <-deadline:
			// Read what is still in flight (the last command's events).
			dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			for {
				m, n, err := c.read(dctx)
				if err != nil {
					break
				}
				if m.Result == "" {
					st.agentEvents.Add(1)
					st.eventBytes.Add(int64(n))
					if m.Name == "state.updated" {
						st.measuredUpdates.Add(1)
					}
				}
			}
			cancel()
			_ = c.ws.Close(websocket.StatusNormalClosure, "")
			return
		default:
		}
		if limiter != nil {
			if err := limiter.Wait(ctx); err != nil {
				return
			}
		}
		if !cfg.Interactions {
			if roundTrip(cycle[k%len(cycle)]) != nil {
				return
			}
			continue
		}
		// dial, then wait for the answer; hold, retrieve, release.
		var cmd map[string]any
		switch k % 4 {
		case 0:
			cmd = map[string]any{"command": "channel.dial", "target": channel, "data": map[string]string{"destination": "+15550100"}}
		case 1:
			cmd = map[string]any{"command": "interaction.hold", "target": ix}
		case 2:
			cmd = map[string]any{"command": "interaction.retrieve", "target": ix}
		case 3:
			cmd = map[string]any{"command": "interaction.release", "target": ix}
		}
		if roundTrip(cmd) != nil {
			return
		}
		if k%4 == 0 {
			var d struct{ Interaction string }
			_ = json.Unmarshal(reply.Data, &d)
			ix = d.Interaction
			for seen.Name != "interaction.infochanged" { // answered
				m, n, err := c.read(ctx)
				if err != nil {
					return
				}
				seen = m
				st.agentEvents.Add(1)
				st.eventBytes.Add(int64(n))
			}
			seen = message{}
		}
	}
}

// scanEvent reads an event's name and its timestamp (the broker writes it
// last) without decoding the whole message. A supervisor reads more than a
// million of them a second on the broker's machine: what it spends here is
// taken from the broker being measured.
func scanEvent(b []byte) (name []byte, ts int64, ok bool) {
	// The name comes early (after messageType and target): look there
	// first.
	i := bytes.Index(b[:min(len(b), 128)], []byte(`"name":"`))
	if i < 0 {
		i = bytes.Index(b, []byte(`"name":"`))
	}
	tail := max(len(b)-40, 0) // the timestamp is last: search only the end
	j := lastIndex(b[tail:], `"timestamp":`)
	if i < 0 || j < 0 {
		return nil, 0, false
	}
	j += tail
	rest := b[i+8:]
	k := bytes.IndexByte(rest, '"')
	if k < 0 {
		return nil, 0, false
	}
	num := b[j+12:]
	end := bytes.IndexByte(num, '}')
	if end < 0 {
		return nil, 0, false
	}
	ts, ok = parseInt(num[:end])
	return rest[:k], ts, ok
}

// lastIndex is bytes.LastIndex for a key that starts with a quote, in a
// few dozen bytes: bytes.LastIndex hashes every byte, which made it the
// load tool's largest cost after the system calls.
func lastIndex(b []byte, key string) int {
	for end := len(b); ; {
		i := bytes.LastIndexByte(b[:end], key[0])
		if i < 0 {
			return -1
		}
		if bytes.HasPrefix(b[i:], []byte(key)) {
			return i
		}
		end = i
	}
}

// parseInt parses a decimal integer between optional spaces, without
// allocating.
func parseInt(b []byte) (int64, bool) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// supervisor subscribes to everything and counts changes: a change that
// folds others ("conflated": n) counts for n+1.
func supervisor(ctx context.Context, cfg Config, i int, st *stats, count *atomic.Int64, setup *sync.WaitGroup, stop <-chan struct{}) {
	setupOnce := sync.OnceFunc(setup.Done)
	defer setupOnce()
	url := cfg.URL
	if cfg.SupervisorURL != "" {
		url = cfg.SupervisorURL
	}
	c, err := dial(ctx, url, i, cfg.Sources, fmt.Sprintf("supervisor=%s-sup-%d", cfg.Prefix, i), cfg.Batch)
	if err != nil {
		st.connectFails.Add(1)
		return
	}
	defer c.ws.CloseNow()
	st.connected.Add(1)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-stop:
		case <-ctx.Done():
		}
		cancel()
	}()
	// Supervisor changes are many and large: read only what is measured, and
	// count locally (the tool must not eat the CPU the broker is measured
	// on).
	lat := hdrhistogram.New(0, 600_000, 3)
	var events, size, conflated int64
	defer func() {
		st.supEvents.Add(events)
		st.supBytes.Add(size)
		st.supConflated.Add(conflated)
		st.mu.Lock()
		st.supLat.Merge(lat)
		st.mu.Unlock()
	}()
	for {
		b, err := c.next(rctx)
		if err != nil {
			return
		}
		if name, ts, ok := scanEvent(b); ok && string(name) == "supervisor.agent.changed" {
			if !st.measuring.Load() {
				continue // a straggler of the set-up (the snapshot covers it)
			}
			folded := scanConflated(b)
			count.Add(1 + folded)
			events++
			size += int64(len(b))
			conflated += folded
			_ = lat.RecordValue(max(c.at-ts, 0))
			continue
		}
		var m message
		if json.Unmarshal(b, &m) != nil {
			return
		}
		switch m.Name {
		case "session.initialized":
			data := map[string]any{}
			if cfg.Compact {
				data["format"] = "compact"
			}
			if err := c.send(rctx, map[string]any{"command": "supervisor.subscribe", "target": m.Target, "data": data}); err != nil {
				return
			}
		case "supervisor.snapshot":
			if st.measuring.Load() {
				st.supResyncs.Add(1)
			}
			setupOnce()
		}
	}
}

// scanConflated reads "conflated": n from a change, 0 when absent. The
// broker writes it last in the data, just before the timestamp.
func scanConflated(b []byte) int64 {
	tail := b[max(len(b)-64, 0):]
	i := lastIndex(tail, `"conflated":`)
	if i < 0 {
		return 0
	}
	num := tail[i+len(`"conflated":`):]
	end := bytes.IndexAny(num, ",}")
	if end < 0 {
		return 0
	}
	n, _ := parseInt(num[:end])
	return n
}
