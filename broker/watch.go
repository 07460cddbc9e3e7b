package broker

import (
	"cmp"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/session"
)

// serveWatch streams the supervisor watch as Server-Sent Events:
// GET /v1/watch/agents?teams=&agents=&channelTypes=&statuses=
// The first event is "supervisor.snapshot", then "supervisor.agent.changed"
// events; ids are "<node>:<n>". A stream resumed with Last-Event-ID starts
// with a snapshot whose reason is "resync", which replaces the client's
// view. Changes are read from the board's log as the stream can take them:
// a slow stream gets one change per agent with "conflated", and one that
// falls behind the log gets a resync snapshot. The stream ends with a
// "reset" event when the token expires.
func (s *Server) serveWatch(w http.ResponseWriter, r *http.Request) {
	id, expires, err := s.auth.IdentifyREST(r)
	if err != nil {
		writeError(w, protocol.CodeUnauthorized, err.Error())
		return
	}
	q := r.URL.Query()
	requested := protocol.WatchFilter{Teams: listParam(q, "teams"), Agents: listParam(q, "agents"),
		ChannelTypes: listParam(q, "channelTypes"), Statuses: listParam(q, "statuses")}
	f, fail := session.Scope(id, requested)
	if fail != nil {
		writeError(w, fail.Code, fail.Message)
		return
	}
	wake := make(chan struct{}, 1)
	signal := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	watch, snapshot, err := s.manager.Watch(r.Context(), f, signal)
	if err != nil {
		writeError(w, protocol.CodeUnavailable, err.Error())
		return
	}
	defer func() { watch.Stop() }()
	st, done := s.startStream(w, r, "watch", expires)
	defer done()
	defer st.end()

	var n uint64
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		// Change ids are per stream; a resumed stream always starts with a
		// snapshot that says so, which replaces the client's view.
		if node, seq, ok := strings.Cut(last, ":"); ok && node == s.cfg.Node.ID {
			n, _ = strconv.ParseUint(seq, 10, 64)
		}
	}
	var buf []byte
	add := func(name string, data []byte) {
		n++
		buf = appendEvent(buf, s.cfg.Node.ID+":"+strconv.FormatUint(n, 10), name, data)
	}
	subJSON := []byte(`"sse"`)
	reason := protocol.SnapshotSubscribed
	if r.Header.Get("Last-Event-ID") != "" {
		reason = protocol.SnapshotResync
	}
	addSnapshot := func(agents []protocol.AgentView, reason string) {
		var sum protocol.Summary
		for _, a := range agents {
			sum.Add(a.Status)
		}
		snap, _ := protocol.Marshal(protocol.SupervisorSnapshot{SubscriptionID: "sse", Reason: reason, Agents: agents, Summary: sum})
		add(protocol.EvSupervisorSnapshot, snap)
	}
	addSnapshot(snapshot, reason)
	if st.write(buf) != nil {
		return
	}
	heartbeat := time.NewTicker(protocol.SSEHeartbeatSeconds * time.Second)
	defer heartbeat.Stop()
	var changes []session.Change
	for {
		var err error
		select {
		case <-wake:
			// Wait a little, so that one write carries many changes.
			select {
			case <-time.After(protocol.LiveBatchDelay):
			case <-st.ctx.Done():
				return
			}
			buf = buf[:0]
			var ok bool
			if changes, ok = watch.Changes(changes[:0]); !ok {
				// Changes were lost to this stream: start again from a
				// snapshot.
				watch.Stop()
				if watch, snapshot, err = s.manager.Watch(st.ctx, f, signal); err != nil {
					return
				}
				addSnapshot(snapshot, protocol.SnapshotResync)
			}
			for i := range changes {
				add(protocol.EvSupervisorAgentChanged, changes[i].AppendData(nil, subJSON))
			}
			clear(changes)
			if len(buf) > 0 {
				err = st.write(buf)
			}
		case <-heartbeat.C:
			err = st.comment("heartbeat")
		case <-st.ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// serveQueueWatch streams queue figures as Server-Sent Events:
// GET /v1/watch/queues?queues=a,b (none: every queue the caller may see).
// The first event is "supervisor.snapshot" with "queues" (and no agents),
// then "supervisor.queue.changed" events. A stream that cannot take the
// changes as fast as they come (protocol.QueueStreamQueue behind) starts
// again with a resync snapshot; a resumed one (Last-Event-ID) always does.
func (s *Server) serveQueueWatch(w http.ResponseWriter, r *http.Request) {
	id, expires, err := s.auth.IdentifyREST(r)
	if err != nil {
		writeError(w, protocol.CodeUnauthorized, err.Error())
		return
	}
	if id.Role == RoleAgent {
		writeError(w, protocol.CodeForbidden, "queues are for supervisors and admins")
		return
	}
	names := listParam(r.URL.Query(), "queues")
	if len(names) > protocol.MaxViewQueues {
		writeError(w, protocol.CodeInvalidRequest, "queues: too many")
		return
	}
	changes := make(chan protocol.QueueChanged, protocol.QueueStreamQueue)
	lost := make(chan struct{}, 1)
	deliver := func(prev, cur *protocol.QueueFigures) {
		select {
		case changes <- protocol.QueueChanged{SubscriptionID: "sse", Queue: cmp.Or(cur, prev).Name, Previous: prev, Current: cur}:
		default:
			select {
			case lost <- struct{}{}:
			default:
			}
		}
	}
	watch, snapshot, err := s.manager.WatchQueues(r.Context(), id, names, deliver)
	if errors.Is(err, session.ErrNoQueues) {
		writeError(w, protocol.CodeNotSupported, err.Error())
		return
	}
	if err != nil {
		writeError(w, protocol.CodeUnavailable, err.Error())
		return
	}
	defer func() { watch.Stop() }()
	st, done := s.startStream(w, r, "queues", expires)
	defer done()
	defer st.end()

	var n uint64
	next := func() string { n++; return s.cfg.Node.ID + ":q" + strconv.FormatUint(n, 10) }
	snap := func(queues []protocol.QueueFigures, reason string) error {
		data, _ := protocol.Marshal(protocol.SupervisorSnapshot{SubscriptionID: "sse", Reason: reason, Agents: []protocol.AgentView{}, Queues: queues})
		return st.event(next(), protocol.EvSupervisorSnapshot, data)
	}
	reason := protocol.SnapshotSubscribed
	if r.Header.Get("Last-Event-ID") != "" {
		reason = protocol.SnapshotResync
	}
	if snap(snapshot, reason) != nil {
		return
	}
	heartbeat := time.NewTicker(protocol.SSEHeartbeatSeconds * time.Second)
	defer heartbeat.Stop()
	for {
		var err error
		select {
		case c := <-changes:
			data, _ := protocol.Marshal(c)
			err = st.event(next(), protocol.EvSupervisorQueueChanged, data)
		case <-lost:
			// Changes were dropped: start again from a snapshot.
			watch.Stop()
			for len(changes) > 0 {
				<-changes
			}
			if watch, snapshot, err = s.manager.WatchQueues(st.ctx, id, names, deliver); err != nil {
				return
			}
			err = snap(snapshot, protocol.SnapshotResync)
		case <-heartbeat.C:
			err = st.comment("heartbeat")
		case <-st.ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}
