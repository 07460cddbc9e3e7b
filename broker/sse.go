package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// sseStream is one Server-Sent Events response. Every write has a deadline
// (ws.writetimeout): a client that does not read is dropped, as a slow
// WebSocket is, instead of holding its handler forever. Its context ends
// with the request, at shutdown, and when the caller's token expires; the
// stream then says why with a last "reset" event (see end).
type sseStream struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	ctx     context.Context
	expired func() bool
}

// errTokenExpired ends a stream whose caller's token expired.
var errTokenExpired = errors.New("token expired")

// startStream sends the stream's headers. The returned stream's context
// ends as described above; done releases it.
func (s *Server) startStream(w http.ResponseWriter, r *http.Request, kind string, expires time.Time) (*sseStream, func()) {
	ctx, cancel := context.WithCancelCause(r.Context())
	stop := context.AfterFunc(s.streams, func() { cancel(context.Canceled) })
	var expiry *time.Timer
	if !expires.IsZero() {
		expiry = time.AfterFunc(time.Until(expires), func() { cancel(errTokenExpired) })
	}
	st := &sseStream{w: w, rc: http.NewResponseController(w), timeout: s.cfg.WS.WriteTimeout, ctx: ctx,
		expired: func() bool { return errors.Is(context.Cause(ctx), errTokenExpired) }}
	// A stream reads nothing after its request: the server's read deadline
	// must not end it.
	_ = st.rc.SetReadDeadline(time.Time{})
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s.metrics.Stream(kind, 1)
	return st, func() {
		s.metrics.Stream(kind, -1)
		if expiry != nil {
			expiry.Stop()
		}
		stop()
		cancel(context.Canceled)
	}
}

// write sends p with a deadline and flushes it.
func (st *sseStream) write(p []byte) error {
	if err := st.rc.SetWriteDeadline(time.Now().Add(st.timeout)); err != nil {
		return err
	}
	if _, err := st.w.Write(p); err != nil {
		return err
	}
	return st.rc.Flush()
}

// event sends one event (data must be one line of JSON).
func (st *sseStream) event(id, name string, data []byte) error {
	return st.write(appendEvent(make([]byte, 0, len(id)+len(name)+len(data)+24), id, name, data))
}

// appendEvent appends one event to a buffer, for several at once.
func appendEvent(buf []byte, id, name string, data []byte) []byte {
	if id != "" {
		buf = fmt.Appendf(buf, "id: %s\n", id)
	}
	buf = fmt.Appendf(buf, "event: %s\ndata: ", name)
	buf = append(buf, data...)
	return append(buf, "\n\n"...)
}

// comment sends an SSE comment (heartbeats).
func (st *sseStream) comment(text string) error {
	return st.write([]byte(": " + text + "\n\n"))
}

// end says why the stream ends when the token expired: a last "reset"
// event, after which the client reconnects with a fresh token.
func (st *sseStream) end() {
	if st.expired() {
		_ = st.event("", "reset", []byte(`{"reason":"token expired"}`))
	}
}
