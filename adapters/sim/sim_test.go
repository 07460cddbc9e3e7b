package sim

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ctibroker/ctibroker/adapters"
	"github.com/ctibroker/ctibroker/protocol"
)

func TestSwitchKeepsLogins(t *testing.T) {
	s, err := New(Config{Agents: map[string]Agent{"bob": {Logins: []PreLogin{{ID: "p", Name: "1", Type: "TELEPHONY", Status: "ready"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ref := adapters.ChannelRef{AgentID: "alice", Channel: protocol.ChannelSpec{ID: "c", Name: "2", Type: "CHAT"}}
	if err := s.Activate(ctx, ref, []string{"q"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetNotReady(ctx, ref, "lunch"); err != nil {
		t.Fatal(err)
	}
	ls, _ := s.Logins(ctx, "alice")
	if len(ls) != 1 || ls[0].Status != protocol.StatusNotReady || ls[0].ReasonCode != "lunch" || ls[0].Queues[0] != "q" {
		t.Fatalf("logins = %+v", ls)
	}
	if err := s.Emit(adapters.Event{Kind: adapters.InteractionStarted, AgentID: "alice", ChannelID: "c", InteractionID: "i"}); err != nil {
		t.Fatal(err)
	}
	if ls, _ := s.Logins(ctx, "alice"); ls[0].Status != protocol.StatusBusyNotReady {
		t.Fatalf("during an interaction: %s", ls[0].Status)
	}
	if err := s.Deactivate(ctx, ref, ""); err != nil {
		t.Fatal(err)
	}
	if ls, _ := s.Logins(ctx, "alice"); len(ls) != 0 {
		t.Fatalf("still logged in: %+v", ls)
	}
	if ls, _ := s.Logins(ctx, "bob"); len(ls) != 1 || ls[0].Status != "ready" {
		t.Fatalf("pre-logged: %+v", ls)
	}
	// A login made through another node's switch is learnt on first use.
	if err := s.SetReady(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if ls, _ := s.Logins(ctx, "alice"); len(ls) != 1 || ls[0].Status != protocol.StatusReady {
		t.Fatalf("learnt login: %+v", ls)
	}
	_ = s.Close()
	_ = s.Close()
}

func TestFaultsAndLatency(t *testing.T) {
	s, _ := New(Config{Latency: 20 * time.Millisecond})
	ref := adapters.ChannelRef{AgentID: "a", Channel: protocol.ChannelSpec{ID: "c"}}
	if err := s.InjectFault("a", "melt", 1); err == nil {
		t.Fatal("unknown fault accepted")
	}
	_ = s.InjectFault("a", FaultError, 2)
	for range 2 {
		if err := s.Activate(context.Background(), ref, nil); !errors.Is(err, ErrRefused) {
			t.Fatalf("Activate = %v, want ErrRefused", err)
		}
	}
	// Latency beyond the deadline is the deadline's error.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if err := s.Activate(ctx, ref, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Activate = %v, want deadline exceeded", err)
	}
	_ = s.InjectFault("a", FaultPanic, 1)
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("panic fault did not panic")
			}
		}()
		_ = s.SetReady(context.Background(), ref)
	}()
	if _, err := New(Config{FailRate: 1.5}); err == nil {
		t.Fatal("fail rate above 1 accepted")
	}
	always, _ := New(Config{FailRate: 1})
	if err := always.Activate(context.Background(), ref, nil); !errors.Is(err, ErrRefused) {
		t.Fatalf("fail rate 1: %v", err)
	}
	if _, err := always.Logins(context.Background(), "a"); err != nil {
		t.Fatalf("fail rate applies to reads: %v", err)
	}
}

func TestControlAPI(t *testing.T) {
	s, _ := New(Config{EventBuffer: 1})
	_ = s.Activate(context.Background(), adapters.ChannelRef{AgentID: "a", Channel: protocol.ChannelSpec{ID: "c"}}, nil)
	h := s.ControlHandler()
	post := func(body string) int {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/v1/sim/events", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	tests := []struct {
		body string
		want int
	}{
		{`{"event":"interaction.start","agent":"a","channel":"c"}`, 202},
		{`{"event":"interaction.start","agent":"a","channel":"c"}`, 503}, // buffer of 1 is full
		{`{"event":"interaction.start","agent":"a","channel":"nope"}`, 409},
		{`{"event":"interaction.end","agent":"a","channel":"c"}`, 400},
		{`{"event":"agentleg.failed","agent":"a"}`, 400},
		{`{"event":"endpoint.taken","endpoint":{"type":"TELEPHONY"}}`, 400},
		{`{"event":"fault","agent":"a","fault":"error"}`, 202},
		{`{"event":"fault","agent":"a","fault":"melt"}`, 400},
		{`{"event":"fault","agent":"a","fault":"error","count":1001}`, 400},
		{`{"event":"nonsense"}`, 400},
		{`not json`, 400},
	}
	for _, tt := range tests {
		if got := post(tt.body); got != tt.want {
			t.Errorf("POST %s = %d, want %d", tt.body, got, tt.want)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/sim/events", strings.NewReader(`{"event":"addressbook.changed"}`)))
	if rec.Code != http.StatusUnsupportedMediaType {
		t.Errorf("POST without Content-Type = %d, want 415", rec.Code)
	}
	ev := <-s.Events()
	if ev.Kind != adapters.InteractionStarted || !strings.HasPrefix(ev.InteractionID, "sim-") {
		t.Fatalf("event = %+v", ev)
	}
}
