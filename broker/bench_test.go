package broker

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/ctibroker/ctibroker/internal/redistest"
	"github.com/ctibroker/ctibroker/internal/testutil"
	"github.com/ctibroker/ctibroker/protocol"
)

// Benchmarks over real sockets. Run with `make bench` (see docs/benchmarks.md).

func benchBrokers(b *testing.B, backend string, n int) []*testBroker {
	env := []string{"CTIBROKER_LIMITS__COMMANDRATE=0", "CTIBROKER_LOG__LEVEL=error"}
	if backend == "redis" {
		env = append(env, redisEnv(redistest.Start(b))...)
		env = append(env, "CTIBROKER_REDIS__TIMEOUT=2s")
	}
	out := make([]*testBroker, n)
	for i := range out {
		out[i] = startBroker(b, env...)
	}
	return out
}

func benchAgent(b *testing.B, br *testBroker, agent string) (*client, string) {
	c, sid := attach(b, br, "agent="+agent)
	c.request(b, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": agent, "type": "TELEPHONY"}})
	c.request(b, protocol.CmdChannelActivate, sid+".p", nil)
	c.until(b, isEvent(protocol.EvStateUpdated))
	return c, sid
}

// toggleFrames are the two commands a benchmark agent alternates; each is a
// change, so each produces a reply and two events.
func toggleFrames(sid string) [2][]byte {
	ready, _ := json.Marshal(map[string]any{"command": protocol.CmdChannelReady, "target": sid + ".p"})
	notReady, _ := json.Marshal(map[string]any{"command": protocol.CmdChannelNotReady, "target": sid + ".p", "data": map[string]string{"reasoncode": "lunch"}})
	return [2][]byte{ready, notReady}
}

// BenchmarkCommandRoundTrip: one agent, one command at a time: send, then
// read the reply and its two events.
func BenchmarkCommandRoundTrip(b *testing.B) {
	for _, backend := range []string{"memory", "redis"} {
		b.Run(backend, func(b *testing.B) {
			brs := benchBrokers(b, backend, 1)
			c, sid := benchAgent(b, brs[0], "bench")
			frames := toggleFrames(sid)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				start := time.Now()
				c.sendRaw(b, websocket.MessageText, frames[i%2])
				for range 3 {
					c.next(b)
				}
				lat = append(lat, time.Since(start))
			}
			reportLatency(b, lat, "rtt")
		})
	}
}

// BenchmarkCrossNodeEventLatency: an agent on one node changes state; a
// listener (GET /v1/agents/{id}/events) on another node receives the event.
// With memory there is one node, so agent and listener share it.
func BenchmarkCrossNodeEventLatency(b *testing.B) {
	for _, backend := range []string{"memory", "redis"} {
		b.Run(backend, func(b *testing.B) {
			nodes := 2
			if backend == "memory" {
				nodes = 1
			}
			brs := benchBrokers(b, backend, nodes)
			c, sid := benchAgent(b, brs[0], "bench")
			listener := follow(b, brs[nodes-1].addr, "bench", "")
			frames := toggleFrames(sid)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				start := time.Now()
				c.sendRaw(b, websocket.MessageText, frames[i%2])
				for {
					ev := <-listener
					if ev.name == protocol.EvStateUpdated {
						break
					}
				}
				lat = append(lat, time.Since(start))
				for range 3 {
					c.next(b)
				}
			}
			reportLatency(b, lat, "delivery")
		})
	}
}

func reportLatency(b *testing.B, lat []time.Duration, what string) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(q(0.5), what+"-p50-µs")
	b.ReportMetric(q(0.99), what+"-p99-µs")
	b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "cmds/s")
}

// BenchmarkWebhooks: the command round trip with and without a webhook
// endpoint (a real receiver verifying every signature), and how fast the
// endpoint gets the status changes (delivered/s: from the first command to
// the last acknowledgement).
func BenchmarkWebhooks(b *testing.B) {
	for _, backend := range []string{"memory", "redis"} {
		for _, on := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/webhooks=%v", backend, on), func(b *testing.B) {
				env := []string{"CTIBROKER_LIMITS__COMMANDRATE=0", "CTIBROKER_LOG__LEVEL=error"}
				if backend == "redis" {
					env = append(env, redisEnv(redistest.Start(b))...)
				}
				var hm *receiver
				yaml := ""
				if on {
					hm = startReceiver(b, true)
					yaml = webhookYAML(hmacEndpoint("crm", hm, `"agent.status"`))
				}
				br := startBrokerYAML(b, yaml, env...)
				c, sid := benchAgent(b, br, "bench")
				frames := toggleFrames(sid)
				lat := make([]time.Duration, 0, b.N)
				first := time.Now()
				b.ResetTimer()
				n := 0
				for i := 0; b.Loop(); i++ {
					start := time.Now()
					c.sendRaw(b, websocket.MessageText, frames[i%2])
					for range 3 {
						c.next(b)
					}
					lat = append(lat, time.Since(start))
					n++
				}
				b.StopTimer()
				reportLatency(b, lat, "rtt")
				if on {
					testutil.EventuallyWithin(b, time.Minute, "every message delivered", func() bool { return len(hm.messages()) >= n+1 })
					b.ReportMetric(float64(n)/time.Since(first).Seconds(), "delivered/s")
				}
			})
		}
	}
}
