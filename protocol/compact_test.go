package protocol

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

func TestAppendOps(t *testing.T) {
	a := &AgentView{AgentID: "a", SessionID: "s", Teams: []string{"sales"}, Status: "ready", StatusSince: 1,
		Channels: []ChannelState{{ID: "phone", Name: "1001", Type: "TELEPHONY", State: "ACTIVE", Status: "ready", Since: 1}}}
	b := *a
	b.Status, b.StatusSince = "not_ready", 2
	b.Channels = []ChannelState{{ID: "phone", Name: "1001", Type: "TELEPHONY", State: "ACTIVE", Status: "not_ready", ReasonCode: "10", ReasonName: "Lunch", Since: 2}}
	c := b
	c.Channels = append(slicesClone(b.Channels), ChannelState{ID: "a/b~c", Name: "chat", Type: "CHAT", State: "INACTIVE", Status: "not_ready", Queues: []string{"q"}})
	for _, tc := range []struct {
		name      string
		prev, cur *AgentView
		want      string
	}{
		{"appears", nil, a, `[{"op":"add","path":"","value":` + string(mustJSON(a)) + `}]`},
		{"leaves", a, nil, `[{"op":"remove","path":""}]`},
		{"nothing", a, a, `[]`},
		{"a status change", a, &b, `[{"op":"replace","path":"/status","value":"not_ready"},{"op":"replace","path":"/statusSince","value":2},` +
			`{"op":"replace","path":"/channels/phone/status","value":"not_ready"},{"op":"replace","path":"/channels/phone/reasonCode","value":"10"},` +
			`{"op":"replace","path":"/channels/phone/reasonName","value":"Lunch"},{"op":"replace","path":"/channels/phone/since","value":2}]`},
		{"a channel added, its id escaped", &b, &c, `[{"op":"add","path":"/channels/a~1b~0c","value":` + string(mustJSON(c.Channels[1])) + `}]`},
		{"a channel removed", &c, &b, `[{"op":"remove","path":"/channels/a~1b~0c"}]`},
	} {
		if got := string(AppendOps(nil, tc.prev, tc.cur)); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
}

func slicesClone[T any](s []T) []T { return append([]T(nil), s...) }

func mustJSON(v any) []byte {
	b, err := Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// The ops turn the previous view into the current one, whatever changed:
// random views, applied by an independent implementation of the paths.
func TestAppendOpsRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	randomView := func() *AgentView {
		v := &AgentView{AgentID: "a", SessionID: pick("s1", "s2"), Status: pick("ready", "not_ready", "busy"), StatusSince: int64(r.IntN(3))}
		if r.IntN(2) == 0 {
			v.Teams = []string{pick("sales", "vip")}
		}
		for _, id := range []string{"phone", "chat", "x/y", "m~n"} {
			if r.IntN(2) == 0 {
				continue
			}
			c := ChannelState{ID: id, Name: pick("1", "2"), Type: "T", State: pick("ACTIVE", "INACTIVE"), Status: pick("ready", "busy"),
				ReasonCode: pick("", "10"), Since: int64(r.IntN(3))}
			if r.IntN(2) == 0 {
				c.Queues = []string{pick("q1", "q2")}
			}
			if r.IntN(3) == 0 {
				c.Group = "g"
			}
			v.Channels = append(v.Channels, c)
		}
		return v
	}
	for i := range 2000 {
		var prev, cur *AgentView
		if i%10 != 0 {
			prev = randomView()
		}
		if i%10 != 1 {
			cur = randomView()
		}
		ops := AppendOps(nil, prev, cur)
		got := applyOps(t, toGeneric(prev), ops)
		if want := toGeneric(cur); !reflect.DeepEqual(got, want) {
			t.Fatalf("ops %s\nturn %s\ninto %v\nnot  %v", ops, mustJSON(prev), got, want)
		}
	}
}

// toGeneric is a view as a map, its channels by id.
func toGeneric(v *AgentView) map[string]any {
	if v == nil {
		return nil
	}
	var m map[string]any
	_ = json.Unmarshal(mustJSON(v), &m)
	chans := map[string]any{}
	list, _ := m["channels"].([]any)
	for _, c := range list {
		chans[c.(map[string]any)["id"].(string)] = c
	}
	m["channels"] = chans
	return m
}

func unescape(s string) string { return strings.NewReplacer("~1", "/", "~0", "~").Replace(s) }

func applyOps(t *testing.T, doc map[string]any, raw []byte) map[string]any {
	var ops []struct {
		Op    string          `json:"op"`
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(raw, &ops); err != nil {
		t.Fatalf("ops %s: %v", raw, err)
	}
	for _, op := range ops {
		var value any
		if op.Value != nil {
			_ = json.Unmarshal(op.Value, &value)
		}
		parts := strings.Split(op.Path, "/")
		switch {
		case op.Path == "" && op.Op == "remove":
			doc = nil
		case op.Path == "":
			var v AgentView
			_ = json.Unmarshal(op.Value, &v)
			doc = toGeneric(&v)
		case len(parts) == 2:
			if op.Op == "remove" {
				delete(doc, parts[1])
			} else {
				doc[parts[1]] = value
			}
		case len(parts) == 3 && parts[1] == "channels":
			chans := doc["channels"].(map[string]any)
			if op.Op == "remove" {
				delete(chans, unescape(parts[2]))
			} else {
				chans[unescape(parts[2])] = value
			}
		case len(parts) == 4 && parts[1] == "channels":
			ch := doc["channels"].(map[string]any)[unescape(parts[2])].(map[string]any)
			if op.Op == "remove" {
				delete(ch, parts[3])
			} else {
				ch[parts[3]] = value
			}
		default:
			t.Fatalf("unexpected op %s", fmt.Sprint(op))
		}
	}
	return doc
}
