package protocol

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name      string
		frame     string
		code      FailureCode // "" means success
		command   string
		target    string
		requestID string
		data      string
	}{
		{"full", `{"command":"channel.ready","target":"s.c","data":{},"requestId":"r1"}`, "", "channel.ready", "s.c", "r1", `{}`},
		{"no data", `{"command":"channel.ready","target":"s.c"}`, "", "channel.ready", "s.c", "", ``},
		{"null data", `{"command":"channel.ready","target":"s.c","data":null}`, "", "channel.ready", "s.c", "", ``},
		{"extra fields ignored", `{"command":"x","target":"s","foo":[1]}`, "", "x", "s", "", ``},
		{"not json", `hello`, CodeInvalidJSON, "", "", "", ``},
		{"truncated", `{"command":"x"`, CodeInvalidJSON, "", "", "", ``},
		{"array", `[1,2]`, CodeInvalidJSON, "", "", "", ``},
		{"null", `null`, CodeInvalidJSON, "", "", "", ``},
		{"two objects", `{"command":"a"}{"command":"b"}`, CodeInvalidJSON, "", "", "", ``},
		{"trailing garbage", `{"command":"a"} x`, CodeInvalidJSON, "", "", "", ``},
		{"invalid UTF-8 outside a string", "{\"command\":\"a\"}\xff", CodeInvalidJSON, "", "", "", ``},
		{"empty", ``, CodeInvalidJSON, "", "", "", ``},
		{"missing command", `{"target":"s"}`, CodeInvalidRequest, "", "s", "", ``},
		{"command number", `{"command":1,"target":"s"}`, CodeInvalidRequest, "", "s", "", ``},
		{"target object keeps command", `{"command":"x","target":{},"requestId":"r"}`, CodeInvalidRequest, "x", "", "r", ``},
		{"data string", `{"command":"x","target":"s","data":"d"}`, CodeInvalidRequest, "x", "s", "", ``},
		{"data array", `{"command":"x","target":"s","data":[]}`, CodeInvalidRequest, "x", "s", "", ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := DecodeRequest([]byte(tt.frame))
			got := FailureCode("")
			if in.Failure != nil {
				got = in.Failure.Code
			}
			if got != tt.code {
				t.Fatalf("code = %q, want %q (failure %v)", got, tt.code, in.Failure)
			}
			r := in.Request
			if r.Command != tt.command || r.Target != tt.target || r.RequestID != tt.requestID || string(r.Data) != tt.data {
				t.Fatalf("request = %+v (data %s), want command %q target %q requestId %q data %s", r, r.Data, tt.command, tt.target, tt.requestID, tt.data)
			}
			if !json.Valid(in.Original) {
				t.Fatalf("original %q is not valid JSON", in.Original)
			}
			if tt.code == CodeInvalidJSON {
				var s string
				if err := json.Unmarshal(in.Original, &s); err != nil || s != strings.ToValidUTF8(tt.frame, "\uFFFD") {
					t.Fatalf("INVALID_JSON original = %s, want the frame as a string", in.Original)
				}
				// Valid JSON that is not an object is told apart from what
				// is not JSON at all.
				want := msgNotJSON
				if json.Valid([]byte(tt.frame)) {
					want = msgNotObject
				}
				if in.Failure.Message != want {
					t.Fatalf("message %q, want %q", in.Failure.Message, want)
				}
			}
		})
	}
}

func TestDecodeData(t *testing.T) {
	tests := []struct {
		name, data string
		dst        any
		wantErr    bool
	}{
		{"notready ok", `{"reasoncode":"lunch","reasondesc":"x"}`, &NotReadyData{}, false},
		{"notready camel", `{"reasonCode":"lunch"}`, &NotReadyData{}, false},
		{"notready wrong type", `{"reasoncode":5}`, &NotReadyData{}, true},
		{"queue string", `{"channeloptions":{"queue":"q1"}}`, &ChannelOptionsData{}, false},
		{"queue list", `{"channelOptions":{"queue":["q1","q2"]}}`, &ChannelOptionsData{}, false},
		{"queue number", `{"channelOptions":{"queue":3}}`, &ChannelOptionsData{}, true},
		{"reason number", `{"channelOptions":{"reason":12}}`, &ChannelOptionsData{}, false},
		{"reason bool", `{"channelOptions":{"reason":true}}`, &ChannelOptionsData{}, true},
		{"realtime string", `{"realtime":"yes"}`, &AddressBookRequest{}, true},
		{"absent", ``, &AddressBookRequest{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := DecodeData(json.RawMessage(tt.data), tt.dst)
			if (f != nil) != tt.wantErr {
				t.Fatalf("DecodeData(%s) = %v, wantErr %v", tt.data, f, tt.wantErr)
			}
			if f != nil && f.Code != CodeInvalidRequest {
				t.Fatalf("code = %s, want INVALID_REQUEST", f.Code)
			}
		})
	}
	var d ChannelOptionsData
	if f := DecodeData(json.RawMessage(`{"channeloptions":{"queue":["a","b"],"reason":7}}`), &d); f != nil {
		t.Fatal(f)
	}
	if len(d.ChannelOptions.Queue) != 2 || d.ChannelOptions.Reason != "7" {
		t.Fatalf("decoded %+v", d.ChannelOptions)
	}
}

