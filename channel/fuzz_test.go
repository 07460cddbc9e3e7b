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
			before := ch.Info()
			if _, err := ch.Fire(in, t0, nil); err != nil {
				if f, ok := err.(*protocol.Failure); !ok || f.Code != protocol.CodeInvalidState {
					t.Fatalf("intent %+v in %s: %v, want success or INVALID_STATE", in, st, err)
				}
				if ch.Info() != before {
					t.Fatalf("a refused intent %+v changed the channel in %s", in, st)
				}
			}
		}
	})
}
