package load

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"
)

// Sizes are the message sizes the echo server answers each command with:
// one reply, then Events events, like the broker.
type Sizes struct {
	Reply  int
	Event  int
	Events int
}

// ServeEcho runs the bare-WebSocket baseline: for every text frame it reads,
// it writes a reply-shaped frame and Events event-shaped frames of the given
// sizes, with nothing else in between. It is the ceiling for the broker on
// the same machine.
func ServeEcho(ctx context.Context, ln net.Listener, sizes Sizes) error {
	reply := padded(`{"command":"x","target":"t","result":"success","pad":"`, sizes.Reply)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ctx := context.Background()
		for {
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
	}), ReadHeaderTimeout: 10 * time.Second}
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
	cmd, _ := json.Marshal(map[string]any{"command": "channel.ready", "target": "0123456789abcdef01234567.p"})
	deadline := time.Now().Add(cfg.Duration)
	var wg sync.WaitGroup
	t0 := time.Now()
	for _, ws := range conns {
		if ws == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer ws.CloseNow()
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
		}()
	}
	wg.Wait()
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
