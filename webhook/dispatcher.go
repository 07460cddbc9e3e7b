package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/protocol"
)

// Dispatcher relays messages to the outbox and delivers the partitions
// this node leases.
//
// Goroutines: the relay; one per partition (leasing it); while it holds
// the lease, one per endpoint delivering that partition; replays. All stop
// with Close. Locking: endpoint.mu guards an endpoint's health figures
// (leaf); signal.mu guards a wake channel (leaf).
type Dispatcher struct {
	cfg    Config
	node   string
	q      Queue
	log    *zap.Logger
	client *http.Client
	eps    []*endpoint
	relay  chan item
	wake   []*signal
	met    *metrics
	ack    Acker

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type item struct {
	partition int
	data      []byte
	sid, id   string // where it waits in its session's outbox
}

type endpoint struct {
	Endpoint
	sign signer

	mu        sync.Mutex
	lastErr   string
	lastErrAt time.Time
	delivered uint64
	failing   map[int]*Failure // by partition: the message being retried
	replaying bool
}

// Failure is a message an endpoint has not acknowledged yet.
type Failure struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	AgentID   string    `json:"agentId"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"lastError"`
	Since     time.Time `json:"-"`
	SinceMs   int64     `json:"since"`
}

// Acker drops a session's webhook records up to id once the relay
// appended them (store.Store.AckOutbox).
type Acker func(ctx context.Context, sid, id string) error

