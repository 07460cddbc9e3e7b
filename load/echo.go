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
	"golang.org/x/time/rate"
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
	// PingInterval: ping a connection silent for this long (0: never), and
	// close it when the pong has not come within PingTimeout, like the
	// broker.
	PingInterval, PingTimeout time.Duration
}

// ServeEcho runs the bare-WebSocket baseline: for every text frame it reads,
// it writes a reply-shaped frame and Events event-shaped frames of the given
// sizes, with nothing else in between. It is the ceiling for the broker on
// the same machine. It holds a connection the way the broker does: the
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
		}
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		conns.Inc()
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
