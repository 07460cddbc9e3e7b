package session

import "time"

// replies remembers the replies to recent requestIds so that a client that
// retries a command (after a reconnect, say) gets the first reply again
// instead of applying the command twice. Bounded by count and age; owned by
// the session goroutine.
type replies struct {
	ttl   time.Duration
	limit int
	byID  map[string]cachedReply
	order []string // insertion order, for eviction
}

type cachedReply struct {
	msg []byte
	at  time.Time
}

// newReplies makes an empty cache; its map is made by the first put, as
// most sessions never send a request id.
func newReplies(ttl time.Duration, limit int) replies {
	return replies{ttl: ttl, limit: max(limit, 1)}
}

func (r *replies) get(id string, now time.Time) ([]byte, bool) {
	c, ok := r.byID[id]
	if !ok || now.Sub(c.at) > r.ttl {
		return nil, false
	}
	return c.msg, true
}

func (r *replies) put(id string, msg []byte, now time.Time) {
	if _, ok := r.byID[id]; ok {
		return
	}
	if r.byID == nil {
		r.byID = map[string]cachedReply{}
	}
	r.evict(now)
	if len(r.order) >= r.limit {
		delete(r.byID, r.order[0])
		r.order = r.order[1:]
	}
	r.byID[id] = cachedReply{msg, now}
	r.order = append(r.order, id)
}

func (r *replies) evict(now time.Time) {
	i := 0
	for ; i < len(r.order); i++ {
		if now.Sub(r.byID[r.order[i]].at) <= r.ttl {
			break
		}
		delete(r.byID, r.order[i])
	}
	r.order = r.order[i:]
}
