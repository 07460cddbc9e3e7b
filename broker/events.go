package broker

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/session"
)

// serveAgentEvents streams an agent's session events as Server-Sent Events,
// from whichever node owns the session: GET /v1/agents/{id}/events.
// Resume with Last-Event-ID (<session>:<seq>, as sent in every id: line) or
// ?since=<seq> (of the agent's live session). An event named "reset" says
// events were lost beyond recovery (reload the agent's state), or, with
// {"reason":"token expired"}, that the stream ends: reconnect with a fresh
// token.
func (s *Server) serveAgentEvents(w http.ResponseWriter, r *http.Request) {
	ident, expires, err := s.auth.IdentifyREST(r)
	if err != nil {
		writeError(w, protocol.CodeUnauthorized, err.Error())
		return
	}
	agent := r.PathValue("id")
	if err := protocol.ValidateID(agent); err != nil {
		writeError(w, protocol.CodeInvalidRequest, "agent id: "+err.Error())
		return
	}
	teams, err := s.agentTeams(r.Context(), ident, agent)
	if err != nil {
		writeError(w, protocol.CodeUnavailable, err.Error())
		return
	}
	if !maySee(ident, agent, teams) {
		writeError(w, protocol.CodeForbidden, "agents may follow only themselves, supervisors the agents of their teams")
		return
	}
	from := map[string]uint64{}
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		sid, seq, ok := strings.Cut(id, ":")
		n, err := strconv.ParseUint(seq, 10, 64)
		if !ok || err != nil || protocol.ValidateID(sid) != nil {
			writeError(w, protocol.CodeInvalidRequest, "Last-Event-ID: want <session>:<seq>")
			return
		}
		// A resume id is checked like the path: replaying another
		// agent's session through this stream would bypass the rule above.
		owner, err := s.manager.SessionOwner(r.Context(), sid)
		switch {
		case err != nil:
			writeError(w, protocol.CodeUnavailable, "the session store is unreachable")
			return
		case owner != "" && owner != agent:
			writeError(w, protocol.CodeForbidden, "Last-Event-ID names a session of another agent")
			return
		case owner == agent:
			from[sid] = n
		}
		// An unknown session (expired from the history) resumes nothing:
		// the stream starts live.
	} else if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, protocol.CodeInvalidRequest, "query parameter since: not a sequence number")
			return
		}
		sid, err := s.manager.SessionOf(r.Context(), agent)
		if err != nil {
			writeError(w, protocol.CodeUnavailable, "the session store is unreachable")
			return
		}
		if sid != "" {
			from[sid] = n
		}
	}
	st, done := s.startStream(w, r, "events", expires)
	defer done()
	defer st.end()
	if st.comment("ctibroker agent events") != nil {
		return
	}
	heartbeat := time.NewTicker(protocol.SSEHeartbeatSeconds * time.Second)
	defer heartbeat.Stop()
	// Follow blocks on a full queue: a stream that falls behind holds its
	// bus subscription back until the write deadline drops it.
	events := make(chan session.Envelope, protocol.AgentStreamQueue)
	followErr := make(chan error, 1)
	go func() {
		followErr <- s.manager.Follow(st.ctx, session.AgentTopic(agent), from, func(e session.Envelope) error {
			select {
			case events <- e:
				return nil
			case <-st.ctx.Done():
				return st.ctx.Err()
			}
		})
	}()
	for {
		var err error
		select {
		case e := <-events:
			id := e.Session + ":" + strconv.FormatUint(e.Seq, 10)
			if e.Reset {
				err = st.event(id, "reset", fmt.Appendf(nil, `{"session":%q,"seq":%d}`, e.Session, e.Seq))
			} else {
				err = st.event(id, eventName(e.Event), e.Event)
			}
		case <-heartbeat.C:
			err = st.comment("heartbeat")
		case err := <-followErr:
			if err != nil && st.ctx.Err() == nil {
				s.log.Warn("agent event stream ended", zap.String("agent", agent), zap.Error(err))
			}
			return
		}
		if err != nil {
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
