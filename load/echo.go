package load

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"github.com/ctibroker/ctibroker/internal/wsbuf"
)

// Sizes are the message sizes the echo server answers each command with:
// one reply, then Events events, like the broker.
type Sizes struct {
	Reply  int
	Event  int
	Events int
}

// EchoOptions make the echo server hold connections the way the broker
// does, for the idle-memory baseline.
type EchoOptions struct {
	// PingInterval: ping every connection this often (0: never), and close
	// it when the pong has not come within PingTimeout, like the broker.
	PingInterval, PingTimeout time.Duration
	// Lean: hold a connection as the broker does, at its cost floor: the
	// broker's socket layer (internal/wsbuf: small buffers, pings that
	// allocate nothing, the wait for the peer at the minimum stack)
	// instead of net/http's 4 KiB buffers each way and the library's Ping,
	// and the reader on a fresh goroutine while the HTTP handler returns,
	// which releases net/http's per-request state and the handler's deep
	// stack. Without it, the connection is held the way coder/websocket's
	// examples do.
	Lean bool
}

// ServeEcho runs the bare-WebSocket baseline: for every text frame it reads,
// it writes a reply-shaped frame and Events event-shaped frames of the given
// sizes, with nothing else in between. It is the ceiling for the broker on
// the same machine. It serves its memory at /metrics (process and Go
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
	serve := func(ws *websocket.Conn, raw *wsbuf.Conn) {
		defer ws.CloseNow()
		defer conns.Dec()
		if opts.PingInterval > 0 {
			p := startPings(ws, raw, opts.PingInterval, opts.PingTimeout)
			defer p.stop()
		}
		ctx := context.Background()
		for {
			if raw != nil {
				// Wait as the broker's readers do, at the minimum stack.
				// (The broker then reads on a pooled goroutine; the idle
				// floor's connections send nothing.)
				raw.WaitReadable()
			}
			if _, _, err := ws.Read(ctx); err != nil {
				return
			}
			if ws.Write(ctx, websocket.MessageText, reply) != nil {
				return
			}
			for range sizes.Events {
				ev := padded(fmt.Sprintf(`{"messageType":"objectEvent","name":"e","seq":1,"timestamp":%d,"pad":"`, time.Now().UnixMilli()), sizes.Event)
				if ws.Write(ctx, websocket.MessageText, ev) != nil {
					return
				}
			}
		}
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		var rw http.ResponseWriter = w
		var raw *wsbuf.Conn
		if opts.Lean {
			rw = &wsbuf.Writer{ResponseWriter: w, Wrap: func(c net.Conn) net.Conn { raw = wsbuf.NewConn(c); return raw }}
		}
		ws, err := websocket.Accept(rw, r, nil)
		if err != nil {
			return
		}
		conns.Inc()
		if opts.Lean {
			go serve(ws, raw)
			return
		}
		serve(ws, nil)
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

// pinger pings one connection from a timer, as the broker does: no
// goroutine between pings, and the same timer is the pong deadline. With a
// wsbuf.Conn (lean) the ping is written and the pong seen below the
// library, as the broker does; without, through the library's Ping.
type pinger struct {
	ws                *websocket.Conn
	raw               *wsbuf.Conn // nil: the library's Ping
	interval, timeout time.Duration
	mu                sync.Mutex
	t                 *time.Timer
	awaiting, stopped bool
}

// startPings starts pinging; with raw, set before the connection's reader
// starts.
func startPings(ws *websocket.Conn, raw *wsbuf.Conn, interval, timeout time.Duration) *pinger {
	p := &pinger{ws: ws, raw: raw, interval: interval, timeout: timeout}
	if raw != nil {
		raw.OnPong = p.pong
	}
	p.mu.Lock()
	p.t = time.AfterFunc(interval/2+rand.N(interval/2+1), p.tick)
	p.mu.Unlock()
	return p
}

func (p *pinger) tick() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	if p.awaiting {
		p.mu.Unlock()
		p.ws.CloseNow() // no pong in time
		return
	}
	p.awaiting = true
	p.t.Reset(p.timeout)
	p.mu.Unlock()
	if p.raw != nil {
		if p.raw.Ping(p.timeout) != nil {
			p.ws.CloseNow()
		}
		return
	}
	if p.ws.Ping(context.Background()) == nil {
		p.pong()
	}
}

