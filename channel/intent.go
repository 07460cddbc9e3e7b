package channel

import (
	"encoding/json"
	"strings"

	"github.com/ctibroker/ctibroker/protocol"
)

// Reason is the reason code and its readable name attached to a status.
type Reason struct {
	Code string `json:"code,omitempty"`
	Name string `json:"name,omitempty"`
}

// Intent is a validated channel command: the machine event it fires and the
// reason and queues it carries.
type Intent struct {
	Command string   `json:"command,omitempty"`
	Event   Event    `json:"event"`
	Reason  Reason   `json:"reason"`
	Queues  []string `json:"queues,omitempty"`
}

// Catalog holds the reason codes an agent may use. Codes match a catalog
// entry by id or by code; the intent always carries the entry's id.
type Catalog struct {
	NotReady []protocol.ReasonCode
	Logout   []protocol.LogoutReason
}

// ACWName is the readable name of after-call work when the not-ready catalog
// has no "acw" entry of its own.
const ACWName = "After Call Work"

func labelName(labels []protocol.Label) string {
	for _, l := range labels {
		if strings.EqualFold(l.Language, "en") {
			return l.Name
		}
	}
	if len(labels) > 0 {
		return labels[0].Name
	}
	return ""
}

// Find names a not-ready code the switch reported, selectable or not.
func (c *Catalog) Find(code string) (Reason, bool) {
	for _, r := range c.NotReady {
		if r.ID == code || r.Code == code {
			return Reason{Code: r.ID, Name: labelName(r.Labels)}, true
		}
	}
	return Reason{}, false
}

// NotReadyReason resolves an agent-selected not-ready code.
func (c *Catalog) NotReadyReason(code string) (Reason, *protocol.Failure) {
	if strings.EqualFold(code, protocol.ReasonACW) {
		for _, r := range c.NotReady {
			if strings.EqualFold(r.ID, protocol.ReasonACW) || strings.EqualFold(r.Code, protocol.ReasonACW) {
				return Reason{Code: protocol.ReasonACW, Name: labelName(r.Labels)}, nil
			}
		}
		return Reason{Code: protocol.ReasonACW, Name: ACWName}, nil
	}
	for _, r := range c.NotReady {
		if r.ID == code || r.Code == code {
			if !r.Selectable {
				return Reason{}, protocol.Failf(protocol.CodeInvalidReason, "reason code %q is not selectable by agents", code)
			}
			return Reason{Code: r.ID, Name: labelName(r.Labels)}, nil
		}
	}
	return Reason{}, protocol.Failf(protocol.CodeInvalidReason, "reason code %q is not in the not-ready catalog", code)
}

// LogoutReason resolves a logout reason code; an empty code is allowed.
func (c *Catalog) LogoutReason(code string) (Reason, *protocol.Failure) {
	if code == "" {
		return Reason{}, nil
	}
	for _, r := range c.Logout {
		if r.ID == code || r.Code == code {
			return Reason{Code: r.ID, Name: labelName(r.Labels)}, nil
		}
	}
	return Reason{}, protocol.Failf(protocol.CodeInvalidReason, "logout reason %q is not in the logout catalog", code)
}

func checkQueues(qs []string) *protocol.Failure {
	if len(qs) > protocol.MaxQueues {
		return protocol.Failf(protocol.CodeInvalidRequest, "field \"data.channelOptions.queue\": at most %d queues", protocol.MaxQueues)
	}
	for _, q := range qs {
		if q == "" || len(q) > protocol.MaxNameLength {
			return protocol.Failf(protocol.CodeInvalidRequest, "field \"data.channelOptions.queue\": a queue name is 1 to %d bytes", protocol.MaxNameLength)
		}
	}
	return nil
}

// ParseCommand validates a channel.* command's data against the catalog and
// returns the intent it stands for. It does not look at any channel state.
func ParseCommand(command string, data json.RawMessage, cat *Catalog) (Intent, *protocol.Failure) {
	in := Intent{Command: command}
	switch command {
	case protocol.CmdChannelActivate, protocol.CmdChannelDeactivate:
		var d protocol.ChannelOptionsData
		if f := protocol.DecodeData(data, &d); f != nil {
			return in, f
		}
		if command == protocol.CmdChannelActivate {
			in.Event = EvActivate
		} else {
			in.Event = EvDeactivate
		}
		if d.ChannelOptions != nil {
			if f := checkQueues(d.ChannelOptions.Queue); f != nil {
				return in, f
			}
			in.Queues = d.ChannelOptions.Queue
			if command == protocol.CmdChannelDeactivate {
				r, f := cat.LogoutReason(string(d.ChannelOptions.Reason))
				if f != nil {
					return in, f
				}
				in.Reason = r
			}
		}
	case protocol.CmdChannelReady:
		var d struct{}
		if f := protocol.DecodeData(data, &d); f != nil {
			return in, f
		}
		in.Event = EvReady
	case protocol.CmdChannelNotReady:
		var d protocol.NotReadyData
		if f := protocol.DecodeData(data, &d); f != nil {
			return in, f
		}
		if d.ReasonCode == nil || *d.ReasonCode == "" {
			return in, protocol.Failf(protocol.CodeInvalidRequest, "field \"data.reasoncode\" is required")
		}
		r, f := cat.NotReadyReason(*d.ReasonCode)
		if f != nil {
			return in, f
		}
		in.Reason = r
		in.Event = EvNotReady
		if r.Code == protocol.ReasonACW {
			in.Event = EvACW
		}
	default:
		return in, protocol.Failf(protocol.CodeUnknownCommand, "unknown channel command %q", command)
	}
	return in, nil
}
