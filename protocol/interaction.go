package protocol

import (
	"fmt"
	"strings"
)

const interactionTargetExamples = "<session>.<channel>.<interaction> or <session>.<group>.<channel>.<interaction>"

// Interaction states: the full protocol's. COMPLETED means wrap-up done.
const (
	IxAlerting  = "ALERTING"
	IxDialing   = "DIALING"
	IxStarted   = "STARTED"
	IxHeld      = "HELD"
	IxEnded     = "ENDED"
	IxCompleted = "COMPLETED"
)

// Directions of an interaction.
const (
	DirInbound  = "inbound"
	DirOutbound = "outbound"
	DirInternal = "internal"
)

// Causes of interaction.ended.
const (
	CauseReleased    = "released"    // this agent hung up
	CauseRemote      = "remote"      // the far party hung up
	CauseAbandoned   = "abandoned"   // the caller gave up before it was answered
	CauseNoAnswer    = "noanswer"    // ring timeout (inbound) or no answer (outbound)
	CauseRejected    = "rejected"    // the agent declined it; it went back to its queue
	CauseBusy        = "busy"        // outbound: the destination was busy
	CauseTransferred = "transferred" // handed to another party
	CauseFailed      = "failed"      // the switch could not set it up
)

// Member roles and states.
const (
	RoleCaller   = "caller"
	RoleAgent    = "agent"
	RoleConsult  = "consult"
	RoleTransfer = "transfer"

	MemberRinging      = "ringing"
	MemberConnected    = "connected"
	MemberHeld         = "held"
	MemberDisconnected = "disconnected"
)

// ReasonNoAnswer is the system not-ready reason the switch forces after an
// agent let an interaction ring out or rejected it (redirect on no answer).
const ReasonNoAnswer = "missed"

// Interaction is a call, chat or e-mail on a channel, as desktops see it.
type Interaction struct {
	ID          string            `json:"id"`
	Channel     string            `json:"channel"`
	MediaType   string            `json:"mediaType"`
	Direction   string            `json:"direction"`
	State       string            `json:"state"`
	From        string            `json:"from,omitempty"`
	To          string            `json:"to,omitempty"`
	Queue       string            `json:"queue,omitempty"`
	Data        map[string]string `json:"data,omitempty"`
	Disposition string            `json:"disposition,omitempty"`
	// Parent: on a consult leg, the interaction it consults about.
	Parent  string   `json:"parent,omitempty"`
	Cause   string   `json:"cause,omitempty"`
	Members []Member `json:"members"`
	// Created (in unix ms) is when the switch created it; Queued how long
	// it waited in its queue before it was offered.
	Created    int64 `json:"created"`
	QueuedMs   int64 `json:"queuedMs"`
	StateSince int64 `json:"stateSince"`
	Ended      int64 `json:"ended,omitempty"`
	Completed  int64 `json:"completed,omitempty"`
	// Phases is its timeline on this agent: WAITING (ringing), ACTIVE,
	// HELD, ACW, each with its start and end (unix ms).
	Phases []Phase `json:"phases,omitempty"`
}

// Member is a party of an interaction.
type Member struct {
	ID      string `json:"id"`
	Role    string `json:"role"`
	Name    string `json:"name,omitempty"`
	Address string `json:"address,omitempty"`
	State   string `json:"state"`
}

// Phase is a period of an interaction's timeline.
type Phase struct {
	Phase string `json:"phase"`
	Start int64  `json:"start"`
	End   int64  `json:"end,omitempty"`
}

// Interaction phases (the session timeline's, 000_6c7d467a796772da.txt).
const (
	PhaseWaiting = "WAITING"
	PhaseActive  = "ACTIVE"
	PhaseHeld    = "HELD"
	PhaseACW     = "ACW"
)

// Disposition is a wrap-up code. Queue and MediaType, when set, restrict
// the interactions it applies to.
type Disposition struct {
	Code      string `json:"code" koanf:"code"`
	Name      string `json:"name" koanf:"name"`
	Queue     string `json:"queue,omitempty" koanf:"queue"`
	MediaType string `json:"mediaType,omitempty" koanf:"mediatype"`
}