func (p *pinger) pong() {
	p.mu.Lock()
	if p.awaiting && !p.stopped {
		p.awaiting = false
		p.t.Reset(p.interval)
	}
	p.mu.Unlock()
}

func (p *pinger) stop() {
	p.mu.Lock()
	p.stopped = true
	p.t.Stop()
	p.mu.Unlock()
}

func padded(prefix string, size int) []byte {
	n := max(size-len(prefix)-2, 0)
	return []byte(prefix + strings.Repeat("x", n) + `"}`)
}

// RunEcho loads an echo server the way Run loads a broker: Agents
// connections, closed loop, one command at a time each, at Rate or as fast
// as possible; a command is done when its reply arrived, and its events are
// read too.
func RunEcho(ctx context.Context, cfg Config, sizes Sizes) (Report, error) {
	if err := CheckLoopback(cfg.URL); err != nil {
		return Report{}, err
	}
	st := newStats()
	var limiter *rate.Limiter
	if cfg.Rate > 0 {
		limiter = rate.NewLimiter(rate.Limit(cfg.Rate), max(int(cfg.Rate/100), 1))
	}
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration+time.Minute)
	defer cancel()
	conns := make([]*websocket.Conn, cfg.Agents)
	for i := range conns {
		ws, err := dial(runCtx, cfg.URL, i, cfg.Sources, "")
		if err != nil {
			st.connectFails.Add(1)
			continue
		}
		st.connected.Add(1)
		conns[i] = ws
	}
	if cfg.Idle {
		return holdEcho(runCtx, cfg, st, conns), nil
	}
	cmd, _ := json.Marshal(map[string]any{"command": "channel.ready", "target": "0123456789abcdef01234567.p"})
	deadline := time.Now().Add(cfg.Duration)
	t0 := time.Now()
	onEach(conns, func(ws *websocket.Conn) {
		for time.Now().Before(deadline) {
			if limiter != nil && limiter.Wait(runCtx) != nil {
				return
			}
			t := time.Now()
			if ws.Write(runCtx, websocket.MessageText, cmd) != nil {
				return
			}
			for k := 0; k <= sizes.Events; k++ {
				m, _, err := read(runCtx, ws)
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
	r := Report{Mode: "bare-websocket", Agents: cfg.Agents, Seconds: elapsed.Seconds(), Connected: st.connected.Load(),
		ConnectFailures: st.connectFails.Load(), Commands: st.commands.Load(), Failures: st.failures}
	r.CommandsPerSec = float64(r.Commands) / elapsed.Seconds()
	r.RTT, r.AgentDelivery = quantiles(st.rtt), quantiles(st.agentLat)
	r.AgentEvents = st.agentEvents.Load()
	r.AgentEventsPS = float64(r.AgentEvents) / elapsed.Seconds()
	r.ReplyBytes, r.EventBytes, r.EventsPerCommand = float64(sizes.Reply), float64(sizes.Event), float64(sizes.Events)
	return r, nil
}

// holdEcho keeps the connections open and idle for cfg.Duration, each with
// a reader (a ping needs one to see its pong): the bare idle baseline.
func holdEcho(ctx context.Context, cfg Config, st *stats, conns []*websocket.Conn) Report {
	if cfg.OnReady != nil {
		cfg.OnReady()
	}
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	onEach(conns, func(ws *websocket.Conn) {
		for {
			if _, _, err := ws.Read(ctx); err != nil {
				return
			}
		}
	})
	return Report{Mode: "bare-websocket", Agents: cfg.Agents, Seconds: time.Since(t0).Seconds(), Connected: st.connected.Load(),
		ConnectFailures: st.connectFails.Load(), Failures: st.failures}
}

// onEach runs f on every open connection, each on a goroutine of its own,
// closes the connection when f returns, and waits for all of them.
func onEach(conns []*websocket.Conn, f func(ws *websocket.Conn)) {
	var wg sync.WaitGroup
	for _, ws := range conns {
		if ws == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer ws.CloseNow()
			f(ws)
		}()
	}
	wg.Wait()
}