func TestAggregateStatus(t *testing.T) {
	ch := func(state, status string) ChannelState { return ChannelState{State: state, Status: status} }
	tests := []struct {
		name string
		in   []ChannelState
		want string
	}{
		{"none", nil, StatusLoggedOut},
		{"inactive only", []ChannelState{ch(StateInactive, StatusNotReady)}, StatusLoggedOut},
		{"not ready", []ChannelState{ch(StateActive, StatusNotReady), ch(StateInactive, "")}, StatusNotReady},
		{"acw beats not ready", []ChannelState{ch(StateActive, StatusNotReady), ch(StateActive, StatusAfterCallWork)}, StatusAfterCallWork},
		{"ready beats acw", []ChannelState{ch(StateActive, StatusReady), ch(StateActive, StatusAfterCallWork)}, StatusReady},
		{"busy beats ready", []ChannelState{ch(StateActive, StatusReady), ch(StateActive, StatusBusyNotReady)}, StatusBusy},
	}
	for _, tt := range tests {
		if got := AggregateStatus(tt.in); got != tt.want {
			t.Errorf("%s: AggregateStatus = %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestCodeTablesComplete(t *testing.T) {
	seen := map[FailureCode]bool{}
	for _, c := range FailureCodes() {
		if seen[c.Code] || c.When == "" {
			t.Fatalf("failure code %s duplicated or undocumented", c.Code)
		}
		seen[c.Code] = true
		if c.Code.HTTPStatus() != c.HTTPStatus || c.HTTPStatus < 400 || c.HTTPStatus > 599 {
			t.Errorf("%s: HTTP status %d", c.Code, c.HTTPStatus)
		}
		// A transient failure is the server's or the switch's, or a rate
		// limit; a client mistake is never worth retrying as is, nor what
		// the deployment does not implement (501).
		if c.Transient != ((c.HTTPStatus >= 500 && c.HTTPStatus != 501) || c.HTTPStatus == 429) {
			t.Errorf("%s: transient %v with HTTP %d", c.Code, c.Transient, c.HTTPStatus)
		}
	}
	if FailureCode("NOPE").HTTPStatus() != 500 || FailureCode("NOPE").Transient() {
		t.Fatal("an unknown code must be a permanent 500")
	}
	closes := map[CloseCode]bool{}
	for _, c := range CloseCodes() {
		if closes[c.Code] || c.When == "" {
			t.Fatalf("close code %d duplicated or undocumented", c.Code)
		}
		closes[c.Code] = true
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"command":"channel.ready","target":"s.c","data":{},"requestId":"r1"}`,
		`{"command":"channel.notready","target":"s.g.c","data":{"reasoncode":"acw"}}`,
		`{"command":1}`, `[]`, `null`, `{"data":"x"}`, "\xff\xfe", `{"command":"a"}{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		in := DecodeRequest(frame)
		if !json.Valid(in.Original) {
			t.Fatalf("original %q not valid JSON", in.Original)
		}
		// The connection reuses the frame's buffer: the decoded frame must
		// not change when it is overwritten.
		before, _ := json.Marshal(in)
		for i := range frame {
			frame[i] = 'x'
		}
		if after, _ := json.Marshal(in); !bytes.Equal(before, after) {
			t.Fatalf("the decoded frame shares the frame's memory: %s became %s", before, after)
		}
		if in.Failure == nil && in.Request.Command == "" {
			t.Fatal("accepted a request without command")
		}
		reply, err := Marshal(FailureReply(in, Failf(CodeInternal, "%s", frame)))
		if err != nil {
			t.Fatalf("failure reply does not encode: %v", err)
		}
		if !utf8.Valid(reply) || len(reply) > 8*MaxEchoBytes {
			t.Fatalf("failure reply to %q is %d bytes, valid UTF-8 %v", frame, len(reply), utf8.Valid(reply))
		}
		if in.Failure == nil && !utf8.Valid(in.Request.Data) {
			t.Fatalf("data %q is not valid UTF-8", in.Request.Data)
		}
		if in.Failure == nil {
			var nr NotReadyData
			_ = DecodeData(in.Request.Data, &nr)
			var co ChannelOptionsData
			_ = DecodeData(in.Request.Data, &co)
		}
	})
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "abc", "a\"b", "back\\slash", "tab\tnl\ncr\r", "\x00\x01\x1f\x7f", "<tag>&amp;", "ünïcødé ✓", "日本"} {
		want, _ := json.Marshal(s)
		if got := AppendString(nil, s); string(got) != string(want) && !json.Valid(got) {
			t.Errorf("AppendString(%q) = %s, not valid JSON (encoding/json: %s)", s, got, want)
		}
		var back string
		if err := json.Unmarshal(AppendString(nil, s), &back); err != nil || back != s {
			t.Errorf("AppendString(%q) decodes to %q, %v", s, back, err)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	f.Add("a\"\\\x00<")
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		var back string
		if err := json.Unmarshal(AppendString(nil, s), &back); err != nil || back != s {
			t.Fatalf("AppendString(%q) decodes to %q, %v", s, back, err)
		}
	})
}
