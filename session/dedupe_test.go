package session

import (
	"testing"
	"time"
)

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
