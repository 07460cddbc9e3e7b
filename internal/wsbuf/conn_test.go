package wsbuf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"
)

// pipeConn returns a Conn over one end of a pipe, and what each read of
// the other end got.
func pipeConn(t *testing.T) (*Conn, <-chan []byte) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	got := make(chan []byte, 100)
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := b.Read(buf)
			if err != nil {
				close(got)
				return
			}
			got <- append([]byte(nil), buf[:n]...)
		}
	}()
	return &Conn{Conn: a}, got
}

func TestCorkedConnCoalescesAndClearsDeadline(t *testing.T) {
	c, got := pipeConn(t)
	c.Cork()
	for _, p := range []string{"one ", "two ", "three"} {
		if _, err := c.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Uncork(time.Second); err != nil {
		t.Fatal(err)
	}
	if first := <-got; string(first) != "one two three" {
		t.Fatalf("first read %q: the batch was not written in one write", first)
	}
	// Long after the batch, an uncorked write must not hit a stale deadline.
	time.Sleep(1100 * time.Millisecond)
	if _, err := c.Write([]byte("pong")); err != nil {
		t.Fatalf("write after the batch's deadline: %v", err)
	}
	if p := <-got; string(p) != "pong" {
		t.Fatalf("got %q", p)
	}
}

// frame encodes a WebSocket frame header for a payload of n bytes, then the
// payload (filled with 'x').
func frame(opcode byte, n int, masked bool) []byte {
	b := []byte{0x80 | opcode}
	mask := byte(0)
	if masked {
		mask = 0x80
	}
	switch {
	case n < 126:
		b = append(b, mask|byte(n))
	case n <= 0xffff:
		b = append(b, mask|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, mask|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if masked {
		b = append(b, 1, 2, 3, 4)
	}
	return append(b, bytes.Repeat([]byte("x"), n)...)
}

// checkBoundaries feeds stream to a tracker in pieces cut at cuts and
// checks that it is between frames exactly at the frames' ends.
func checkBoundaries(t testing.TB, frames [][]byte, cuts []int) {
	ends := map[int]bool{0: true}
	var stream []byte
	for _, f := range frames {
		stream = append(stream, f...)
		ends[len(stream)] = true
	}
	var tr frameTracker
	pos := 0
	for _, cut := range append(cuts, len(stream)) {
		cut = min(max(cut, pos), len(stream))
		tr.consume(stream[pos:cut])
		pos = cut
		if tr.atBoundary() != ends[pos] {
			t.Fatalf("after %d of %d bytes: at a boundary %v, want %v", pos, len(stream), tr.atBoundary(), ends[pos])
		}
	}
}

func TestFrameTrackerFindsFrameEnds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		frames [][]byte
	}{
		{"empty payload", [][]byte{frame(0x9, 0, false), frame(0x1, 0, false)}},
		{"short", [][]byte{frame(0x1, 5, false), frame(0x1, 125, false)}},
		{"16-bit length", [][]byte{frame(0x1, 126, false), frame(0x2, 65535, false)}},
		{"64-bit length", [][]byte{frame(0x1, 65536, false), frame(0xA, 3, false)}},
		{"masked", [][]byte{frame(0x1, 7, true), frame(0x1, 300, true)}},
		{"fragments", [][]byte{{0x01, 0x02, 'a', 'b'}, {0x80, 0x01, 'c'}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			total := 0
			for _, f := range tc.frames {
				total += len(f)
			}
			// Every single cut point (near the frames' edges for the large
			// ones), and byte by byte.
			for cut := 0; cut <= total; cut++ {
				if total > 2000 && cut > 20 && total-cut > 20 && (cut < len(tc.frames[0])-20 || cut > len(tc.frames[0])+20) {
					continue
				}
				checkBoundaries(t, tc.frames, []int{cut})
			}
			if total < 2000 {
				var all []int
				for i := 1; i < total; i++ {
					all = append(all, i)
				}
				checkBoundaries(t, tc.frames, all)
			}
		})
	}
	var tr frameTracker
	tr.consume(frame(0x8, 2, false))
	if !tr.closed || !tr.atBoundary() {
		t.Fatalf("after a close frame: closed %v, at a boundary %v", tr.closed, tr.atBoundary())
	}
}

func FuzzFrameTracker(f *testing.F) {
	f.Add([]byte{3, 200, 0, 1}, []byte{1, 5, 9})
	f.Fuzz(func(t *testing.T, sizes, cuts []byte) {
		var frames [][]byte
		for i, s := range sizes {
			n := int(s)
			if i%3 == 1 {
				n *= 300 // 16-bit lengths too
			}
			frames = append(frames, frame(byte(i%3)+1, n, i%2 == 0))
		}
		var at []int
		pos := 0
		for _, c := range cuts {
			pos += int(c)
			at = append(at, pos)
		}
		checkBoundaries(t, frames, at)
		// Garbage must not make it panic.
		var tr frameTracker
		tr.consume(cuts)
		tr.consume(sizes)
	})
}

// A ping never lands inside a frame: while one is half written it waits for
// its end; while corked it joins the batch; after the close frame it is
// refused.
func TestPingGoesBetweenFrames(t *testing.T) {
	c, got := pipeConn(t)
	read := func(n int) []byte {
		t.Helper()
		var out []byte
		for len(out) < n {
			select {
			case p := <-got:
				out = append(out, p...)
			case <-time.After(5 * time.Second):
				t.Fatalf("read %d of %d bytes", len(out), n)
			}
		}
		return out
	}
	write := func(p []byte) {
		t.Helper()
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	text := frame(0x1, 10, false)

	// Between frames: at once.
	if err := c.Ping(time.Second); err != nil {
		t.Fatal(err)
	}
	if p := read(2); !bytes.Equal(p, pingFrame) {
		t.Fatalf("got %x, want a ping", p)
	}
	// Half a frame written: after its end.
	write(text[:5])
	if err := c.Ping(time.Second); err != nil {
		t.Fatal(err)
	}
	write(text[5:])
	if p := read(len(text) + 2); !bytes.Equal(p, append(append([]byte(nil), text...), pingFrame...)) {
		t.Fatalf("got %x, want the frame then a ping", p)
	}
	// Corked: in the batch, after the frame being written.
	c.Cork()
	write(text[:3])
	if err := c.Ping(time.Second); err != nil {
		t.Fatal(err)
	}
	write(text[3:])
	write(text)
	if err := c.Uncork(time.Second); err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]byte(nil), text...), pingFrame...), text...)
	if p := read(len(want)); !bytes.Equal(p, want) {
		t.Fatalf("got %x, want %x", p, want)
	}
	// After the close frame, nothing.
	write(frame(0x8, 2, false))
	read(4)
	if err := c.Ping(time.Second); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ping after the close frame: %v", err)
	}
}