// New builds a dispatcher; Start starts it. ack may be nil (nothing is
// kept beside the relay).
func New(cfg Config, node string, q Queue, ack Acker, reg prometheus.Registerer, log *zap.Logger) (*Dispatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Dispatcher{cfg: cfg, node: node, q: q, log: log, client: &http.Client{Timeout: cfg.Timeout,
		// A receiver's redirect is not followed: the signature is for its URL.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		relay: make(chan item, protocol.WebhookRelayQueue), met: newMetrics(reg), ack: ack}
	for _, e := range cfg.Endpoints {
		if e.Signature == "" {
			e.Signature = SignHMAC
		}
		s, err := newSigner(e)
		if err != nil {
			return nil, err
		}
		d.eps = append(d.eps, &endpoint{Endpoint: e, sign: s, failing: map[int]*Failure{}})
	}
	for range cfg.Partitions {
		d.wake = append(d.wake, newSignal())
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d, nil
}

// Start starts the relay and the partitions' workers.
func (d *Dispatcher) Start() {
	d.wg.Add(1)
	go d.relayLoop()
	for p := range d.cfg.Partitions {
		d.wg.Add(1)
		go d.partition(p)
	}
	d.wg.Add(1)
	go d.gauge()
}

// gauge keeps the pending metric current (every node reports the same:
// the outbox is shared).
func (d *Dispatcher) gauge() {
	defer d.wg.Done()
	t := time.NewTicker(protocol.WebhookGaugeInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			ctx, cancel := context.WithTimeout(d.ctx, protocol.WebhookGaugeInterval)
			if eps, err := d.Endpoints(ctx); err == nil {
				for _, e := range eps {
					d.met.pending.WithLabelValues(e.Name).Set(float64(e.Pending))
				}
			}
			cancel()
		case <-d.ctx.Done():
			return
		}
	}
}

// Close stops every goroutine. Messages still waiting for the relay are
// lost (a shutdown that drains its sessions first leaves none).
func (d *Dispatcher) Close() {
	d.cancel()
	d.wg.Wait()
}

// Push hands an agent's committed webhook records (encoded
// protocol.WebhookRecords, with their ids in the session's outbox) to the
// relay without blocking; one that finds the relay's queue full stays in
// the session's outbox (pushed again if the session moves) and is counted.
func (d *Dispatcher) Push(sid, agent string, ids []string, records [][]byte) {
	if len(d.eps) == 0 {
		return
	}
	p := d.partitionOf(agent)
	for i, r := range records {
		select {
		case d.relay <- item{partition: p, data: r, sid: sid, id: ids[i]}:
		default:
			d.met.dropped.Inc()
			d.log.Warn("webhook relay queue full: a message waits in its session's outbox", zap.String("agent", agent))
		}
	}
}

// partitionOf keeps an agent's messages in one partition, in order.
func (d *Dispatcher) partitionOf(agent string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(agent))
	return int(h.Sum32() % uint32(d.cfg.Partitions))
}

// relayLoop appends what sessions pushed to the outbox, a batch at a
// time, retrying while the store is down.
func (d *Dispatcher) relayLoop() {
	defer d.wg.Done()
	byPart := map[int][]item{}
	for {
		select {
		case it := <-d.relay:
			byPart[it.partition] = append(byPart[it.partition], it)
		case <-d.ctx.Done():
			return
		}
	more:
		for n := 1; n < 4*protocol.WebhookBatch; n++ {
			select {
			case it := <-d.relay:
				byPart[it.partition] = append(byPart[it.partition], it)
			default:
				break more
			}
		}
		for p, items := range byPart {
			data := make([][]byte, len(items))
			for i, it := range items {
				data[i] = it.data
			}
			for wait := d.cfg.RetryMin; ; wait = min(2*wait, d.cfg.RetryMax) {
				if err := d.q.Append(d.ctx, p, data); err == nil {
					break
				} else if d.ctx.Err() != nil {
					return
				} else {
					d.log.Warn("cannot append to the webhook outbox; retrying", zap.Error(err))
				}
				select {
				case <-time.After(wait):
				case <-d.ctx.Done():
					return
				}
			}
			d.wake[p].notify()
			d.acknowledge(items)
			delete(byPart, p)
		}
	}
}

// acknowledge drops the relayed records from their sessions' outboxes
// (the last of each session: they are in order). A failure leaves them
// there: pushed again only if the session moves, delivered twice then.
func (d *Dispatcher) acknowledge(items []item) {
	if d.ack == nil {
		return
	}
	last := map[string]string{}
	for _, it := range items {
		if it.sid != "" {
			last[it.sid] = it.id
		}
	}
	for sid, id := range last {
		if err := d.ack(d.ctx, sid, id); err != nil && d.ctx.Err() == nil {
			d.log.Warn("cannot acknowledge relayed webhook messages", zap.String("session", sid), zap.Error(err))
		}
	}
}

// partition leases partition p and, while it holds it, delivers it to
// every endpoint.
func (d *Dispatcher) partition(p int) {
	defer d.wg.Done()
	renew := max(d.cfg.LeaseTTL/3, 10*time.Millisecond)
	for d.ctx.Err() == nil {
		held, err := d.q.Lease(d.ctx, p, d.node, d.cfg.LeaseTTL)
		if err != nil || !held {
			select {
			case <-time.After(renew):
			case <-d.ctx.Done():
			}
			continue
		}
		ctx, cancel := context.WithCancel(d.ctx)
		var workers sync.WaitGroup
		for _, e := range d.eps {
			workers.Add(1)
			go func() {
				defer workers.Done()
				d.deliverPartition(ctx, e, p)
			}()
		}
		t := time.NewTicker(renew)
		for held && err == nil {
			select {
			case <-t.C:
				held, err = d.q.Lease(ctx, p, d.node, d.cfg.LeaseTTL)
			case <-ctx.Done():
				held = false
			}
		}
		t.Stop()
		cancel()
		workers.Wait()
	}
}

// deliverPartition delivers partition p to e, in order, until ctx ends.
func (d *Dispatcher) deliverPartition(ctx context.Context, e *endpoint, p int) {
	cursor, err := d.q.Cursor(ctx, e.Name, p)
	for err != nil && ctx.Err() == nil {
		time.Sleep(d.cfg.RetryMin)
		cursor, err = d.q.Cursor(ctx, e.Name, p)
	}
	tick := time.NewTicker(protocol.WebhookPoll)
	defer tick.Stop()
	for ctx.Err() == nil {
		if reason, _ := d.q.Disabled(ctx, e.Name); reason != "" {
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
			continue
		}
		woken := d.wake[p].wait()
		entries, err := d.q.Read(ctx, p, cursor, protocol.WebhookBatch)
		if err != nil || len(entries) == 0 {
			select {
			case <-woken:
			case <-tick.C:
			case <-ctx.Done():
			}
			continue
		}
		skipped := false
		for _, en := range entries {
			var rec protocol.WebhookRecord
			if json.Unmarshal(en.Data, &rec) != nil || !e.wants(rec.Msg.Type, rec.Teams) {
				cursor, skipped = en.ID, true
				continue
			}
			switch d.deliverWithRetries(ctx, e, p, en, rec) {
			case outcomeStop:
				if skipped {
					_ = d.q.SetCursor(context.WithoutCancel(ctx), e.Name, p, cursor)
				}
				return
			case outcomeGone:
				return
			}
			cursor, skipped = en.ID, false
			if err := d.q.SetCursor(ctx, e.Name, p, cursor); err != nil {
				d.log.Warn("cannot store a webhook cursor", zap.String("endpoint", e.Name), zap.Error(err))
			}
		}
		if skipped {
			_ = d.q.SetCursor(ctx, e.Name, p, cursor)
		}
	}
}

type outcome int

const (
	outcomeDone outcome = iota // delivered or dead-lettered: next
	outcomeStop                // the lease or the node is going
	outcomeGone                // 410: the endpoint is disabled
)

// deliverWithRetries delivers one message until it is acknowledged, or
// dead-letters it once it is older than MaxAge.
func (d *Dispatcher) deliverWithRetries(ctx context.Context, e *endpoint, p int, en Entry, rec protocol.WebhookRecord) outcome {
	for attempt := 1; ; attempt++ {
		status, err := d.attempt(ctx, e, rec.Msg)
		switch {
		case ctx.Err() != nil:
			return outcomeStop
		case err == nil:
			e.mu.Lock()
			e.delivered++
			delete(e.failing, p)
			e.mu.Unlock()
			d.met.delivered.WithLabelValues(e.Name).Inc()
			d.met.latency.WithLabelValues(e.Name).Observe(time.Since(time.UnixMilli(rec.Msg.Time)).Seconds())
			return outcomeDone
		case status == http.StatusGone:
			reason := fmt.Sprintf("the endpoint answered 410 Gone to %s at %s", rec.Msg.ID, time.Now().UTC().Format(time.RFC3339))
			_ = d.q.Disable(context.WithoutCancel(ctx), e.Name, reason)
			d.log.Error("webhook endpoint disabled: it answered 410 Gone", zap.String("endpoint", e.Name))
			return outcomeGone
		}
		d.met.failed.WithLabelValues(e.Name).Inc()
		now := time.Now()
		e.mu.Lock()
		e.lastErr, e.lastErrAt = err.Error(), now
		f := e.failing[p]
		if f == nil || f.ID != rec.Msg.ID {
			f = &Failure{ID: rec.Msg.ID, Type: rec.Msg.Type, AgentID: rec.Msg.AgentID, Since: now, SinceMs: now.UnixMilli()}
			e.failing[p] = f
		}
		f.Attempts, f.LastError = attempt, err.Error()
		e.mu.Unlock()
		backoff := min(d.cfg.RetryMin<<min(attempt-1, 30), d.cfg.RetryMax)
		backoff = backoff/2 + rand.N(backoff/2+1) // jitter: receivers coming back are not stampeded
		if time.Since(entryTime(en.ID))+backoff > d.cfg.MaxAge {
			if err := d.q.DeadLetter(ctx, e.Name, Dead{Entry: en, Reason: err.Error(), At: now}); err != nil {
				return outcomeStop
			}
			e.mu.Lock()
			delete(e.failing, p)
			e.mu.Unlock()
			d.met.dead.WithLabelValues(e.Name).Inc()
			return outcomeDone
		}
		d.met.retries.WithLabelValues(e.Name).Inc()
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return outcomeStop
		}
	}
}

