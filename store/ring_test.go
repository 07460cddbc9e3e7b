package store

import (
	"fmt"
	"testing"
)

func TestRingSince(t *testing.T) {
	r := newRing(4)
	for seq := uint64(1); seq <= 6; seq++ {
		r.add(seq, []byte(fmt.Sprint(seq)))
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
		r.add(seq, nil)
	}
	if cap(r.buf) > 8 {
		t.Fatalf("3 entries allocated %d", cap(r.buf))
	}
	small := newRing(3)
	for seq := uint64(1); seq <= 7; seq++ {
		small.add(seq, []byte(fmt.Sprint(seq)))
	}
	if got, ok := small.since(4, 7); !ok || fmt.Sprintf("%s", got) != "[5 6 7]" {
		t.Fatalf("wrapped ring: %s %v", got, ok)
	}
}
