package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/store"
)

// timed runs f and records its latency and failure under op.
func timed[T any](d *prometheus.HistogramVec, e *prometheus.CounterVec, op string, f func() (T, error)) (T, error) {
	start := time.Now()
	v, err := f()
	d.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		e.WithLabelValues(op).Inc()
	}
	return v, err
}

func timedErr(d *prometheus.HistogramVec, e *prometheus.CounterVec, op string, f func() error) error {
	_, err := timed(d, e, op, func() (struct{}, error) { return struct{}{}, f() })
	return err
}

// Adapter measures every call of a. The decorator implements every method
// itself (no embedded interface): a method added to adapters.Adapter does
// not compile until it is measured here.
// An adapter with call control keeps it, measured too.
func (m *Metrics) Adapter(a adapters.Adapter) adapters.Adapter {
	am := &adapterMetrics{a, m}
	if cc, ok := a.(adapters.CallControl); ok {
		return &callControlMetrics{am, cc}
	}
	return am
}

type callControlMetrics struct {
	*adapterMetrics
	cc adapters.CallControl
}

var _ adapters.CallControl = (*callControlMetrics)(nil)

func (a *callControlMetrics) Dial(ctx context.Context, ch adapters.ChannelRef, dest string, data map[string]string) (string, error) {
	return timed(a.m.AdapterDuration, a.m.AdapterErrors, "dial", func() (string, error) { return a.cc.Dial(ctx, ch, dest, data) })
}

func (a *callControlMetrics) Accept(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return a.call("accept", func() error { return a.cc.Accept(ctx, ch, id) })
}

func (a *callControlMetrics) Reject(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return a.call("reject", func() error { return a.cc.Reject(ctx, ch, id) })
}

func (a *callControlMetrics) Hold(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return a.call("hold", func() error { return a.cc.Hold(ctx, ch, id) })
}

func (a *callControlMetrics) Retrieve(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return a.call("retrieve", func() error { return a.cc.Retrieve(ctx, ch, id) })
}

func (a *callControlMetrics) Release(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return a.call("release", func() error { return a.cc.Release(ctx, ch, id) })
}

func (a *callControlMetrics) BlindTransfer(ctx context.Context, ch adapters.ChannelRef, id, dest string) error {
	return a.call("blindtransfer", func() error { return a.cc.BlindTransfer(ctx, ch, id, dest) })
}

func (a *callControlMetrics) Consult(ctx context.Context, ch adapters.ChannelRef, id, dest string) (string, error) {
	return timed(a.m.AdapterDuration, a.m.AdapterErrors, "consult", func() (string, error) { return a.cc.Consult(ctx, ch, id, dest) })
}

func (a *callControlMetrics) ConsultTransfer(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return a.call("consulttransfer", func() error { return a.cc.ConsultTransfer(ctx, ch, id) })
}

func (a *callControlMetrics) ConsultConference(ctx context.Context, ch adapters.ChannelRef, id string) error {
	return a.call("consultconference", func() error { return a.cc.ConsultConference(ctx, ch, id) })
}

func (a *callControlMetrics) SendDTMF(ctx context.Context, ch adapters.ChannelRef, id, digits string) error {
	return a.call("senddtmf", func() error { return a.cc.SendDTMF(ctx, ch, id, digits) })
}

func (a *callControlMetrics) SetData(ctx context.Context, ch adapters.ChannelRef, id string, data map[string]string) error {
	return a.call("setdata", func() error { return a.cc.SetData(ctx, ch, id, data) })
}

func (a *callControlMetrics) Complete(ctx context.Context, ch adapters.ChannelRef, id, disposition string) error {
	return a.call("complete", func() error { return a.cc.Complete(ctx, ch, id, disposition) })
}

func (a *callControlMetrics) Dispositions(ctx context.Context, agent string) ([]protocol.Disposition, error) {
	return timed(a.m.AdapterDuration, a.m.AdapterErrors, "dispositions", func() ([]protocol.Disposition, error) { return a.cc.Dispositions(ctx, agent) })
}

func (a *callControlMetrics) Interactions(ctx context.Context, agent string) ([]protocol.Interaction, error) {
	return timed(a.m.AdapterDuration, a.m.AdapterErrors, "interactions", func() ([]protocol.Interaction, error) { return a.cc.Interactions(ctx, agent) })
}

type adapterMetrics struct {
	next adapters.Adapter
	m    *Metrics
}

var _ adapters.Adapter = (*adapterMetrics)(nil)

func (a *adapterMetrics) call(op string, f func() error) error {
	return timedErr(a.m.AdapterDuration, a.m.AdapterErrors, op, f)
}