// attempt POSTs one message; nil error: acknowledged (2xx).
func (d *Dispatcher) attempt(ctx context.Context, e *endpoint, m protocol.WebhookMessage) (int, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "ctibroker-webhooks/1")
	if err := e.sign(req.Header, m.ID, time.Now(), body); err != nil {
		return 0, err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, protocol.WebhookMaxBodyEcho))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // reuse the connection
	if resp.StatusCode/100 == 2 {
		return resp.StatusCode, nil
	}
	return resp.StatusCode, fmt.Errorf("HTTP %d: %s", resp.StatusCode, protocol.CutEncoded(string(excerpt), protocol.WebhookMaxBodyEcho))
}

// Status is an endpoint's health.
type Status struct {
	Name               string   `json:"name"`
	URL                string   `json:"url"`
	Events             []string `json:"events"`
	Teams              []string `json:"teams"`
	Signature          string   `json:"signature"`
	Disabled           string   `json:"disabled,omitempty"`
	Pending            int      `json:"pending"`
	OldestPendingAgeMs int64    `json:"oldestPendingAgeMs"`
	Failing            int      `json:"failing"`
	LastError          string   `json:"lastError,omitempty"`
	LastErrorAt        int64    `json:"lastErrorAt,omitempty"`
	// Delivered by this node since it started.
	Delivered uint64 `json:"delivered"`
}

