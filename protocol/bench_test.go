package protocol

import "testing"

var benchFrame = []byte(`{"command":"channel.notready","target":"0123456789abcdef01234567.phone","data":{"reasoncode":"lunch","reasondesc":"food"},"requestId":"r-12345"}`)

func BenchmarkDecodeRequest(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if in := DecodeRequest(benchFrame); in.Failure != nil {
			b.Fatal(in.Failure)
		}
	}
}

func BenchmarkDecodeNotReadyData(b *testing.B) {
	in := DecodeRequest(benchFrame)
	b.ReportAllocs()
	for b.Loop() {
		var d NotReadyData
		if f := DecodeData(in.Request.Data, &d); f != nil {
			b.Fatal(f)
		}
	}
}

func BenchmarkAppendString(b *testing.B) {
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendString(buf[:0], "0123456789abcdef01234567.phone")
	}
}

// The two encodings every status change makes besides its events' own:
// the reply, and state.updated's data (an agent with one channel).
func BenchmarkMarshalReply(b *testing.B) {
	in := DecodeRequest(benchFrame)
	r := Reply{Command: in.Request.Command, Target: in.Request.Target, Result: ResultSuccess, Data: in.Request.Data, RequestID: in.Request.RequestID}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Marshal(r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshalStateUpdated(b *testing.B) {
	st := StateUpdated{AgentID: "alice", Status: "not_ready", Channels: []ChannelState{{ID: "phone", Name: "1001", Type: "TELEPHONY",
		State: "ACTIVE", Status: "not_ready", ReasonCode: "lunch", ReasonName: "Lunch", Since: 1764500000000}}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Marshal(st); err != nil {
			b.Fatal(err)
		}
	}
}
