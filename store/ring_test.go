package store

import (
	"fmt"
	"testing"
)

func TestRingSince(t *testing.T) {
	r := newRing(4)
	for seq := uint64(1); seq <= 6; seq++ {
		r.add(seq, 0, []byte(fmt.Sprint(seq)))
	}
	tests := []struct {
		since uint64
		want  string
		ok    bool
	}{{6, "[]", true}, {5, "[6]", true}, {2, "[3 4 5 6]", true}, {1, "[]", false}, {0, "[]", false}, {7, "[]", false}}
	for _, tt := range tests {
		got, ok := r.since(tt.since, 6)
		if s := fmt.Sprintf("%s", got); ok != tt.ok || s != tt.want {
			t.Errorf("since(%d) = %s, %v; want %s, %v", tt.since, s, ok, tt.want, tt.ok)
		}
	}
	if _, ok := newRing(4).since(0, 0); !ok {
		t.Error("nothing to replay must succeed")
	}
	if fmt.Sprintf("%s", r.all()) != "[3 4 5 6]" {
		t.Errorf("all = %s", r.all())
	}
}

func TestRingGrowsLazily(t *testing.T) {
	r := newRing(10000)
	if cap(r.buf) != 0 {
		t.Fatalf("an empty ring allocated %d entries", cap(r.buf))
	}
	for seq := uint64(1); seq <= 3; seq++ {
		r.add(seq, 0, nil)
	}
	if cap(r.buf) > 8 {
		t.Fatalf("3 entries allocated %d", cap(r.buf))
	}
	small := newRing(3)
	for seq := uint64(1); seq <= 7; seq++ {
		small.add(seq, 0, []byte(fmt.Sprint(seq)))
	}
	if got, ok := small.since(4, 7); !ok || fmt.Sprintf("%s", got) != "[5 6 7]" {
		t.Fatalf("wrapped ring: %s %v", got, ok)
	}
}

func TestRingExpire(t *testing.T) {
	tests := []struct {
		name   string
		size   int   // the ring's bound
		adds   int   // seqs 1..adds, added at time seq
		cutoff int64 // drop entries added before it
		since  uint64
		want   string
		ok     bool
	}{
		{"nothing old", 4, 3, 1, 0, "[1 2 3]", true},
		{"front dropped", 4, 3, 3, 2, "[3]", true},
		{"dropped ones cannot be replayed", 4, 3, 3, 1, "[]", false},
		{"wrapped ring", 4, 7, 6, 5, "[6 7]", true},
		{"everything dropped, up to date", 4, 5, 10, 5, "[]", true},
		{"everything dropped, behind", 4, 5, 10, 4, "[]", false},
		{"dropped in place, then grown", 16, 6, 3, 2, "[3 4 5 6]", true},
		{"dropped in place from a wrapped ring", 4, 6, 4, 3, "[4 5 6]", true},
		{"most dropped: moved to a small buffer", 16, 12, 11, 10, "[11 12]", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRing(tt.size)
			for seq := 1; seq <= tt.adds; seq++ {
				r.add(uint64(seq), int64(seq), []byte(fmt.Sprint(seq)))
			}
			r.expire(tt.cutoff)
			got, ok := r.since(tt.since, uint64(tt.adds))
			if s := fmt.Sprintf("%s", got); ok != tt.ok || s != tt.want {
				t.Fatalf("since(%d) = %s, %v; want %s, %v", tt.since, s, ok, tt.want, tt.ok)
			}
			if r.last != uint64(tt.adds) {
				t.Fatalf("last = %d, want %d", r.last, tt.adds)
			}
			if r.n == 0 && r.buf != nil {
				t.Fatal("an emptied ring kept its buffer")
			}
			if r.n > 0 && r.n <= len(r.buf)/4 {
				t.Fatalf("%d entries kept a buffer of %d", r.n, len(r.buf))
			}
			for i := r.n; i < len(r.buf); i++ {
				if e := r.buf[(r.start+i)%len(r.buf)]; e.msg != nil {
					t.Fatalf("a dropped entry (seq %d) keeps its bytes", e.seq)
				}
			}
			// Adding after an expiry keeps the order.
			for seq := tt.adds + 1; seq <= tt.adds+5; seq++ {
				r.add(uint64(seq), int64(seq), []byte(fmt.Sprint(seq)))
			}
			last := uint64(tt.adds + 5)
			if got, ok := r.since(last-4, last); !ok || fmt.Sprintf("%s", got) != fmt.Sprint(seqs(last-3, last)) {
				t.Fatalf("after adding: since(%d) = %s, %v", last-4, got, ok)
			}
		})
	}
}

func seqs(from, to uint64) []string {
	var out []string
	for s := from; s <= to; s++ {
		out = append(out, fmt.Sprint(s))
	}
	return out
}