// Endpoints returns every endpoint's health. Pending counts, per
// partition, the messages after the endpoint's cursor (up to
// protocol.WebhookPendingCap a partition: counting a huge backlog would
// cost more than it tells), whichever type they are.
func (d *Dispatcher) Endpoints(ctx context.Context) ([]Status, error) {
	out := make([]Status, 0, len(d.eps))
	for _, e := range d.eps {
		st := Status{Name: e.Name, URL: e.URL, Events: e.Events, Teams: nonNil(e.Teams), Signature: e.Signature}
		var err error
		if st.Disabled, err = d.q.Disabled(ctx, e.Name); err != nil {
			return nil, err
		}
		for p := range d.cfg.Partitions {
			cur, err := d.q.Cursor(ctx, e.Name, p)
			if err != nil {
				return nil, err
			}
			for counted := 0; counted < protocol.WebhookPendingCap; {
				entries, err := d.q.Read(ctx, p, cur, 1000)
				if err != nil {
					return nil, err
				}
				if len(entries) == 0 {
					break
				}
				counted += len(entries)
				st.OldestPendingAgeMs = max(st.OldestPendingAgeMs, time.Since(entryTime(entries[0].ID)).Milliseconds())
				st.Pending += len(entries)
				cur = entries[len(entries)-1].ID
			}
		}
		e.mu.Lock()
		st.Failing, st.LastError, st.Delivered = len(e.failing), e.lastErr, e.delivered
		if !e.lastErrAt.IsZero() {
			st.LastErrorAt = e.lastErrAt.UnixMilli()
		}
		e.mu.Unlock()
		out = append(out, st)
	}
	return out, nil
}

// ErrNoEndpoint: no endpoint of that name.
var ErrNoEndpoint = errors.New("no webhook endpoint of that name")

func (d *Dispatcher) endpoint(name string) (*endpoint, error) {
	i := slices.IndexFunc(d.eps, func(e *endpoint) bool { return e.Name == name })
	if i < 0 {
		return nil, ErrNoEndpoint
	}
	return d.eps[i], nil
}

// Failing lists the messages this node is retrying for an endpoint.
func (d *Dispatcher) Failing(name string) ([]Failure, error) {
	e, err := d.endpoint(name)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Failure, 0, len(e.failing))
	for _, f := range e.failing {
		out = append(out, *f)
	}
	slices.SortFunc(out, func(a, b Failure) int { return a.Since.Compare(b.Since) })
	return out, nil
}

