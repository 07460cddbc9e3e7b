package protocol

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Target addresses a session, or a channel inside it, optionally through a
// channel group: "<session>", "<session>.<channel>", "<session>.<group>.<channel>".
type Target struct {
	Session string
	Group   string
	Channel string
}

// ParseTarget splits a target string. It never panics and rejects empty parts,
// more than three parts and invalid ids.
func ParseTarget(s string) (Target, error) {
	if s == "" {
		return Target{}, fmt.Errorf("target is empty")
	}
	parts := strings.Split(s, ".")
	if len(parts) > 3 {
		return Target{}, fmt.Errorf("target %q has %d parts, at most 3 (session.group.channel)", s, len(parts))
	}
	for _, p := range parts {
		if err := ValidateID(p); err != nil {
			return Target{}, fmt.Errorf("target %q: %w", s, err)
		}
	}
	switch len(parts) {
	case 1:
		return Target{Session: parts[0]}, nil
	case 2:
		return Target{Session: parts[0], Channel: parts[1]}, nil
	default:
		return Target{Session: parts[0], Group: parts[1], Channel: parts[2]}, nil
	}
}

// IsSession reports whether the target names a session rather than a channel.
func (t Target) IsSession() bool { return t.Channel == "" }

// String formats the target back into its wire form.
func (t Target) String() string {
	switch {
	case t.Channel == "":
		return t.Session
	case t.Group == "":
		return t.Session + "." + t.Channel
	default:
		return t.Session + "." + t.Group + "." + t.Channel
	}
}

// ValidateID checks a session, group or channel id: non-empty, no '.', printable
// UTF-8, at most MaxIDLength bytes.
func ValidateID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("id is empty")
	case len(id) > MaxIDLength:
		return fmt.Errorf("id is longer than %d bytes", MaxIDLength)
	case !utf8.ValidString(id):
		return fmt.Errorf("id is not valid UTF-8")
	case strings.ContainsRune(id, '.'):
		return fmt.Errorf("id %q contains '.'", id)
	}
	for _, r := range id {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("id %q contains a control character", id)
		}
	}
	return nil
}
