// Package metrics holds the broker's Prometheus metrics, and decorators that
// measure the adapter and the session store. Everything is registered on the
// registry given to New, never on the global default one.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the broker's collectors.
type Metrics struct {
	Connections     *prometheus.GaugeVec
	Streams         *prometheus.GaugeVec
	Commands        *prometheus.CounterVec
	CommandDuration *prometheus.HistogramVec
	EventsPublished prometheus.Counter
	EventsDelivered prometheus.Counter
	SendQueueDrops  prometheus.Counter
	SlowConsumers   prometheus.Counter
	AdapterDuration *prometheus.HistogramVec
	AdapterErrors   *prometheus.CounterVec
	StoreDuration   *prometheus.HistogramVec
	StoreErrors     *prometheus.CounterVec
	BoardLag        prometheus.Gauge
	LiveResyncs     prometheus.Counter
	LiveConflated   prometheus.Counter
	UpgradesRefused prometheus.Counter
	ConnectsLimited prometheus.Counter
	UpgradesWaiting prometheus.Gauge
}

// latencyBuckets cover 50 µs to 5 s.
var latencyBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// New creates the collectors and registers them, with the Go runtime and
// process (RSS) collectors, on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ctibroker_connections",
			Help: "Open WebSocket connections, by role."}, []string{"role"}),
		Streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ctibroker_streams",
			Help: "Open Server-Sent Event streams, by kind (events, watch)."}, []string{"kind"}),
		Commands: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ctibroker_commands_total",
			Help: "Commands answered, by command and result (success or the failure code)."}, []string{"command", "result"}),
		CommandDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ctibroker_command_duration_seconds",
			Help: "From reading a command off the socket to queuing its reply.", Buckets: latencyBuckets}, []string{"command"}),
		EventsPublished: prometheus.NewCounter(prometheus.CounterOpts{Name: "ctibroker_events_published_total",
			Help: "Session events committed (and published to listeners)."}),
		EventsDelivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "ctibroker_events_delivered_total",
			Help: "Messages (replies and events) written to client sockets."}),
		SendQueueDrops: prometheus.NewCounter(prometheus.CounterOpts{Name: "ctibroker_send_queue_drops_total",
			Help: "Messages not queued because a connection's send queue was full."}),
		SlowConsumers: prometheus.NewCounter(prometheus.CounterOpts{Name: "ctibroker_slow_consumer_closes_total",
			Help: "Connections closed with 1013 because they did not read fast enough."}),
		BoardLag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ctibroker_board_lag_seconds",
			Help: "How old the last agent event the supervisors' board applied was when it applied it."}),
		LiveResyncs: prometheus.NewCounter(prometheus.CounterOpts{Name: "ctibroker_live_resyncs_total",
			Help: "Supervisor watches that fell behind the change log and started again from a resync snapshot."}),
		LiveConflated: prometheus.NewCounter(prometheus.CounterOpts{Name: "ctibroker_live_conflated_total",
			Help: "Agent changes folded into a later one for a supervisor watch that read late."}),
		UpgradesRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "ctibroker_upgrades_refused_total",
			Help: "WebSocket upgrades answered 503 because their turn under limits.upgradespercpu was more than limits.upgradewait away."}),
		ConnectsLimited: prometheus.NewCounter(prometheus.CounterOpts{Name: "ctibroker_connects_limited_total",
			Help: "WebSocket upgrades answered 429 because their agent connected faster than limits.connectrate."}),
		UpgradesWaiting: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ctibroker_upgrades_waiting",
			Help: "WebSocket upgrades waiting for their turn under limits.upgradespercpu."}),
		AdapterDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ctibroker_adapter_call_duration_seconds",
			Help: "CTI adapter call latency, by operation.", Buckets: latencyBuckets}, []string{"op"}),
		AdapterErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ctibroker_adapter_errors_total",
			Help: "CTI adapter calls that failed, by operation."}, []string{"op"}),
		StoreDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ctibroker_store_duration_seconds",
			Help: "Session store (Redis, or memory) call latency, by operation.", Buckets: latencyBuckets}, []string{"op"}),
		StoreErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ctibroker_store_errors_total",
			Help: "Session store calls that failed, by operation."}, []string{"op"}),
	}
	reg.MustRegister(m.Connections, m.Streams, m.Commands, m.CommandDuration, m.EventsPublished, m.EventsDelivered, m.SendQueueDrops,
		m.SlowConsumers, m.AdapterDuration, m.AdapterErrors, m.StoreDuration, m.StoreErrors, m.BoardLag, m.LiveResyncs, m.LiveConflated,
		m.UpgradesRefused, m.ConnectsLimited, m.UpgradesWaiting,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// The methods below are nil-safe: a nil *Metrics records nothing.

// CommandDone records one answered command.
func (m *Metrics) CommandDone(command, result string, took float64) {
	if m == nil {
		return
	}
	m.Commands.WithLabelValues(command, result).Inc()
	m.CommandDuration.WithLabelValues(command).Observe(took)
}

// EventsCommitted records committed events.
func (m *Metrics) EventsCommitted(n int) {
	if m != nil && n > 0 {
		m.EventsPublished.Add(float64(n))
	}
}

// Delivered records a message written to a socket.
func (m *Metrics) Delivered() {
	if m != nil {
		m.EventsDelivered.Inc()
	}
}

// BoardApplied records how old an event was when the board applied it.
func (m *Metrics) BoardApplied(age float64) {
	if m != nil {
		m.BoardLag.Set(age)
	}
}

// LiveRead counts a watch's read: changes folded, and whether it fell
// behind the change log.
func (m *Metrics) LiveRead(folded int, resync bool) {
	if m == nil {
		return
	}
	if folded > 0 {
		m.LiveConflated.Add(float64(folded))
	}
	if resync {
		m.LiveResyncs.Inc()
	}
}

// DeliveredN counts n messages written to a socket at once.
func (m *Metrics) DeliveredN(n int) {
	if m != nil && n > 0 {
		m.EventsDelivered.Add(float64(n))
	}
}

// Dropped records a message refused by a full send queue and the
// slow-consumer close it causes.
func (m *Metrics) Dropped() {
	if m != nil {
		m.SendQueueDrops.Inc()
		m.SlowConsumers.Inc()
	}
}

// Stream adds delta to the open event streams of kind.
func (m *Metrics) Stream(kind string, delta float64) {
	if m != nil {
		m.Streams.WithLabelValues(kind).Add(delta)
	}
}

// Connection adds delta to the open connections of role.
func (m *Metrics) Connection(role string, delta float64) {
	if m != nil {
		m.Connections.WithLabelValues(role).Add(delta)
	}
}

// UpgradeWaiting counts the WebSocket upgrades waiting for their turn.
func (m *Metrics) UpgradeWaiting(delta float64) {
	if m != nil {
		m.UpgradesWaiting.Add(delta)
	}
}

// ConnectLimited records one WebSocket upgrade refused under limits.connectrate.
func (m *Metrics) ConnectLimited() {
	if m != nil {
		m.ConnectsLimited.Inc()
	}
}

// UpgradeRefused records one WebSocket upgrade refused for its turn.
func (m *Metrics) UpgradeRefused() {
	if m != nil {
		m.UpgradesRefused.Inc()
	}
}
