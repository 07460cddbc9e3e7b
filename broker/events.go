package broker

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/session"
)

// sseHeartbeat keeps idle event streams open through proxies.
const sseHeartbeat = 15 * time.Second

// serveAgentEvents streams an agent's session events as Server-Sent Events,
// from whichever node owns the session: GET /v1/agents/{id}/events.
// Resume with Last-Event-ID (<session>:<seq>, as sent in every id: line) or
// ?since=<seq> (of the agent's live session). An event named "reset" says
// events were lost beyond recovery: reload the agent's state.
func (s *Server) serveAgentEvents(w http.ResponseWriter, r *http.Request) {
	ident, err := s.auth.IdentifyREST(r)
	if err != nil {
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", err.Error())
		return
	}
	agent := r.PathValue("id")
	if err := protocol.ValidateID(agent); err != nil {
		writeError(w, http.StatusBadRequest, "INVALID_REQUEST", "agent id: "+err.Error())
		return
	}
	teams, err := s.agentTeams(r.Context(), ident, agent)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", err.Error())
		return
	}
	if !maySee(ident, agent, teams) {
		writeError(w, http.StatusForbidden, "FORBIDDEN", "agents may follow only themselves, supervisors the agents of their teams")
		return
	}
	from := map[string]uint64{}
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		sid, seq, ok := strings.Cut(id, ":")
		n, err := strconv.ParseUint(seq, 10, 64)
		if !ok || err != nil || protocol.ValidateID(sid) != nil {
			writeError(w, http.StatusBadRequest, "INVALID_REQUEST", "Last-Event-ID: want <session>:<seq>")
			return
		}
		// A resume id is checked like the path: replaying another
		// agent's session through this stream would bypass the rule above.
		owner, err := s.manager.SessionOwner(r.Context(), sid)
		switch {
		case err != nil:
			writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "the session store is unreachable")
			return
		case owner != "" && owner != agent:
			writeError(w, http.StatusForbidden, "FORBIDDEN", "Last-Event-ID names a session of another agent")
			return
		case owner == agent:
			from[sid] = n
		}
		// An unknown session (expired from the history) resumes nothing:
		// the stream starts live.
	} else if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "INVALID_REQUEST", "query parameter since: not a sequence number")
			return
		}
		sid, err := s.manager.SessionOf(r.Context(), agent)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "the session store is unreachable")
			return
		}
		if sid != "" {
			from[sid] = n
		}
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "INTERNAL", "streaming unsupported")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprint(w, ": ctibroker agent events\n\n")
	flusher.Flush()

	// The stream ends with the request or at shutdown.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.streams, cancel)
	defer stop()
	heartbeat := time.NewTicker(sseHeartbeat)
	defer heartbeat.Stop()
	events := make(chan session.Envelope, 256)
	followErr := make(chan error, 1)
	go func() {
		followErr <- s.manager.Follow(ctx, session.AgentTopic(agent), from, func(e session.Envelope) error {
			select {
			case events <- e:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	for {
		select {
		case e := <-events:
			var err error
			if e.Reset {
				_, err = fmt.Fprintf(w, "id: %s:%d\nevent: reset\ndata: {\"session\":%q,\"seq\":%d}\n\n", e.Session, e.Seq, e.Session, e.Seq)
			} else {
				_, err = fmt.Fprintf(w, "id: %s:%d\nevent: %s\ndata: %s\n\n", e.Session, e.Seq, eventName(e.Event), e.Event)
			}
			if err != nil {
				return
			}
			flusher.Flush()
		case <-heartbeat.C:
			if _, err := fmt.Fprint(w, ": heartbeat\n\n"); err != nil {
				return
			}
			flusher.Flush()
		case err := <-followErr:
			if err != nil && ctx.Err() == nil {
				s.log.Warn("agent event stream ended", zap.String("agent", agent), zap.Error(err))
			}
			return
		}
	}
}

// eventName extracts "name" from an encoded event without decoding it all.
func eventName(raw []byte) string {
	const key = `"name":"`
	i := strings.Index(string(raw), key)
	if i < 0 {
		return "message"
	}
	rest := string(raw[i+len(key):])
	if j := strings.IndexByte(rest, '"'); j >= 0 {
		return rest[:j]
	}
	return "message"
}
