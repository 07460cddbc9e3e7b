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
	URL         string
	Agents      int
	Supervisors int
	// Rate is the total commands per second over all agents; 0: as fast as
	// each agent's round trips allow.
	Rate     float64
	Duration time.Duration
	// Sources spreads connections over 127.0.0.1 .. 127.0.0.<Sources>, for
	// more than one range of ephemeral ports.
	Sources int
	// Idle agents connect and add a channel, then send nothing.
	Idle bool
	// Prefix of the agent ids (several runs against one broker).
	Prefix string
	// OnReady, when set, runs once every connection is set up, before the
	// measured period (to read the broker's memory with them open).
	OnReady func()
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
	Failure   *struct {
		Code string `json:"code"`
	} `json:"failure"`
}

// stats are shared by all workers.
type stats struct {
	mu                      sync.Mutex
	rtt, agentLat, supLat   *hdrhistogram.Histogram
	failures                map[string]int64
	commands, agentEvents   atomic.Int64
	supEvents               atomic.Int64
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

// dial connects from source address 127.0.0.<1+i%sources>.
func dial(ctx context.Context, rawURL string, i, sources int, query string) (*websocket.Conn, error) {
	src := net.IPv4(127, 0, 0, byte(1+i%max(sources, 1)))
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 10 * time.Second}
	client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	ws, _, err := websocket.Dial(ctx, rawURL+"?"+query, &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(1 << 22)
	return ws, nil
}

func read(ctx context.Context, ws *websocket.Conn) (message, int, error) {
	_, b, err := ws.Read(ctx)
	if err != nil {
		return message{}, 0, err
	}
	var m message
	if err := json.Unmarshal(b, &m); err != nil {
		return m, len(b), fmt.Errorf("invalid JSON from the server: %w", err)
	}
	return m, len(b), nil
}

func send(ctx context.Context, ws *websocket.Conn, v any) error {
	b, _ := json.Marshal(v)
	return ws.Write(ctx, websocket.MessageText, b)
}

var errClosed = errors.New("connection closed")

// Run runs the load against a broker and measures it.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if err := CheckLoopback(cfg.URL); err != nil {
		return Report{}, err
	}
	if cfg.Duration <= 0 || cfg.Duration > time.Hour {
		return Report{}, errors.New("duration must be between 0 and 1h")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "load" + strconv.FormatInt(time.Now().UnixNano()%1e6, 10)
	}
	st := newStats()
	var limiter *rate.Limiter
	if cfg.Rate > 0 {
		limiter = rate.NewLimiter(rate.Limit(cfg.Rate), max(int(cfg.Rate/100), 1))
	}
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

	r := Report{Mode: "broker", Agents: cfg.Agents, Supervisors: cfg.Supervisors, Seconds: elapsed.Seconds(),
		Connected: st.connected.Load(), ConnectFailures: st.connectFails.Load(), Failures: st.failures}
	r.Commands = st.commands.Load() - setupCommands
	r.CommandsPerSec = float64(r.Commands) / elapsed.Seconds()
	r.RTT, r.AgentDelivery, r.SupDelivery = quantiles(st.rtt), quantiles(st.agentLat), quantiles(st.supLat)
	r.AgentEvents, r.SupEvents = st.agentEvents.Load(), st.supEvents.Load()
	r.AgentEventsPS, r.SupEventsPS = float64(r.AgentEvents)/elapsed.Seconds(), float64(r.SupEvents)/elapsed.Seconds()
	if cfg.Supervisors > 0 {
		r.SupExpected = expected * int64(cfg.Supervisors)
		for i := range supCounts {
			r.SupLost += max(expected-supCounts[i].Load(), 0)
		}
	}
	if n := st.replies.Load(); n > 0 {
		r.ReplyBytes = float64(st.replyBytes.Load()) / float64(n)
		r.EventsPerCommand = float64(st.agentEvents.Load()) / float64(n)
	}
	if n := st.agentEvents.Load(); n > 0 {
		r.EventBytes = float64(st.eventBytes.Load()) / float64(n)
	}
	return r, nil
}

