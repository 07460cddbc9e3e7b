package broker

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/session"
)

// serveWatch streams the supervisor watch as Server-Sent Events:
// GET /v1/watch/agents?teams=&agents=&channelTypes=&statuses=
// The first event is "supervisor.snapshot", then "supervisor.agent.changed"
// events; ids are "<node>:<n>". A stream resumed with Last-Event-ID starts
// with a snapshot whose reason is "resync", which replaces the client's
// view. The stream ends with a "reset" event when the token expires.
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
	changes := make(chan session.Change, protocol.WatchQueue)
	var overflow sync.Once
	overflowed := make(chan struct{})
	snapshot, unwatch, err := s.manager.Watch(r.Context(), f, func(c session.Change) {
		select {
		case changes <- c:
		default:
			overflow.Do(func() { close(overflowed) })
		}
	})
	if err != nil {
		writeError(w, protocol.CodeUnavailable, err.Error())
		return
	}
	defer unwatch()
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
	send := func(name string, data []byte) error {
		n++
		return st.event(s.cfg.Node.ID+":"+strconv.FormatUint(n, 10), name, data)
	}
	subJSON := []byte(`"sse"`)
	reason := protocol.SnapshotSubscribed
	if r.Header.Get("Last-Event-ID") != "" {
		reason = protocol.SnapshotResync
	}
	var sum protocol.Summary
	for _, a := range snapshot {
		sum.Add(a.Status)
	}
	snap, _ := protocol.Marshal(protocol.SupervisorSnapshot{SubscriptionID: "sse", Reason: reason, Agents: snapshot, Summary: sum})
	if send(protocol.EvSupervisorSnapshot, snap) != nil {
		return
	}
	heartbeat := time.NewTicker(protocol.SSEHeartbeatSeconds * time.Second)
	defer heartbeat.Stop()
	for {
		var err error
		select {
		case c := <-changes:
			err = send(protocol.EvSupervisorAgentChanged, c.AppendData(nil, subJSON))
		case <-heartbeat.C:
			err = st.comment("heartbeat")
		case <-overflowed:
			return
		case <-st.ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}
