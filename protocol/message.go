package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"unicode/utf8"
)

// Result values of a reply.
const (
	ResultSuccess = "success"
	ResultFailure = "failure"
)

// MessageTypeObjectEvent is the messageType of every event.
const MessageTypeObjectEvent = "objectEvent"

// Request is a command sent by a client.
type Request struct {
	Command   string          `json:"command"`
	Target    string          `json:"target"`
	Data      json.RawMessage `json:"data,omitempty"`
	RequestID string          `json:"requestId,omitempty"`
}

// Failure describes why a command failed.
type Failure struct {
	Code    FailureCode `json:"code"`
	Message string      `json:"message"`
	Context string      `json:"context,omitempty"`
}

func (f *Failure) Error() string { return string(f.Code) + ": " + f.Message }

// Failf builds a Failure with a formatted message.
func Failf(code FailureCode, format string, args ...any) *Failure {
	return &Failure{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Reply answers one request. On success Data is the request's data or the
// command's result; on failure Original is the request as received.
type Reply struct {
	Command   string          `json:"command"`
	Target    string          `json:"target"`
	Result    string          `json:"result"`
	Data      json.RawMessage `json:"data,omitempty"`
	Failure   *Failure        `json:"failure,omitempty"`
	Original  json.RawMessage `json:"original,omitempty"`
	RequestID string          `json:"requestId,omitempty"`
	// Truncated: what the failure echoes of the request (command, target,
	// requestId, original, the message) was cut at MaxEchoBytes each; a
	// cut original is the start of the frame as a JSON string.
	Truncated bool `json:"truncated,omitempty"`
}

// Event is an object event pushed by the broker. Seq is per session, starts at
// 1 and strictly increases; Timestamp is Unix milliseconds.
type Event struct {
	MessageType string          `json:"messageType"`
	Target      string          `json:"target"`
	Name        string          `json:"name"`
	Data        json.RawMessage `json:"data"`
	// Seq numbers a session's events from 1; live view messages
	// (supervisor.snapshot, supervisor.agent.changed) have none.
	Seq       uint64 `json:"seq,omitempty"`
	Timestamp int64  `json:"timestamp"`
}

// Inbound is a decoded client frame: either a well-formed request, or the
// failure that answers it together with what must be echoed back.
type Inbound struct {
	Request Request
	// Original is what a failure reply echoes of the frame: the JSON object
	// itself, or (INVALID_JSON, or a frame over MaxEchoBytes: Truncated)
	// the text as a JSON string. Always valid UTF-8.
	Original  json.RawMessage
	Truncated bool
	Failure   *Failure
}

// The failures of a frame that is not a request at all.
const (
	msgNotJSON   = "frame is not valid JSON"
	msgNotObject = "frame is not a JSON object"
)

// DecodeRequest parses one client frame. It never panics; every malformed
// input yields an Inbound with Failure set and as much of the request as could
// be recovered (command, target, requestId) so that the reply can echo them.
// The Inbound shares no memory with frame.
func DecodeRequest(frame []byte) Inbound {
	// Invalid UTF-8 can only be inside JSON strings: replacing it keeps
	// valid JSON valid, and everything echoed from it (data, original)
	// valid UTF-8, which browsers require of text frames.
	original := frame
	if !utf8.Valid(frame) {
		frame = bytes.ToValidUTF8(frame, []byte("\uFFFD"))
	}
	// Unmarshal validates the whole frame before it decodes (trailing
	// garbage is a syntax error), so the frame is scanned once: a frame it
	// accepts can be echoed as it is.
	if b := bytes.TrimSpace(frame); len(b) == 0 || b[0] != '{' {
		if !json.Valid(frame) {
			return RejectFrame(original, msgNotJSON)
		}
		return RejectFrame(original, msgNotObject)
	}
	var fields struct {
		Command   string          `json:"command"`
		Target    string          `json:"target"`
		Data      json.RawMessage `json:"data"`
		RequestID string          `json:"requestId"`
	}
	if err := json.Unmarshal(frame, &fields); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return decodeLoosely(frame)
		}
		return RejectFrame(original, msgNotJSON)
	}
	in := Inbound{Request: Request{Command: fields.Command, Target: fields.Target, RequestID: fields.RequestID}}
	in.Original, in.Truncated = echoObject(frame)
	return validate(in, fields.Data)
}

// decodeLoosely decodes a request with a field of the wrong type (the one
// frame in a thousand that is not well formed): what is a string of
// command, target and requestId is recovered, so that the failure reply can
// echo it.
func decodeLoosely(frame []byte) Inbound {
	var fields struct {
		Command   json.RawMessage `json:"command"`
		Target    json.RawMessage `json:"target"`
		Data      json.RawMessage `json:"data"`
		RequestID json.RawMessage `json:"requestId"`
	}
	_ = json.Unmarshal(frame, &fields) // valid JSON, an object: only these fields are decoded, and into raw values
	var in Inbound
	in.Original, in.Truncated = echoObject(frame)
	var typeErr error
	str := func(name string, raw json.RawMessage, dst *string) {
		if len(raw) == 0 || isNull(raw) {
			return
		}
		if err := json.Unmarshal(raw, dst); err != nil && typeErr == nil {
			typeErr = fmt.Errorf("field %q must be a string", name)
		}
	}
	str("command", fields.Command, &in.Request.Command)
	str("target", fields.Target, &in.Request.Target)
	str("requestId", fields.RequestID, &in.Request.RequestID)
	if typeErr != nil {
		in.Failure = &Failure{Code: CodeInvalidRequest, Message: typeErr.Error()}
		return in
	}
	return validate(in, fields.Data)
}

