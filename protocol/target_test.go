package protocol

import (
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in      string
		want    Target
		wantErr bool
	}{
		{"s1", Target{Session: "s1"}, false},
		{"s1.c1", Target{Session: "s1", Channel: "c1"}, false},
		{"s1.g1.c1", Target{Session: "s1", Group: "g1", Channel: "c1"}, false},
		{"", Target{}, true},
		{".", Target{}, true},
		{"s1.", Target{}, true},
		{".c1", Target{}, true},
		{"s1..c1", Target{}, true},
		{"a.b.c.d", Target{}, true},
		{"s\x00", Target{}, true},
		{"s\xff", Target{}, true},
		{strings.Repeat("x", MaxIDLength+1), Target{}, true},
		{"ünïcode-ok", Target{Session: "ünïcode-ok"}, false},
	}
	for _, tt := range tests {
		got, err := ParseTarget(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseTarget(%q) = %+v, %v; want %+v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err == nil && got.String() != tt.in {
			t.Errorf("ParseTarget(%q).String() = %q", tt.in, got.String())
		}
	}
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"s", "s.c", "s.g.c", "", "..", "a.b.c.d", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tgt, err := ParseTarget(s)
		if err != nil {
			return
		}
		if tgt.String() != s {
			t.Fatalf("round trip %q -> %q", s, tgt.String())
		}
		for _, id := range []string{tgt.Session, tgt.Group, tgt.Channel} {
			if strings.Contains(id, ".") {
				t.Fatalf("id %q contains a dot", id)
			}
		}
		if tgt.Session == "" || (tgt.Group != "" && tgt.Channel == "") {
			t.Fatalf("malformed target accepted: %+v", tgt)
		}
	})
}

func FuzzParseInteractionTarget(f *testing.F) {
	for _, s := range []string{"s.c.i", "s.g.c.i", "s.c", "s", "", "...", "a.b.c.d.e", "s.c.\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tgt, err := ParseInteractionTarget(s)
		if err != nil {
			return
		}
		if tgt.String() != s {
			t.Fatalf("round trip %q -> %q", s, tgt.String())
		}
		if tgt.IsSession() || tgt.Interaction == "" || strings.Contains(tgt.Interaction, ".") {
			t.Fatalf("%q parsed as %+v", s, tgt)
		}
	})
}
