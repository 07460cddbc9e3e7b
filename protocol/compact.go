package protocol

import (
	"bytes"
	"encoding/json"
	"strings"
)

// Change formats of a supervisor subscription.
const (
	// FormatFull: supervisor.agent.changed carries the previous and the
	// current view of the agent.
	FormatFull = "full"
	// FormatCompact: it carries only what changed, as ops (see AppendOps),
	// a third of the bytes for a status change.
	FormatCompact = "compact"
)

// AppendOps appends, as a JSON array, the operations that turn the view
// prev into cur, in the style of JSON Patch (RFC 6902): "add", "remove" and
// "replace" with a JSON Pointer path (RFC 6901) and a value. The whole view
// is the path "" (an agent appearing is an add of "", leaving a remove of
// ""); a channel is addressed by its id, not its index (/channels/<id>),
// and its fields one by one (/channels/<id>/status). Fields the views do not
// have (omitted when empty) are added or removed. (A change that folds
// several is sent as a replace of "" with the whole current view.)
func AppendOps(dst []byte, prev, cur *AgentView) []byte {
	dst = append(dst, '[')
	switch {
	case prev == nil && cur == nil:
	case prev == nil:
		v, _ := Marshal(cur)
		dst = appendOp(dst, "add", "", v)
	case cur == nil:
		dst = appendOp(dst, "remove", "", nil)
	default:
		p, _ := Marshal(prev)
		c, _ := Marshal(cur)
		dst = diffObjects(dst, "", objectFields(p), objectFields(c), true)
	}
	if dst[len(dst)-1] == ',' {
		dst = dst[:len(dst)-1]
	}
	return append(dst, ']')
}

type field struct {
	key string
	val json.RawMessage
}

// objectFields lists a JSON object's fields in order; nil if raw is not an
// object.
func objectFields(raw []byte) []field {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	var out []field
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return out
		}
		key, _ := t.(string)
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return out
		}
		out = append(out, field{key, v})
	}
	return out
}

func find(fs []field, key string) (json.RawMessage, bool) {
	for _, f := range fs {
		if f.key == key {
			return f.val, true
		}
	}
	return nil, false
}

// diffObjects appends the ops from object a to object b at path; at the
// top level, channels are diffed by id.
func diffObjects(dst []byte, path string, a, b []field, top bool) []byte {
	for _, f := range b {
		p := path + "/" + escapePointer(f.key)
		old, ok := find(a, f.key)
		switch {
		case !ok:
			dst = appendOp(dst, "add", p, f.val)
		case top && f.key == "channels":
			dst = diffChannels(dst, p, old, f.val)
		case !bytes.Equal(old, f.val):
			dst = appendOp(dst, "replace", p, f.val)
		}
	}
	for _, f := range a {
		if _, ok := find(b, f.key); !ok {
			dst = appendOp(dst, "remove", path+"/"+escapePointer(f.key), nil)
		}
	}
	return dst
}

// diffChannels appends the ops from one channel list to another, each
// channel by its id.
func diffChannels(dst []byte, path string, a, b json.RawMessage) []byte {
	var as, bs []json.RawMessage
	if json.Unmarshal(a, &as) != nil || json.Unmarshal(b, &bs) != nil {
		return appendOp(dst, "replace", path, b)
	}
	id := func(raw json.RawMessage) string {
		var c struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(raw, &c)
		return c.ID
	}
	olds := make(map[string]json.RawMessage, len(as))
	for _, c := range as {
		olds[id(c)] = c
	}
	seen := make(map[string]bool, len(bs))
	for _, c := range bs {
		cid := id(c)
		seen[cid] = true
		p := path + "/" + escapePointer(cid)
		if old, ok := olds[cid]; ok {
			dst = diffObjects(dst, p, objectFields(old), objectFields(c), false)
		} else {
			dst = appendOp(dst, "add", p, c)
		}
	}
	for _, c := range as {
		if cid := id(c); !seen[cid] {
			dst = appendOp(dst, "remove", path+"/"+escapePointer(cid), nil)
		}
	}
	return dst
}

func appendOp(dst []byte, op, path string, value []byte) []byte {
	dst = append(dst, `{"op":"`...)
	dst = append(dst, op...)
	dst = append(dst, `","path":`...)
	dst = AppendString(dst, path)
	if value != nil {
		dst = append(dst, `,"value":`...)
		dst = append(dst, value...)
	}
	return append(dst, '}', ',')
}

// escapePointer escapes a JSON Pointer reference token (RFC 6901).
func escapePointer(s string) string {
	if !strings.ContainsAny(s, "~/") {
		return s
	}
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}
