package channel

import (
	"encoding/json"
	"testing"

	"github.com/ctibroker/ctibroker/protocol"
)

// FuzzParseCommand: no data ever panics the command decoder, and whatever it
// accepts is a legal-or-refused event for every state, never a panic.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{`{"reasoncode":"lunch"}`, `{"reasoncode":"acw"}`, `{"channeloptions":{"queue":["a"],"reason":1}}`,
		`{"channelOptions":{"queue":"q"}}`, `{"reasoncode":null}`, `{"reasoncode":{}}`, `[]`, `"x"`, ``} {
		for _, cmd := range []string{protocol.CmdChannelActivate, protocol.CmdChannelDeactivate, protocol.CmdChannelReady, protocol.CmdChannelNotReady} {
			f.Add(cmd, s)
		}
	}
	cat := testCatalog()
	f.Fuzz(func(t *testing.T, cmd, data string) {
		in, fail := ParseCommand(cmd, json.RawMessage(data), cat)
		if fail != nil {
			return
		}
		for _, st := range []string{sInactive, sUnavailable, sReady, sNotReady, sACW, sBusyReady, sBusyNotReady, sBusyACW} {
			ch := inState(t, st)
			if _, f := ch.Check(in); f == nil {
				if _, err := ch.Apply(in, t0); err != nil {
					t.Fatalf("checked intent %+v failed in %s: %v", in, st, err)
				}
			}
		}
	})
}
