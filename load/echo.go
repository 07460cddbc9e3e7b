package load

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Sizes are the message sizes the echo server answers each command with:
// one reply, then Events events, like the broker; and, with Change set, one
// change of that size to every subscriber (a connection with ?supervisor=).
type Sizes struct {
	Reply  int
	Event  int
	Events int
	Change int
}

// EchoOptions make the echo server hold connections the way the broker
// does, for the idle-memory baseline.
type EchoOptions struct {
	// PingInterval: ping a connection silent for this long (0: never), and
	// close it when the pong has not come within PingTimeout, like the
	// broker.
	PingInterval, PingTimeout time.Duration
}

// ServeEcho runs the bare-WebSocket baseline: for every text frame it reads,
// it writes a reply-shaped frame and Events event-shaped frames of the given
// sizes, with nothing else in between, and broadcasts a change-shaped frame
// to every subscriber the way a plain coder/websocket hub does (encoded
// once, a queue and a writer goroutine per subscriber, one frame per
// message, a full queue drops). It is the ceiling for the broker on the same
// machine. It holds a connection the way the broker does: the
// reader on a goroutine of its own (the HTTP handler returns), the
// library's pings. It serves its memory at /metrics (process and Go
// runtime, and ctiload_echo_connections) and the pprof endpoints under
// /debug/pprof/, so that it can be measured as the broker is.
func ServeEcho(ctx context.Context, ln net.Listener, sizes Sizes, opts EchoOptions) error {
	reply := padded(`{"command":"x","target":"t","result":"success","pad":"`, sizes.Reply)
	conns := prometheus.NewGauge(prometheus.GaugeOpts{Name: "ctiload_echo_connections", Help: "Open WebSocket connections."})
	reg := prometheus.NewRegistry()
	reg.MustRegister(conns, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	dropped := prometheus.NewCounter(prometheus.CounterOpts{Name: "ctiload_echo_dropped_total", Help: "Changes dropped by a full subscriber queue."})
	reg.MustRegister(dropped)
	var hubMu sync.RWMutex
	hub := map[chan []byte]struct{}{}
	broadcast := func() {
		// The timestamp last, as the broker writes it.
		ts := fmt.Sprintf(`","timestamp":%d}`, time.Now().UnixMilli())
		msg := padded(`{"messageType":"objectEvent","name":"supervisor.agent.changed","pad":"`, sizes.Change-len(ts)+2)
		msg = append(msg[:len(msg)-2], ts...)
		hubMu.RLock()
		defer hubMu.RUnlock()
		for q := range hub {
			select {
			case q <- msg:
			default:
				dropped.Inc()
			}
		}
	}
	subscribe := func(ws *websocket.Conn) {
		defer ws.CloseNow()
		defer conns.Dec()
		q := make(chan []byte, 1024)
		hubMu.Lock()
		hub[q] = struct{}{}
		hubMu.Unlock()
		defer func() {
			hubMu.Lock()
			delete(hub, q)
			hubMu.Unlock()
		}()
		ctx := ws.CloseRead(context.Background())
		for {
			select {
			case m := <-q:
				if ws.Write(ctx, websocket.MessageText, m) != nil {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}
	serve := func(ws *websocket.Conn) {
		defer ws.CloseNow()
		defer conns.Dec()
		var lastRead atomic.Int64
		lastRead.Store(time.Now().UnixNano())
		if opts.PingInterval > 0 {
			p := startPings(ws, &lastRead, opts.PingInterval, opts.PingTimeout)
			defer p.Stop()
		}
		ctx := context.Background()
		for {
			if _, _, err := ws.Read(ctx); err != nil {
				return
			}
			lastRead.Store(time.Now().UnixNano())
			if ws.Write(ctx, websocket.MessageText, reply) != nil {
				return
			}
			for range sizes.Events {
				ev := padded(fmt.Sprintf(`{"messageType":"objectEvent","name":"e","seq":1,"timestamp":%d,"pad":"`, time.Now().UnixMilli()), sizes.Event)
				if ws.Write(ctx, websocket.MessageText, ev) != nil {
					return
				}
			}
			if sizes.Change > 0 {
				broadcast()
			}
		}
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		conns.Inc()
		if r.URL.Query().Has("supervisor") {
			go subscribe(ws)
			return
		}
		go serve(ws)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	err := srv.Serve(ln)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// startPings pings a connection from a timer, as the broker does: only when
// it was silent for an interval, through the library's Ping (the reader
// receives the pong).
func startPings(ws *websocket.Conn, lastRead *atomic.Int64, interval, timeout time.Duration) *time.Timer {
	// The timer starts only once t is assigned: the function uses it.
	var t *time.Timer
	t = time.AfterFunc(time.Duration(math.MaxInt64), func() {
		next := interval
		if quiet := time.Since(time.Unix(0, lastRead.Load())); quiet < interval {
			next -= quiet
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			err := ws.Ping(ctx)
			cancel()
			if err != nil {
				ws.CloseNow()
				return
			}
		}
		t.Reset(next)
	})
	t.Reset(interval/2 + rand.N(interval/2+1))
	return t
}

func padded(prefix string, size int) []byte {
	n := max(size-len(prefix)-2, 0)
	return []byte(prefix + strings.Repeat("x", n) + `"}`)
}

// RunEcho loads an echo server the way Run loads a broker: Agents
// connections, closed loop, one command at a time each, at Rate or as fast
// as possible; a command is done when its reply arrived, and its events are
// read too. Supervisors connections receive the broadcast changes.
func RunEcho(ctx context.Context, cfg Config, sizes Sizes) (Report, error) {
	if err := CheckLoopback(cfg.URL); err != nil {
		return Report{}, err
	}
	st := newStats()
	limiter := commandLimiter(cfg.Rate)
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration+time.Minute)
	defer cancel()
	conns := make([]*conn, cfg.Agents)
	for i := range conns {
		c, err := dial(runCtx, cfg.URL, i, cfg.Sources, "", false)
		if err != nil {
			st.connectFails.Add(1)
			continue
		}
		st.connected.Add(1)
		conns[i] = c
	}
	if cfg.Idle {
		return holdEcho(runCtx, cfg, st, conns), nil
	}
	subs := make([]*conn, cfg.Supervisors)
	for i := range subs {
		c, err := dial(runCtx, cfg.URL, i, cfg.Sources, "supervisor=1", false)
		if err != nil {
			st.connectFails.Add(1)
			continue
		}
		st.connected.Add(1)
		subs[i] = c
	}
	counts := make([]atomic.Int64, len(subs))
	subCtx, stopSubs := context.WithCancel(runCtx)
	var subWG sync.WaitGroup
	for i, c := range subs {
		if c == nil {
			continue
		}
		subWG.Add(1)
		go func() {
			defer subWG.Done()
			defer c.ws.CloseNow()
			for {
				b, err := c.next(subCtx)
				if err != nil {
					return
				}
				if _, ts, ok := scanEvent(b); ok {
					counts[i].Add(1)
					st.supEvents.Add(1)
					st.record(st.supLat, c.at-ts)
				}
			}
		}()
	}
	mon := startMonitor(runCtx, cfg.MetricsURL)
	cmd, _ := json.Marshal(map[string]any{"command": "channel.ready", "target": "0123456789abcdef01234567.p"})
	deadline := time.Now().Add(cfg.Duration)
	t0 := time.Now()
	onEach(conns, func(c *conn) {
		for time.Now().Before(deadline) {
			if limiter != nil && limiter.Wait(runCtx) != nil {
				return
			}
			t := time.Now()
			if c.ws.Write(runCtx, websocket.MessageText, cmd) != nil {
				return
			}
			for k := 0; k <= sizes.Events; k++ {
				m, _, err := c.read(runCtx)
				if err != nil {
					return
				}
				if k == 0 {
					st.commands.Add(1)
					st.record(st.rtt, time.Since(t).Microseconds())
				} else {
					st.agentEvents.Add(1)
					st.record(st.agentLat, time.Now().UnixMilli()-m.Timestamp)
				}
			}
		}
	})
	elapsed := time.Since(t0)
	expected := st.commands.Load()
	if sizes.Change == 0 {
		expected = 0
	}
	for drain := time.Now().Add(10 * time.Second); len(subs) > 0 && time.Now().Before(drain); time.Sleep(20 * time.Millisecond) {
		done := true
		for i := range counts {
			if subs[i] != nil && counts[i].Load() < expected {
				done = false
			}
		}
		if done {
			break
		}
	}
	stopSubs()
	subWG.Wait()
	var cpu, rssMax float64
	if mon != nil {
		cpu, rssMax = mon.finish(ctx)
	}
	r := st.report("bare-websocket", cfg, elapsed, st.commands.Load(), cpu, rssMax)
	if len(subs) > 0 {
		r.SupExpected = expected * int64(len(subs))
		for i := range counts {
			r.SupLost += max(expected-counts[i].Load(), 0)
		}
	}
	r.ReplyBytes, r.EventBytes, r.EventsPerCommand = float64(sizes.Reply), float64(sizes.Event), float64(sizes.Events)
	return r, nil
}

// holdEcho keeps the connections open and idle for cfg.Duration, each with
// a reader (a ping needs one to see its pong): the bare idle baseline.
func holdEcho(ctx context.Context, cfg Config, st *stats, conns []*conn) Report {
	if cfg.OnReady != nil {
		cfg.OnReady()
	}
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	onEach(conns, func(c *conn) {
		for {
			if _, _, err := c.ws.Read(ctx); err != nil {
				return
			}
		}
	})
	return Report{Mode: "bare-websocket", Agents: cfg.Agents, Seconds: time.Since(t0).Seconds(), Connected: st.connected.Load(),
		ConnectFailures: st.connectFails.Load(), Failures: st.failures}
}

// onEach runs f on every open connection, each on a goroutine of its own,
// closes the connection when f returns, and waits for all of them.
func onEach(conns []*conn, f func(c *conn)) {
	var wg sync.WaitGroup
	for _, c := range conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.ws.CloseNow()
			f(c)
		}()
	}
	wg.Wait()
}
