package protocol

// Fixed limits of the broker, in one place (configurable limits and their
// defaults are in broker/defaults.yaml). Every bound on client input that is
// not configurable is here, with why it has the value it has; README's
// "Security" section lists them.
const (
	// MaxIDLength bounds session, group, channel, interaction and request
	// ids, so that no id can make the broker store arbitrarily large keys.
	MaxIDLength = 128

	// MaxNameLength bounds the names a client gives: a channel's name (its
	// switch endpoint: an extension, an address) and type, a group's name,
	// a queue. They are part of every state.updated and supervisor change.
	MaxNameLength = 256
	// MaxQueues bounds the queues one channel.activate names.
	MaxQueues = 64

	// MaxEchoBytes bounds what a failure reply echoes of the client's input:
	// the request in "original" and the failure message. Longer input is cut
	// and the reply says "truncated": a reply never amplifies its request.
	MaxEchoBytes = 1024

	// MaxSubscriptions bounds the supervisor subscriptions of one session.
	MaxSubscriptions = 16

	// MaxControlBody bounds a request to the simulated switch's control API.
	MaxControlBody = 64 << 10
	// MaxSimFaults bounds the scripted faults one control request may inject
	// and the faults pending for one agent.
	MaxSimFaults = 1000

	// MaxRESTBody bounds any other REST request body.
	MaxRESTBody = 64 << 10
	// DefaultPageSize and MaxPageSize bound REST list pages.
	DefaultPageSize = 50
	MaxPageSize     = 500
	// MaxReportBuckets bounds the intervals of one report.
	MaxReportBuckets = 2000
	// MinTimeMs and MaxTimeMs bound every time a REST client passes (from,
	// to): 2000-01-01 and 2100-01-01 UTC. Outside, the request is refused
	// before any arithmetic can overflow.
	MinTimeMs = 946684800000
	MaxTimeMs = 4102444800000
)