func (a *adapterMetrics) Logins(ctx context.Context, agent string) ([]adapters.Login, error) {
	return timed(a.m.AdapterDuration, a.m.AdapterErrors, "logins", func() ([]adapters.Login, error) { return a.next.Logins(ctx, agent) })
}

func (a *adapterMetrics) Activate(ctx context.Context, ch adapters.ChannelRef, queues []string) error {
	return a.call("activate", func() error { return a.next.Activate(ctx, ch, queues) })
}

func (a *adapterMetrics) Deactivate(ctx context.Context, ch adapters.ChannelRef, reason string) error {
	return a.call("deactivate", func() error { return a.next.Deactivate(ctx, ch, reason) })
}

func (a *adapterMetrics) SetReady(ctx context.Context, ch adapters.ChannelRef) error {
	return a.call("ready", func() error { return a.next.SetReady(ctx, ch) })
}

func (a *adapterMetrics) SetNotReady(ctx context.Context, ch adapters.ChannelRef, code string) error {
	return a.call("notready", func() error { return a.next.SetNotReady(ctx, ch, code) })
}

func (a *adapterMetrics) NotReadyReasons(ctx context.Context, agent string) ([]protocol.ReasonCode, error) {
	return timed(a.m.AdapterDuration, a.m.AdapterErrors, "notreadyreasons", func() ([]protocol.ReasonCode, error) { return a.next.NotReadyReasons(ctx, agent) })
}

func (a *adapterMetrics) LogoutReasons(ctx context.Context, agent string) ([]protocol.LogoutReason, error) {
	return timed(a.m.AdapterDuration, a.m.AdapterErrors, "logoutreasons", func() ([]protocol.LogoutReason, error) { return a.next.LogoutReasons(ctx, agent) })
}

func (a *adapterMetrics) AddressBook(ctx context.Context, agent string) (protocol.AddressBooks, error) {
	return timed(a.m.AdapterDuration, a.m.AdapterErrors, "addressbook", func() (protocol.AddressBooks, error) { return a.next.AddressBook(ctx, agent) })
}

func (a *adapterMetrics) Teams(ctx context.Context, agent string) ([]string, error) {
	return timed(a.m.AdapterDuration, a.m.AdapterErrors, "teams", func() ([]string, error) { return a.next.Teams(ctx, agent) })
}

// Store measures every call of s: with Redis, that is the Redis round trip.
// Like Adapter, it implements every method itself.
func (m *Metrics) Store(s store.Store) store.Store { return &storeMetrics{s, m} }

type storeMetrics struct {
	next store.Store
	m    *Metrics
}

var _ store.Store = (*storeMetrics)(nil)

func sm[T any](s *storeMetrics, op string, f func() (T, error)) (T, error) {
	return timed(s.m.StoreDuration, s.m.StoreErrors, op, f)
}

func (s *storeMetrics) do(op string, f func() error) error {
	return timedErr(s.m.StoreDuration, s.m.StoreErrors, op, f)
}

func (s *storeMetrics) Claim(ctx context.Context, agent, sid string) (string, error) {
	return sm(s, "claim", func() (string, error) { return s.next.Claim(ctx, agent, sid) })
}

func (s *storeMetrics) SessionOf(ctx context.Context, agent string) (string, error) {
	return sm(s, "sessionof", func() (string, error) { return s.next.SessionOf(ctx, agent) })
}

func (s *storeMetrics) Acquire(ctx context.Context, sid, agent, node string, ttl time.Duration) (string, error) {
	return sm(s, "acquire", func() (string, error) { return s.next.Acquire(ctx, sid, agent, node, ttl) })
}

func (s *storeMetrics) Heartbeat(ctx context.Context, node string, ttl time.Duration) error {
	return s.do("heartbeat", func() error { return s.next.Heartbeat(ctx, node, ttl) })
}

func (s *storeMetrics) Renew(ctx context.Context, node string, ttl time.Duration, leases []store.Lease) ([]string, error) {
	return sm(s, "renew", func() ([]string, error) { return s.next.Renew(ctx, node, ttl, leases) })
}

func (s *storeMetrics) Owner(ctx context.Context, sid string) (string, error) {
	return sm(s, "owner", func() (string, error) { return s.next.Owner(ctx, sid) })
}

func (s *storeMetrics) Release(ctx context.Context, sid, node string) error {
	return s.do("release", func() error { return s.next.Release(ctx, sid, node) })
}

func (s *storeMetrics) Load(ctx context.Context, sid string) (store.Record, bool, error) {
	type loaded struct {
		r  store.Record
		ok bool
	}
	v, err := sm(s, "load", func() (loaded, error) {
		r, ok, err := s.next.Load(ctx, sid)
		return loaded{r, ok}, err
	})
	return v.r, v.ok, err
}

func (s *storeMetrics) Commit(ctx context.Context, c store.Commit) error {
	return s.do("commit", func() error { return s.next.Commit(ctx, c) })
}

