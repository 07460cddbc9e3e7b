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