// filterInPieces runs a pongFilter over stream cut at cuts and returns what
// it kept and how many pongs it took out.
func filterInPieces(t testing.TB, stream []byte, cuts []int) ([]byte, int) {
	var f pongFilter
	var kept []byte
	pongs, pos := 0, 0
	for _, cut := range append(cuts, len(stream)) {
		cut = min(max(cut, pos), len(stream))
		piece := append([]byte(nil), stream[pos:cut]...) // filter works in place
		k, n, err := f.filter(piece)
		if err != nil {
			t.Fatalf("filter: %v", err)
		}
		kept = append(kept, k...)
		pongs += n
		pos = cut
	}
	return kept, pongs
}

func TestPongFilterTakesOutPongsOnly(t *testing.T) {
	text := frame(0x1, 20, true)
	big := frame(0x2, 70_000, true)
	first, last := []byte{0x01, 0x82, 1, 2, 3, 4, 'a', 'b'}, []byte{0x80, 0x81, 1, 2, 3, 4, 'c'} // a fragmented message
	pong := frame(0xA, 0, true)
	pongWithData := frame(0xA, 125, true)
	for _, tc := range []struct {
		name   string
		frames [][]byte
	}{
		{"only a pong", [][]byte{pong}},
		{"pongs around data", [][]byte{pong, text, pongWithData, text, pong}},
		{"between fragments", [][]byte{first, pong, last}},
		{"a ping is kept", [][]byte{frame(0x9, 3, true), pong}},
		{"large data", [][]byte{pong, big, pong}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stream, want []byte
			wantPongs := 0
			for _, f := range tc.frames {
				stream = append(stream, f...)
				if f[0]&0x0f == 0xA {
					wantPongs++
				} else {
					want = append(want, f...)
				}
			}
			check := func(cuts []int) {
				kept, pongs := filterInPieces(t, stream, cuts)
				if !bytes.Equal(kept, want) || pongs != wantPongs {
					t.Fatalf("cuts %v: kept %d bytes (want %d), %d pongs (want %d)", cuts, len(kept), len(want), pongs, wantPongs)
				}
			}
			check(nil)
			for cut := 0; cut <= len(stream); cut++ {
				if len(stream) > 2000 && cut > 20 && len(stream)-cut > 20 {
					continue
				}
				check([]int{cut})
			}
			if len(stream) < 2000 {
				var all []int
				for i := 1; i < len(stream); i++ {
					all = append(all, i)
				}
				check(all)
			}
		})
	}
}

