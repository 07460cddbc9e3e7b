package session

import (
	"fmt"
	"testing"
	"time"
)

func TestHistorySince(t *testing.T) {
	h := newHistory(4)
	for seq := uint64(1); seq <= 6; seq++ {
		h.add(seq, []byte(fmt.Sprint(seq)))
	}
	// Holds 3..6.
	tests := []struct {
		since uint64
		want  string
		ok    bool
	}{
		{6, "[]", true},
		{5, "[6]", true},
		{2, "[3 4 5 6]", true},
		{1, "[]", false}, // 2 is gone
		{0, "[]", false},
		{7, "[]", false}, // the future
	}
	for _, tt := range tests {
		got, ok := h.since(tt.since, 6)
		s := "["
		for i, m := range got {
			if i > 0 {
				s += " "
			}
			s += string(m)
		}
		s += "]"
		if ok != tt.ok || s != tt.want {
			t.Errorf("since(%d) = %s, %v; want %s, %v", tt.since, s, ok, tt.want, tt.ok)
		}
	}
	if _, ok := newHistory(4).since(0, 0); !ok {
		t.Error("since(0) on an empty history of a fresh session must replay nothing, successfully")
	}
}

func TestRepliesTTLAndLimit(t *testing.T) {
	t0 := time.Unix(1000, 0)
	r := newReplies(time.Minute, 2)
	r.put("a", []byte("A"), t0)
	r.put("a", []byte("A2"), t0) // the first reply stays
	r.put("b", []byte("B"), t0.Add(time.Second))
	if m, ok := r.get("a", t0.Add(30*time.Second)); !ok || string(m) != "A" {
		t.Fatalf("get a = %s, %v", m, ok)
	}
	r.put("c", []byte("C"), t0.Add(2*time.Second)) // evicts the oldest (a)
	if _, ok := r.get("a", t0.Add(2*time.Second)); ok {
		t.Fatal("limit not enforced")
	}
	if _, ok := r.get("b", t0.Add(2*time.Minute)); ok {
		t.Fatal("expired reply returned")
	}
	r.put("d", []byte("D"), t0.Add(3*time.Minute)) // sweeps expired b and c
	if len(r.byID) != 1 || len(r.order) != 1 {
		t.Fatalf("expired entries kept: %v", r.order)
	}
}
