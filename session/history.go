package session

// history is a bounded ring of a session's encoded events, for replay to a
// client that reconnects with since=<seq>. Owned by the session goroutine.
type history struct {
	buf   []histEntry
	start int // index of the oldest entry
	n     int
}

type histEntry struct {
	seq uint64
	msg []byte
}

func newHistory(size int) *history { return &history{buf: make([]histEntry, max(size, 1))} }

func (h *history) add(seq uint64, msg []byte) {
	if h.n < len(h.buf) {
		h.buf[(h.start+h.n)%len(h.buf)] = histEntry{seq, msg}
		h.n++
		return
	}
	h.buf[h.start] = histEntry{seq, msg}
	h.start = (h.start + 1) % len(h.buf)
}

// since returns the events after seq, and false when the history no longer
// holds all of them (or seq is in the future), in which case the caller must
// replay full state instead.
func (h *history) since(seq, last uint64) ([][]byte, bool) {
	if seq > last {
		return nil, false
	}
	if seq == last {
		return nil, true
	}
	if h.n == 0 || h.buf[h.start].seq > seq+1 {
		return nil, false
	}
	out := make([][]byte, 0, last-seq)
	for i := range h.n {
		e := h.buf[(h.start+i)%len(h.buf)]
		if e.seq > seq {
			out = append(out, e.msg)
		}
	}
	return out, true
}