// agent: connect, add and activate a channel, then cycle statuses.
func agent(ctx context.Context, cfg Config, i int, st *stats, limiter *rate.Limiter, ready *sync.WaitGroup, start, deadline <-chan struct{}) {
	readyOnce := sync.OnceFunc(ready.Done)
	defer readyOnce()
	id := fmt.Sprintf("%s-%d", cfg.Prefix, i)
	ws, err := dial(ctx, cfg.URL, i, cfg.Sources, "agent="+id)
	if err != nil {
		st.connectFails.Add(1)
		return
	}
	defer ws.CloseNow()
	st.connected.Add(1)
	sid := ""
	for sid == "" {
		m, _, err := read(ctx, ws)
		if err != nil {
			return
		}
		if m.Name == "session.initialized" {
			sid = m.Target
		}
	}
	// roundTrip sends one command and reads until its reply, recording the
	// events that arrive on the way.
	roundTrip := func(v any) error {
		t := time.Now()
		if err := send(ctx, ws, v); err != nil {
			return err
		}
		for {
			m, n, err := read(ctx, ws)
			if err != nil {
				return err
			}
			if m.Result == "" {
				st.agentEvents.Add(1)
				st.eventBytes.Add(int64(n))
				if m.Name == "state.updated" && st.measuring.Load() {
					st.measuredUpdates.Add(1)
				}
				st.record(st.agentLat, time.Now().UnixMilli()-m.Timestamp)
				continue
			}
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
		m, n, err := read(ctx, ws)
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
			if _, _, err := read(rctx, ws); err != nil {
				return
			}
		}
	}
	cycle := []map[string]any{
		{"command": "channel.ready", "target": channel},
		{"command": "channel.notready", "target": channel, "data": map[string]string{"reasoncode": "lunch"}},
		{"command": "channel.notready", "target": channel, "data": map[string]string{"reasoncode": "acw"}},
	}
	for k := 0; ; k++ {
		select {
		case <-deadline:
			// Read what is still in flight (the last command's events).
			dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			for {
				m, n, err := read(dctx, ws)
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
			_ = ws.Close(websocket.StatusNormalClosure, "")
			return
		default:
		}
		if limiter != nil {
			if err := limiter.Wait(ctx); err != nil {
				return
			}
		}
		if roundTrip(cycle[k%len(cycle)]) != nil {
			return
		}
	}
}

// scanEvent reads an event's name and its timestamp (the broker writes it
// last) without decoding the whole message.
func scanEvent(b []byte) (name string, ts int64, ok bool) {
	i := bytes.Index(b, []byte(`"name":"`))
	j := bytes.LastIndex(b, []byte(`"timestamp":`))
	if i < 0 || j < 0 {
		return "", 0, false
	}
	rest := b[i+8:]
	k := bytes.IndexByte(rest, '"')
	if k < 0 {
		return "", 0, false
	}
	num := b[j+12:]
	end := bytes.IndexByte(num, '}')
	if end < 0 {
		return "", 0, false
	}
	ts, err := strconv.ParseInt(string(bytes.TrimSpace(num[:end])), 10, 64)
	return string(rest[:k]), ts, err == nil
}

// supervisor subscribes to everything and counts changes.
func supervisor(ctx context.Context, cfg Config, i int, st *stats, count *atomic.Int64, setup *sync.WaitGroup, stop <-chan struct{}) {
	setupOnce := sync.OnceFunc(setup.Done)
	defer setupOnce()
	ws, err := dial(ctx, cfg.URL, i, cfg.Sources, fmt.Sprintf("supervisor=%s-sup-%d", cfg.Prefix, i))
	if err != nil {
		st.connectFails.Add(1)
		return
	}
	defer ws.CloseNow()
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
	for {
		_, b, err := ws.Read(rctx)
		if err != nil {
			return
		}
		// Supervisor changes are many and large: read only what is measured
		// (the tool must not eat the CPU the broker is measured on).
		if name, ts, ok := scanEvent(b); ok && name == "supervisor.agent.changed" {
			if !st.measuring.Load() {
				continue // a straggler of the set-up (the snapshot covers it)
			}
			count.Add(1)
			st.supEvents.Add(1)
			st.record(st.supLat, time.Now().UnixMilli()-ts)
			continue
		}
		var m message
		if json.Unmarshal(b, &m) != nil {
			return
		}
		switch m.Name {
		case "session.initialized":
			if err := send(rctx, ws, map[string]any{"command": "supervisor.subscribe", "target": m.Target, "data": map[string]any{}}); err != nil {
				return
			}
		case "supervisor.snapshot":
			setupOnce()
		case "supervisor.agent.changed":
			count.Add(1)
			st.supEvents.Add(1)
			st.record(st.supLat, time.Now().UnixMilli()-m.Timestamp)
		}
	}
}
