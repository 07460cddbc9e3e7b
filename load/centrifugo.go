package load

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"
)

// RunCentrifugo loads a Centrifugo server (the real-time server issue 14
// measures the broker against) the way Run loads a broker, so that the
// anchor can be measured on the same machine in the same run: Agents
// connections over its JSON protocol, each subscribed to a channel of its
// own, closed loop, one command at a time. A command is a client publish to
// that channel; it is done when both its reply and the publication have
// arrived (request -> reply + event). The publication's data is padded so
// that what a command brings down the wire (reply and publication) is
// sizes.Reply + sizes.Events*sizes.Event bytes, the broker's reply and
// events; Centrifugo sends it as one publication, not Events events, and
// the client sends the data up, where a broker's command is small.
//
// The server must accept anonymous connections and client publishes in
// channels without a namespace (scripts/bench-floor.sh writes such a
// configuration) and serve /metrics (prometheus.enabled).
func RunCentrifugo(ctx context.Context, cfg Config, sizes Sizes) (Report, error) {
	if err := CheckLoopback(cfg.URL); err != nil {
		return Report{}, err
	}
	st := newStats()
	limiter := commandLimiter(cfg.Rate)
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration+time.Minute)
	defer cancel()
	conns := make([]*conn, cfg.Agents)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.ws.CloseNow()
			}
		}
	}()
	for i := range conns {
		c, err := dial(runCtx, cfg.URL, i, cfg.Sources, "", false)
		if err != nil {
			return Report{}, fmt.Errorf("centrifugo: connection %d: %w", i, err)
		}
		conns[i] = c
		if err := centrifugoSetup(runCtx, c, i); err != nil {
			return Report{}, fmt.Errorf("centrifugo: connection %d: %w", i, err)
		}
		st.connected.Add(1)
	}
	mon := startMonitor(runCtx, cfg.MetricsURL)
	down := sizes.Reply + sizes.Events*sizes.Event
	deadline := time.Now().Add(cfg.Duration)
	t0 := time.Now()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			centrifugoAgent(runCtx, c, i, down, st, limiter, deadline)
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	var cpu, rssMax float64
	if mon != nil {
		cpu, rssMax = mon.finish(ctx)
	}
	r := st.report("centrifugo", cfg, elapsed, st.commands.Load(), cpu, rssMax)
	return r, nil
}

// centrifugoAgent publishes to its own channel until deadline, each
// publish once its predecessor's reply and publication have come.
func centrifugoAgent(ctx context.Context, c *conn, i, down int, st *stats, limiter *rate.Limiter, deadline time.Time) {
	channel := strconv.Quote("a" + strconv.Itoa(i))
	pad := "" // set after the first command: what the envelopes take is known then
	for id := 3; time.Now().Before(deadline); id++ {
		if limiter != nil && limiter.Wait(ctx) != nil {
			return
		}
		t := time.Now()
		req := fmt.Sprintf(`{"id":%d,"publish":{"channel":%s,"data":{"command":"channel.ready","pad":"%s","timestamp":%d}}}`,
			id, channel, pad, t.UnixMilli())
		if c.ws.Write(ctx, websocket.MessageText, []byte(req)) != nil {
			return
		}
		var replyLen, pubLen int
		for replyLen == 0 || pubLen == 0 {
			b, err := c.next(ctx)
			if err != nil {
				return
			}
			var m centrifugoMessage
			if err := json.Unmarshal(b, &m); err != nil {
				st.fail("invalid JSON")
				return
			}
			switch {
			case m.ID == id && m.Error != nil:
				st.fail(strconv.Itoa(m.Error.Code))
				return
			case m.ID == id:
				replyLen = len(b)
			case m.Push != nil && m.Push.Pub != nil:
				pubLen = len(b)
				st.agentEvents.Add(1)
				st.record(st.agentLat, time.Now().UnixMilli()-m.Push.Pub.Data.Timestamp)
			case m.ID == 0 && m.Push == nil: // the server's ping, {}: answer it
				if c.ws.Write(ctx, websocket.MessageText, []byte("{}")) != nil {
					return
				}
			}
		}
		st.commands.Add(1)
		st.replies.Add(1)
		st.replyBytes.Add(int64(replyLen))
		st.eventBytes.Add(int64(pubLen))
		st.record(st.rtt, time.Since(t).Microseconds())
		if id == 3 {
			pad = strings.Repeat("x", max(down-replyLen-pubLen, 0))
		}
	}
}

// centrifugoSetup connects (anonymously) and subscribes to channel a<i>.
func centrifugoSetup(ctx context.Context, c *conn, i int) error {
	c.batch = true // Centrifugo's JSON protocol puts several messages in a frame, one per line
	for id, cmd := range []string{`"connect":{}`, fmt.Sprintf(`"subscribe":{"channel":"a%d"}`, i)} {
		if err := c.ws.Write(ctx, websocket.MessageText, []byte(fmt.Sprintf(`{"id":%d,%s}`, id+1, cmd))); err != nil {
			return err
		}
		for {
			b, err := c.next(ctx)
			if err != nil {
				return err
			}
			var m centrifugoMessage
			if err := json.Unmarshal(b, &m); err != nil {
				return fmt.Errorf("invalid JSON from the server: %w", err)
			}
			if m.ID != id+1 {
				continue
			}
			if m.Error != nil {
				return fmt.Errorf("%s: %d %s", cmd, m.Error.Code, m.Error.Message)
			}
			break
		}
	}
	return nil
}

// centrifugoMessage is what the tool reads of Centrifugo's replies and
// pushes.
type centrifugoMessage struct {
	ID    int `json:"id"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Push *struct {
		Pub *struct {
			Data struct {
				Timestamp int64 `json:"timestamp"`
			} `json:"data"`
		} `json:"pub"`
	} `json:"push"`
}