// echoObject is what a failure reply echoes of a frame that is a JSON
// object: the object itself, or, over MaxEchoBytes, its start as a string.
func echoObject(frame []byte) (json.RawMessage, bool) {
	trimmed := bytes.TrimSpace(frame)
	if len(trimmed) > MaxEchoBytes {
		return echoText(trimmed)
	}
	return bytes.Clone(trimmed), false // the frame's buffer is the reader's again
}

// validate checks a decoded request's data and fields.
func validate(in Inbound, data json.RawMessage) Inbound {
	if len(data) > 0 && !isNull(data) {
		if data[0] != '{' {
			in.Failure = Failf(CodeInvalidRequest, "field \"data\" must be an object")
			return in
		}
		in.Request.Data = data
	}
	switch {
	case in.Request.Command == "":
		in.Failure = Failf(CodeInvalidRequest, "field \"command\" is required")
	case len(in.Request.RequestID) > MaxIDLength:
		in.Failure = Failf(CodeInvalidRequest, "field \"requestId\" is longer than %d bytes", MaxIDLength)
	}
	return in
}

// RejectFrame answers a frame that cannot be a request at all (a binary
// frame): INVALID_JSON with the frame echoed as a JSON string.
func RejectFrame(frame []byte, message string) Inbound {
	in := Inbound{Failure: &Failure{Code: CodeInvalidJSON, Message: message}}
	in.Original, in.Truncated = echoText(frame)
	return in
}

// echoText encodes the start of frame as a JSON string of at most about
// MaxEchoBytes, with invalid UTF-8 replaced; truncated reports a cut.
func echoText(frame []byte) (json.RawMessage, bool) {
	s := CutEncoded(string(frame), MaxEchoBytes)
	text, _ := Marshal(s)
	return text, len(s) < len(frame)
}

// CutEncoded returns the longest prefix of s, on a rune boundary, whose
// JSON encoding (without quotes) takes at most n bytes: control characters
// take six bytes encoded, so cutting by raw length would still amplify.
func CutEncoded(s string, n int) string {
	size := 0
	for i, r := range s {
		w := utf8.RuneLen(r)
		switch {
		case r == utf8.RuneError:
			w = 3 // invalid bytes are encoded as U+FFFD
		case r == '"' || r == '\\' || r == '\n' || r == '\r' || r == '\t':
			w = 2
		case r < 0x20 || r == 0x7f || r == 0x2028 || r == 0x2029:
			w = 6
		}
		if size+w > n {
			return s[:i]
		}
		size += w
	}
	return s
}

// Marshal encodes v as JSON like encoding/json, without HTML escaping: what
// the broker sends is read by programs, and escaping <, > and & would make
// a reply up to six times larger than what it echoes.
func Marshal(v any) ([]byte, error) { return AppendJSON(nil, v) }

// AppendJSON appends v encoded as Marshal encodes it to dst; on error it
// returns dst unchanged. It allocates nothing when dst has room, which is
// how a session encodes an op's events into one buffer.
func AppendJSON(dst []byte, v any) ([]byte, error) {
	e := encoders.Get().(*encoder)
	defer encoders.Put(e)
	e.buf.Reset()
	if err := e.enc.Encode(v); err != nil {
		return dst, err
	}
	return append(dst, bytes.TrimSuffix(e.buf.Bytes(), []byte{'\n'})...), nil
}

// encoder is a reusable json.Encoder without HTML escaping: Marshal then
// allocates only its result, like json.Marshal.
type encoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var encoders = sync.Pool{New: func() any {
	e := &encoder{}
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetEscapeHTML(false)
	return e
}}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// DecodeData unmarshals a command's data into dst. Absent data decodes as an
// empty object. Type errors are reported as INVALID_REQUEST naming the field.
func DecodeData(data json.RawMessage, dst any) *Failure {
	if len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, dst); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return Failf(CodeInvalidRequest, "field \"data.%s\" must be %s, not %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
		}
		return Failf(CodeInvalidRequest, "invalid data: %v", err)
	}
	return nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "struct", "map":
		return "an object"
	case "slice", "array":
		return "an array"
	default:
		return "a number"
	}
}

// SuccessReply builds a success reply echoing the request.
func SuccessReply(req Request, data json.RawMessage) Reply {
	return Reply{Command: req.Command, Target: req.Target, Result: ResultSuccess, Data: data, RequestID: req.RequestID}
}

// FailureReply builds a failure reply carrying the original frame. What it
// echoes of the client's input is cut at MaxEchoBytes each (and the reply
// marked Truncated): a reply is never much larger than its request.
func FailureReply(in Inbound, f *Failure) Reply {
	r := Reply{Result: ResultFailure, Original: in.Original, Truncated: in.Truncated}
	cut := func(s string) string {
		c := CutEncoded(s, MaxEchoBytes)
		r.Truncated = r.Truncated || len(c) < len(s)
		return c
	}
	r.Command, r.Target, r.RequestID = cut(in.Request.Command), cut(in.Request.Target), cut(in.Request.RequestID)
	if f != nil {
		bounded := *f
		bounded.Message, bounded.Context = cut(f.Message), cut(f.Context)
		r.Failure = &bounded
	}
	return r
}

// AppendString appends s as a JSON string. It escapes what JSON requires
// (quote, backslash, control characters), and no HTML characters (see
// Marshal); s must be valid UTF-8 (ids are validated).
func AppendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c != 0x7f {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