func (s *storeMetrics) EventsSince(ctx context.Context, sid string, since, last uint64) ([][]byte, bool, error) {
	type got struct {
		evs [][]byte
		ok  bool
	}
	v, err := sm(s, "eventssince", func() (got, error) {
		evs, ok, err := s.next.EventsSince(ctx, sid, since, last)
		return got{evs, ok}, err
	})
	return v.evs, v.ok, err
}

func (s *storeMetrics) LastSeq(ctx context.Context, sid string) (uint64, error) {
	return sm(s, "lastseq", func() (uint64, error) { return s.next.LastSeq(ctx, sid) })
}

func (s *storeMetrics) Ping(ctx context.Context) error {
	return s.do("ping", func() error { return s.next.Ping(ctx) })
}

func (s *storeMetrics) End(ctx context.Context, agent, sid string) error {
	return s.do("end", func() error { return s.next.End(ctx, agent, sid) })
}

// Events passes the adapter's event stream through: reading it is not a call.
func (a *adapterMetrics) Events() <-chan adapters.Event { return a.next.Events() }

// Close closes the adapter.
func (a *adapterMetrics) Close() error { return a.next.Close() }

// Durable is a property, not a call.
func (s *storeMetrics) Durable() bool { return s.next.Durable() }

func (s *storeMetrics) Unowned(ctx context.Context) ([]string, error) {
	return sm(s, "unowned", func() ([]string, error) { return s.next.Unowned(ctx) })
}

func (s *storeMetrics) LiveSessions(ctx context.Context) ([]store.Record, error) {
	return sm(s, "livesessions", func() ([]store.Record, error) { return s.next.LiveSessions(ctx) })
}

func (s *storeMetrics) AgentSessions(ctx context.Context, agent string) ([]store.SessionRef, error) {
	return sm(s, "agentsessions", func() ([]store.SessionRef, error) { return s.next.AgentSessions(ctx, agent) })
}

func (s *storeMetrics) HistoryAgents(ctx context.Context) ([]string, error) {
	return sm(s, "historyagents", func() ([]string, error) { return s.next.HistoryAgents(ctx) })
}

func (s *storeMetrics) Timeline(ctx context.Context, sid string) ([][]byte, error) {
	return sm(s, "timeline", func() ([][]byte, error) { return s.next.Timeline(ctx, sid) })
}

func (s *storeMetrics) Reply(ctx context.Context, sid, requestID string) ([]byte, bool, error) {
	type got struct {
		msg []byte
		ok  bool
	}
	v, err := sm(s, "reply", func() (got, error) {
		msg, ok, err := s.next.Reply(ctx, sid, requestID)
		return got{msg, ok}, err
	})
	return v.msg, v.ok, err
}

// Close closes the store.
func (s *storeMetrics) Close() error { return s.next.Close() }

// Register passes registration on to an adapter that routes events by
// agent (adapters.Registrar), measured; for others it does nothing.
func (a *adapterMetrics) Register(ctx context.Context, agent string) error {
	r, ok := a.next.(adapters.Registrar)
	if !ok {
		return nil
	}
	return a.call("register", func() error { return r.Register(ctx, agent) })
}

// HasCallControl and HasQueues pass on what an adapter whose parts depend
// on what it reaches (adapters.Capabilities) says; others have what they
// implement.
func (a *adapterMetrics) HasCallControl() bool {
	if c, ok := a.next.(adapters.Capabilities); ok {
		return c.HasCallControl()
	}
	_, ok := a.next.(adapters.CallControl)
	return ok
}

func (a *adapterMetrics) HasQueues() bool {
	if c, ok := a.next.(adapters.Capabilities); ok {
		return c.HasQueues()
	}
	_, ok := a.next.(adapters.QueueReporter)
	return ok
}

func (s *storeMetrics) Outbox(ctx context.Context, sid string) ([]store.OutboxEntry, error) {
	return timed(s.m.StoreDuration, s.m.StoreErrors, "outbox", func() ([]store.OutboxEntry, error) { return s.next.Outbox(ctx, sid) })
}

func (s *storeMetrics) AckOutbox(ctx context.Context, sid, id string) error {
	return s.do("ackoutbox", func() error { return s.next.AckOutbox(ctx, sid, id) })
}

// DisplayName passes an agent's name on from an adapter that knows names
// (adapters.Directory), measured; others know none.
func (a *adapterMetrics) DisplayName(ctx context.Context, agent string) (string, error) {
	d, ok := a.next.(adapters.Directory)
	if !ok {
		return "", nil
	}
	return timed(a.m.AdapterDuration, a.m.AdapterErrors, "displayname", func() (string, error) { return d.DisplayName(ctx, agent) })
}