// AppliesTo reports whether the code may wrap up ix.
func (d Disposition) AppliesTo(ix *Interaction) bool {
	return (d.Queue == "" || d.Queue == ix.Queue) && (d.MediaType == "" || strings.EqualFold(d.MediaType, ix.MediaType))
}

// DispositionsUpdated is the data of channel.externaldispositions.updated.
type DispositionsUpdated struct {
	Dispositions []Disposition `json:"dispositions"`
}

// InteractionEvent is the data of interaction.created, infochanged, ended
// and completed.
type InteractionEvent struct {
	Interaction *Interaction `json:"interaction"`
	Previous    string       `json:"previous,omitempty"`
}

// InteractionTarget is a parsed interaction target: a channel target and
// the interaction's id.
type InteractionTarget struct {
	Target
	Interaction string
}

// ParseInteractionTarget splits <session>.<channel>.<interaction> or
// <session>.<group>.<channel>.<interaction>. It never panics.
func ParseInteractionTarget(s string) (InteractionTarget, error) {
	i := strings.LastIndexByte(s, '.')
	if i < 0 {
		return InteractionTarget{}, fmt.Errorf("target %q is not an interaction: %s", s, interactionTargetExamples)
	}
	id := s[i+1:]
	if err := ValidateID(id); err != nil {
		return InteractionTarget{}, fmt.Errorf("target %q: %w", s, err)
	}
	t, err := ParseTarget(s[:i])
	if err != nil {
		return InteractionTarget{}, fmt.Errorf("target %q is not an interaction (%s): %w", s, interactionTargetExamples, err)
	}
	if t.IsSession() {
		return InteractionTarget{}, fmt.Errorf("target %q is not an interaction: %s", s, interactionTargetExamples)
	}
	return InteractionTarget{Target: t, Interaction: id}, nil
}

// String formats the target back into its wire form.
func (t InteractionTarget) String() string { return t.Target.String() + "." + t.Interaction }

// ValidateData checks attached data from a client: bounded keys and values.
func ValidateData(d map[string]string) error {
	if len(d) > MaxInteractionDataKeys {
		return fmt.Errorf("data has %d keys, at most %d", len(d), MaxInteractionDataKeys)
	}
	for k, v := range d {
		if k == "" || len(k) > MaxNameLength {
			return fmt.Errorf("data key %q: empty or longer than %d bytes", k, MaxNameLength)
		}
		if len(v) > MaxInteractionDataValueLen {
			return fmt.Errorf("data value of %q: longer than %d bytes", k, MaxInteractionDataValueLen)
		}
	}
	return nil
}

// QueueFigures are a queue's live figures (issue 16): what waits, and
// today's (UTC) offered, answered and abandoned interactions, with the
// average speed of answer and the service level (answered within
// ServiceLevelSec, of those offered and not abandoned within it).
type QueueFigures struct {
	Name      string   `json:"name"`
	MediaType string   `json:"mediaType"`
	Teams     []string `json:"teams,omitempty"`
	Waiting   int      `json:"waiting"`
	// LongestWaitStart is when the longest-waiting interaction was queued
	// (Unix ms; 0 when none waits): clients count up from it.
	LongestWaitStart int64 `json:"longestWaitStart,omitempty"`
	Offered          int   `json:"offered"`
	Answered         int   `json:"answered"`
	Abandoned        int   `json:"abandoned"`
	// AvgSpeedOfAnswerMs: queued until answered, averaged over answered.
	AvgSpeedOfAnswerMs int64 `json:"avgSpeedOfAnswerMs"`
	ServiceLevelSec    int   `json:"serviceLevelSec"`
	// ServiceLevelPct: answered within the service level, in % of those
	// answered or abandoned after it; 100 with none.
	ServiceLevelPct float64 `json:"serviceLevelPct"`
	// AnsweredInSL and AbandonedAfterSL are the service level's terms, so
	// that figures of several switches add up.
	AnsweredInSL     int `json:"answeredWithinServiceLevel"`
	AbandonedAfterSL int `json:"abandonedAfterServiceLevel"`
	// Agents: staffed (an ACTIVE channel on the queue), and by status.
	Staffed  int `json:"staffed"`
	Ready    int `json:"ready"`
	Busy     int `json:"busy"`
	ACW      int `json:"afterCallWork"`
	NotReady int `json:"notReady"`
}
