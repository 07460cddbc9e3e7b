package channel

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/ctibroker/ctibroker/protocol"
)

// BenchmarkTransition: parse a command, check it against the machine and
// apply it, cycling ready / not ready (lunch) / after-call work.
func BenchmarkTransition(b *testing.B) {
	cat := testCatalog()
	ch := inState(b, sReady)
	cmds := []struct{ cmd, data string }{
		{protocol.CmdChannelNotReady, `{"reasoncode":"lunch"}`},
		{protocol.CmdChannelNotReady, `{"reasoncode":"acw"}`},
		{protocol.CmdChannelReady, `{}`},
	}
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c := cmds[i%len(cmds)]
		i++
		in, f := ParseCommand(c.cmd, json.RawMessage(c.data), cat)
		if f != nil {
			b.Fatal(f)
		}
		if _, err := ch.Fire(in, now, nil); err != nil {
			b.Fatal(err)
		}
		ch.TakeNew()
	}
}
