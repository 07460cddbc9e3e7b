package broker

import (
	"context"
	"fmt"
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
// events; ids are "<node>:<n>". A client reconnecting with Last-Event-ID
// of this node gets the changes it missed while they are still in the
// node's buffer, otherwise a fresh snapshot with reason "resync".
func (s *Server) serveWatch(w http.ResponseWriter, r *http.Request) {
	id, err := s.auth.IdentifyREST(r)
	if err != nil {
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", err.Error())
		return
	}
	q := r.URL.Query()
	requested := protocol.WatchFilter{Teams: listParam(q, "teams"), Agents: listParam(q, "agents"),
		ChannelTypes: listParam(q, "channelTypes"), Statuses: listParam(q, "statuses")}
	f, fail := session.Scope(id, requested)
	if fail != nil {
		writeError(w, http.StatusForbidden, string(fail.Code), fail.Message)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "INTERNAL", "streaming unsupported")
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.streams, cancel)
	defer stop()

	// Changes go through a bounded queue: a client that cannot keep up is
	// cut off (it reconnects and gets a fresh snapshot), never buffered
	// without bound.
	changes := make(chan session.Change, 4096)
	var overflow sync.Once
	overflowed := make(chan struct{})
	snapshot, unwatch, err := s.manager.Watch(ctx, f, func(c session.Change) {
		select {
		case changes <- c:
		default:
			overflow.Do(func() { close(overflowed) })
		}
	})
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", err.Error())
		return
	}
	defer unwatch()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	var n uint64
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		// Change ids are per stream; a resumed stream always starts with a
		// snapshot that says so, which replaces the client's view.
		if node, seq, ok := strings.Cut(last, ":"); ok && node == s.cfg.Node.ID {
			n, _ = strconv.ParseUint(seq, 10, 64)
		}
	}
	sendRaw := func(name string, b []byte) bool {
		n++
		if _, err := fmt.Fprintf(w, "id: %s:%d\nevent: %s\ndata: %s\n\n", s.cfg.Node.ID, n, name, b); err != nil {
			return false
		}
		flusher.Flush()
		return true
	}
	send := func(name string, v any) bool {
		b, _ := protocol.Marshal(v)
		return sendRaw(name, b)
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
	if !send(protocol.EvSupervisorSnapshot, protocol.SupervisorSnapshot{SubscriptionID: "sse", Reason: reason, Agents: snapshot, Summary: sum}) {
		return
	}
	heartbeat := time.NewTicker(sseHeartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case c := <-changes:
			if !sendRaw(protocol.EvSupervisorAgentChanged, c.AppendData(nil, subJSON)) {
				return
			}
		case <-heartbeat.C:
			if _, err := fmt.Fprint(w, ": heartbeat\n\n"); err != nil {
				return
			}
			flusher.Flush()
		case <-overflowed:
			return
		case <-ctx.Done():
			return
		}
	}
}
