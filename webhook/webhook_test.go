package webhook

import (
	"context"
	"testing"
)

func TestEndpointWants(t *testing.T) {
	e := Endpoint{Events: []string{"agent.status", "interaction.*"}, Teams: []string{"sales"}}
	for _, tt := range []struct {
		typ   string
		teams []string
		want  bool
	}{
		{"agent.status", []string{"sales"}, true},
		{"interaction.ringing", []string{"sales", "vip"}, true},
		{"interaction.party.added", []string{"sales"}, true},
		{"agent.status", []string{"support"}, false},
		{"agent.status", nil, false},
		{"agent.other", []string{"sales"}, false},
	} {
		if got := e.wants(tt.typ, tt.teams); got != tt.want {
			t.Errorf("wants(%s, %v) = %v", tt.typ, tt.teams, got)
		}
	}
	if !(&Endpoint{Events: []string{"*"}}).wants("interaction.party.added", nil) {
		t.Error(`"*" must take every type`)
	}
}

// The memory outbox keeps entry ids ordered and reads after a cursor.
func TestMemoryQueueOrder(t *testing.T) {
	q, ctx := NewMemoryQueue(), context.Background()
	for range 3 {
		if err := q.Append(ctx, 0, [][]byte{[]byte("a"), []byte("b")}); err != nil {
			t.Fatal(err)
		}
	}
	all, _ := q.Read(ctx, 0, "", 100)
	if len(all) != 6 {
		t.Fatalf("%d entries", len(all))
	}
	for i := 1; i < len(all); i++ {
		if !idLess(all[i-1].ID, all[i].ID) {
			t.Fatalf("ids out of order: %s then %s", all[i-1].ID, all[i].ID)
		}
	}
	rest, _ := q.Read(ctx, 0, all[3].ID, 100)
	if len(rest) != 2 || rest[0].ID != all[4].ID {
		t.Fatalf("after %s: %v", all[3].ID, rest)
	}
	_ = q.Trim(ctx, 0, all[3].ID)
	if left, _ := q.Read(ctx, 0, "", 100); len(left) != 2 {
		t.Fatalf("after the trim: %d entries", len(left))
	}
}