func TestPongFilterRejectsInvalidPongs(t *testing.T) {
	for name, stream := range map[string][]byte{
		"longer than a control frame": frame(0xA, 126, true),
		"fragmented":                  {0x0A, 0x80, 1, 2, 3, 4},
	} {
		var f pongFilter
		if _, _, err := f.filter(stream); !errors.Is(err, errBadPong) {
			t.Errorf("%s: %v, want errBadPong", name, err)
		}
	}
}

func FuzzPongFilter(f *testing.F) {
	f.Add([]byte{3, 10, 0, 1, 5}, []byte{1, 5, 9})
	f.Fuzz(func(t *testing.T, sizes, cuts []byte) {
		var stream, want []byte
		wantPongs := 0
		for i, s := range sizes {
			var fr []byte
			if i%3 == 0 { // a pong, at most 125 bytes of data
				fr = frame(0xA, int(s)%126, true)
				wantPongs++
			} else {
				fr = frame(byte(i%2)+1, int(s)*(1+i%2*299), true)
				want = append(want, fr...)
			}
			stream = append(stream, fr...)
		}
		var at []int
		pos := 0
		for _, c := range cuts {
			pos += int(c)
			at = append(at, pos)
		}
		kept, pongs := filterInPieces(t, stream, at)
		if !bytes.Equal(kept, want) || pongs != wantPongs {
			t.Fatalf("kept %d bytes (want %d), %d pongs (want %d)", len(kept), len(want), pongs, wantPongs)
		}
		// Garbage must not make it panic.
		var g pongFilter
		_, _, _ = g.filter(append([]byte(nil), cuts...))
		_, _, _ = g.filter(append([]byte(nil), sizes...))
	})
}

// The filter and the tracker sit on every byte the broker reads and
// writes: what they cost per command-sized frame, in 512-byte reads.
func BenchmarkPongFilter(b *testing.B) {
	var stream []byte
	for range 64 {
		stream = append(stream, frame(0x1, 300, true)...)
	}
	buf := make([]byte, len(stream))
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, stream)
		var f pongFilter
		for p := buf; len(p) > 0; {
			n := min(len(p), ReadSize)
			if _, _, err := f.filter(p[:n]); err != nil {
				b.Fatal(err)
			}
			p = p[n:]
		}
	}
}

func BenchmarkFrameTracker(b *testing.B) {
	var stream []byte
	for range 64 {
		stream = append(stream, frame(0x1, 300, false)...)
	}
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		var t frameTracker
		for p := stream; len(p) > 0; {
			n := min(len(p), WriteSize)
			t.consume(p[:n])
			p = p[n:]
		}
	}
}
