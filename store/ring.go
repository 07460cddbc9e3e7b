package store

// ring is a bounded sequence of (seq, payload), oldest dropped first. It
// grows as it fills, up to its cap: most sessions never need their bound,
// and an eager buffer per session costs memory at every idle connection.
type ring struct {
	buf   []ringEntry
	cap   int
	start int
	n     int
}

type ringEntry struct {
	seq uint64
	msg []byte
}

func newRing(size int) *ring { return &ring{cap: max(size, 1)} }

func (r *ring) add(seq uint64, msg []byte) {
	if r.n < r.cap && r.n == len(r.buf) {
		// Not full and not wrapped yet (start is 0 until the first wrap).
		r.buf = append(r.buf, ringEntry{seq, msg})
		r.n++
		return
	}
	if r.n < len(r.buf) {
		r.buf[(r.start+r.n)%len(r.buf)] = ringEntry{seq, msg}
		r.n++
		return
	}
	r.buf[r.start] = ringEntry{seq, msg}
	r.start = (r.start + 1) % len(r.buf)
}

func (r *ring) at(i int) ringEntry { return r.buf[(r.start+i)%len(r.buf)] }

func (r *ring) all() [][]byte {
	out := make([][]byte, r.n)
	for i := range r.n {
		out[i] = r.at(i).msg
	}
	return out
}

// since returns the entries with seq in (since, last]; false when the ring
// no longer holds all of them or since is in the future.
func (r *ring) since(since, last uint64) ([][]byte, bool) {
	switch {
	case since > last:
		return nil, false
	case since == last:
		return nil, true
	case r.n == 0 || r.at(0).seq > since+1:
		return nil, false
	}
	out := make([][]byte, 0, last-since)
	for i := range r.n {
		if e := r.at(i); e.seq > since && e.seq <= last {
			out = append(out, e.msg)
		}
	}
	return out, true
}
