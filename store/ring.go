package store

// ring is a bounded sequence of (seq, payload), oldest dropped first. It
// grows as it fills, up to its cap: most sessions never need their bound,
// and an eager buffer per session costs memory at every idle connection.
// Entries can also expire by age (expire), after which an idle session's
// ring holds no buffer at all; last remembers the newest seq regardless.
type ring struct {
	buf   []ringEntry
	cap   int
	start int
	n     int
	last  uint64
}

type ringEntry struct {
	seq uint64
	at  int64 // when it was added, in the caller's clock (see expire)
	msg []byte
}

func newRing(size int) *ring { return &ring{cap: max(size, 1)} }

func (r *ring) add(seq uint64, at int64, msg []byte) {
	r.last = seq
	e := ringEntry{seq, at, msg}
	if r.n < r.cap && r.n == len(r.buf) {
		// Full but allowed to grow: appended to, after unwrapping when
		// expire left it wrapped (the capped slice makes append copy it,
		// oldest first, into a new array).
		if r.start != 0 {
			r.buf = append(r.buf[r.start:len(r.buf):len(r.buf)], r.buf[:r.start]...)
			r.start = 0
		}
		r.buf = append(r.buf, e)
		r.n++
		return
	}
	if r.n < len(r.buf) {
		r.buf[(r.start+r.n)%len(r.buf)] = e
		r.n++
		return
	}
	r.buf[r.start] = e
	r.start = (r.start + 1) % len(r.buf)
}

func (r *ring) at(i int) ringEntry { return r.buf[(r.start+i)%len(r.buf)] }

// expire drops the entries added before cutoff, in place: a busy session's
// ring keeps its buffer for the entries to come. One left with a quarter of
// its buffer or less (a session going quiet) moves them to a buffer of their
// size, and an emptied one frees its buffer.
func (r *ring) expire(cutoff int64) {
	drop := 0
	for drop < r.n && r.at(drop).at < cutoff {
		drop++
	}
	switch {
	case drop == 0:
		return
	case drop == r.n:
		r.buf, r.start, r.n = nil, 0, 0
		return
	case r.n-drop > len(r.buf)/4:
		for i := range drop {
			r.buf[(r.start+i)%len(r.buf)] = ringEntry{} // their bytes can go
		}
		r.start, r.n = (r.start+drop)%len(r.buf), r.n-drop
		return
	}
	kept := make([]ringEntry, r.n-drop)
	for i := range kept {
		kept[i] = r.at(drop + i)
	}
	r.buf, r.start, r.n = kept, 0, len(kept)
}

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
