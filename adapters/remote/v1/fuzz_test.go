package adapterv1

import (
	"testing"

	"google.golang.org/protobuf/proto"
)

// An event from an adapter, as the broker decodes it: whatever the bytes
// (a buggy or hostile adapter), decoding returns an event or an error and
// never panics.
func FuzzToEvent(f *testing.F) {
	seed, _ := proto.Marshal(&Event{Kind: "interaction.start", AgentId: "alice", ChannelId: "phone", InteractionId: "x",
		InteractionJson: []byte(`{"id":"x","state":"ALERTING","members":[{"id":"c"}]}`), Data: map[string]string{"k": "v"}})
	f.Add(seed)
	f.Add([]byte{})
	f.Add([]byte(`{"id":`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var ev Event
		if proto.Unmarshal(raw, &ev) != nil {
			ev.InteractionJson = raw // the JSON part on its own
		}
		_, _ = ToEvent(&ev)
	})
}
