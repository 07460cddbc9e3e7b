package session

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"

	"github.com/ctibroker/ctibroker/bus"
	"github.com/ctibroker/ctibroker/protocol"
)

// Envelope is an event as published on the bus: the event itself with the
// agent, session and seq it belongs to.
type Envelope struct {
	Agent   string          `json:"agent"`
	Session string          `json:"session"`
	Seq     uint64          `json:"seq"`
	Event   json.RawMessage `json:"event"`
	// Reset is set (with no Event) when events of Session up to Seq could
	// not be recovered: the consumer must reload the agent's state.
	Reset bool `json:"reset,omitempty"`
}

// AgentTopic and AllTopic are the bus topics events are published on.
func AgentTopic(agent string) string { return "agent:" + agent }

// AllTopic carries every event.
const AllTopic = "all"

// Follow delivers the events published on topic, per session in seq order,
// without gaps or duplicates, until ctx ends or deliver fails. from gives,
// per session id, the seq to resume after; those sessions are caught up
// from the store first. A seq gap, a subscriber overflow or a re-subscribed
// bus connection is repaired from the session's event stream; what the
// stream no longer holds is reported with a Reset envelope.
func (m *Manager) Follow(ctx context.Context, topic string, from map[string]uint64, deliver func(Envelope) error) error {
	return m.follow(ctx, topic, from, nil, deliver)
}

// follow is Follow, calling subscribed (when set) once the subscription is active.
func (m *Manager) follow(ctx context.Context, topic string, from map[string]uint64, subscribed func(), deliver func(Envelope) error) error {
	sub, err := m.bus.Subscribe(ctx, topic, protocol.FollowBuffer)
	if err != nil {
		return fmt.Errorf("follow %s: %w", topic, err)
	}
	defer sub.Close()
	if subscribed != nil {
		subscribed()
	}
	f := &follower{m: m, last: maps.Clone(from), agents: map[string]string{}, deliver: deliver}
	if f.last == nil {
		f.last = map[string]uint64{}
	}
	for sid := range f.last {
		if err := f.catchUp(ctx, sid, 0); err != nil {
			return err
		}
	}
	for {
		select {
		case msg := <-sub.C:
			if err := f.handle(ctx, msg); err != nil {
				return err
			}
		case <-sub.Resync:
			for sid := range f.last {
				if err := f.catchUp(ctx, sid, 0); err != nil {
					return err
				}
			}
		case <-ctx.Done():
			return nil
		}
	}
}

type follower struct {
	m       *Manager
	last    map[string]uint64
	agents  map[string]string
	deliver func(Envelope) error
}

// handle delivers the envelopes of a bus message (one per line: see
// store.BusMessage).
func (f *follower) handle(ctx context.Context, msg bus.Message) error {
	for line := range bytes.SplitSeq(msg.Payload, []byte{'\n'}) {
		if err := f.handleEnvelope(ctx, line); err != nil {
			return err
		}
	}
	return nil
}

func (f *follower) handleEnvelope(ctx context.Context, line []byte) error {
	var env Envelope
	if err := json.Unmarshal(line, &env); err != nil || env.Session == "" {
		f.m.log.Warn("ignoring a malformed bus message")
		return nil
	}
	f.agents[env.Session] = env.Agent
	prev, known := f.last[env.Session]
	switch {
	case known && env.Seq <= prev:
		return nil // already delivered (from the stream, or a duplicate)
	case known && env.Seq > prev+1:
		if err := f.catchUp(ctx, env.Session, env.Seq-1); err != nil {
			return err
		}
		if f.last[env.Session] < env.Seq-1 {
			// The store could not fill the gap: never skip it silently.
			if err := f.deliver(Envelope{Agent: env.Agent, Session: env.Session, Seq: env.Seq - 1, Reset: true}); err != nil {
				return err
			}
		}
	}
	f.last[env.Session] = env.Seq
	return f.deliver(env)
}

// catchUp delivers the stored events of sid after the last delivered seq, up
// to upTo (0: the stream's last).
func (f *follower) catchUp(ctx context.Context, sid string, upTo uint64) error {
	sctx, cancel := context.WithTimeout(ctx, f.m.opts.StoreTimeout)
	defer cancel()
	if upTo == 0 {
		last, err := f.m.store.LastSeq(sctx, sid)
		if err != nil {
			return nil // the store is down: the next resync or gap retries
		}
		upTo = last
	}
	prev := f.last[sid]
	if upTo <= prev {
		return nil
	}
	events, ok, err := f.m.store.EventsSince(sctx, sid, prev, upTo)
	if err != nil {
		return nil
	}
	if !ok {
		f.last[sid] = upTo
		return f.deliver(Envelope{Agent: f.agents[sid], Session: sid, Seq: upTo, Reset: true})
	}
	for _, raw := range events {
		var head struct {
			Seq uint64 `json:"seq"`
		}
		_ = json.Unmarshal(raw, &head)
		f.last[sid] = head.Seq
		if err := f.deliver(Envelope{Agent: f.agents[sid], Session: sid, Seq: head.Seq, Event: raw}); err != nil {
			return err
		}
	}
	return nil
}

// SessionOf returns the agent's live session id from the store.
func (m *Manager) SessionOf(ctx context.Context, agent string) (string, error) {
	sctx, cancel := context.WithTimeout(ctx, m.opts.StoreTimeout)
	defer cancel()
	return m.store.SessionOf(sctx, agent)
}