// DeadLetter is a dead-lettered message as REST shows it.
type DeadLetter struct {
	Message protocol.WebhookMessage `json:"message"`
	Reason  string                  `json:"reason"`
	At      int64                   `json:"at"`
}

// DeadLetters pages an endpoint's dead letters.
func (d *Dispatcher) DeadLetters(ctx context.Context, name string, offset, n int) ([]DeadLetter, int, error) {
	if _, err := d.endpoint(name); err != nil {
		return nil, 0, err
	}
	list, total, err := d.q.Dead(ctx, name, offset, n)
	if err != nil {
		return nil, 0, err
	}
	out := make([]DeadLetter, 0, len(list))
	for _, dl := range list {
		var rec protocol.WebhookRecord
		_ = json.Unmarshal(dl.Data, &rec)
		out = append(out, DeadLetter{Message: rec.Msg, Reason: dl.Reason, At: dl.At.UnixMilli()})
	}
	return out, total, nil
}

// Replay takes an endpoint's dead letters and delivers them again, in the
// background (at most one replay per endpoint at a time; they are old and
// are not ordered with the live messages). One that fails again until
// MaxAge from now is dead again. It also enables a disabled endpoint.
func (d *Dispatcher) Replay(ctx context.Context, name string) (int, error) {
	e, err := d.endpoint(name)
	if err != nil {
		return 0, err
	}
	e.mu.Lock()
	busy := e.replaying
	e.replaying = true
	e.mu.Unlock()
	if busy {
		return 0, errors.New("a replay of this endpoint is running")
	}
	if err := d.q.Enable(ctx, name); err != nil {
		return 0, err
	}
	list, err := d.q.TakeDead(ctx, name)
	if err != nil {
		e.mu.Lock()
		e.replaying = false
		e.mu.Unlock()
		return 0, err
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer func() { e.mu.Lock(); e.replaying = false; e.mu.Unlock() }()
		for _, dl := range list {
			var rec protocol.WebhookRecord
			if json.Unmarshal(dl.Data, &rec) != nil {
				continue
			}
			// A fresh outbox-age window: the id's time is now.
			fresh := Entry{ID: fmt.Sprintf("%d-0", time.Now().UnixMilli()), Data: dl.Data}
			if d.deliverWithRetries(d.ctx, e, -1, fresh, rec) == outcomeStop {
				_ = d.q.DeadLetter(context.WithoutCancel(d.ctx), name, dl)
			}
		}
	}()
	return len(list), nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// signal wakes every waiter at once.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func newSignal() *signal { return &signal{ch: make(chan struct{})} }

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}

func (s *signal) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.ch)
	s.ch = make(chan struct{})
}

type metrics struct {
	delivered, failed, retries, dead *prometheus.CounterVec
	latency                          *prometheus.HistogramVec
	pending                          *prometheus.GaugeVec
	dropped                          prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ctibroker_webhook_delivered_total",
			Help: "Webhook messages acknowledged (2xx), by endpoint."}, []string{"endpoint"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ctibroker_webhook_failed_attempts_total",
			Help: "Webhook delivery attempts that failed (error, timeout, non-2xx), by endpoint."}, []string{"endpoint"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ctibroker_webhook_retries_total",
			Help: "Webhook deliveries retried after a failure, by endpoint."}, []string{"endpoint"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ctibroker_webhook_dead_total",
			Help: "Webhook messages dead-lettered after webhooks.maxage, by endpoint."}, []string{"endpoint"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ctibroker_webhook_delivery_seconds",
			Help:    "From a message's event to its acknowledgement, by endpoint.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}}, []string{"endpoint"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ctibroker_webhook_pending",
			Help: "Outbox messages after each endpoint's cursors (at most 10,000 counted per partition), by endpoint."}, []string{"endpoint"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "ctibroker_webhook_relay_dropped_total",
			Help: "Webhook messages dropped because the relay's queue was full (the store was down that long)."}),
	}
	if reg != nil {
		reg.MustRegister(m.delivered, m.failed, m.retries, m.dead, m.latency, m.pending, m.dropped)
	}
	return m
}
