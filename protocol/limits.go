package protocol

import "time"

// Fixed limits of the broker, in one place (configurable limits and their
// defaults are in broker/defaults.yaml). Every bound on client input that is
// not configurable is here, with why it has the value it has; README's
// "Security" section lists them.
const (
	// MinSecretLength is the shortest HS256 secret accepted: 256 bits.
	MinSecretLength = 32

	// MaxIDLength bounds session, group, channel, interaction and request
	// ids, so that no id can make the broker store arbitrarily large keys.
	MaxIDLength = 128

	// MaxNameLength bounds the names a client gives: a channel's name (its
	// switch endpoint: an extension, an address) and type, a group's name,
	// a queue. They are part of every state.updated and supervisor change.
	MaxNameLength = 256
	// MaxQueues bounds the queues one channel.activate names.
	MaxQueues = 64

	// MaxCloseReason bounds a close frame's reason (RFC 6455 5.5: a control
	// frame carries at most 125 bytes, 2 of them the code).
	MaxCloseReason = 123

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
	// MaxSimCalls bounds the simulated ACD's calls (queued or up).
	MaxSimCalls = 10000
	// MaxSimTrafficPerMinute bounds the sim's demo traffic per queue.
	MaxSimTrafficPerMinute = 6000
	// MaxSimRingMs bounds a simulated call's own ring timeout.
	MaxSimRingMs = 600_000

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

// Internal bounds and timings: queue sizes and intervals that are not
// worth a setting, each with why it has its value.
const (
	// RedisPubSubBuffer is go-redis's channel for the node's one pub/sub
	// connection; the dispatcher drains it without blocking.
	RedisPubSubBuffer = 8192
	// NodeTopicBuffer holds takeover requests to this node.
	NodeTopicBuffer = 1024
	// FollowBuffer holds bus messages of one followed topic (an event
	// stream, the supervisors' board); beyond it the follower resyncs from
	// the session streams.
	FollowBuffer = 4096
	// BoardQueue holds events between the board's follower and the board.
	BoardQueue = 8192
	// AgentStreamQueue holds events queued for one agent event stream;
	// beyond it the stream's follower waits, bounded by the write deadline.
	AgentStreamQueue = 256
	// QueueTopicBuffer holds queue figures from other nodes (a message per
	// node per change or refresh).
	QueueTopicBuffer = 256
	// QueueRefresh is how often a node reads and shares its adapter's
	// queue figures without being told they changed; a node's figures that
	// are not refreshed for three times as long are dropped (the node is
	// gone).
	QueueRefresh = 5 * time.Second
	// QueueStreamQueue holds queue changes for one SSE queue stream; beyond
	// it the stream starts again with a snapshot.
	QueueStreamQueue = 256
	// MaxViewQueues bounds the queues of one view a node accepts from the
	// bus, and a supervisor may name in supervisor.subscribe.
	MaxViewQueues = 1000
	// Webhooks: endpoints and outbox partitions at most; messages waiting
	// for the relay to append them to the outbox (beyond it a message is
	// dropped and counted: the store is down for that long); messages kept
	// per outbox partition (beyond it the oldest are trimmed, delivered or
	// not); how often a partition's worker looks for messages other nodes
	// appended; messages read at once; a dead letter list's length.
	MaxWebhookEndpoints  = 32
	MaxWebhookPartitions = 64
	WebhookRelayQueue    = 1 << 16
	WebhookOutboxMax     = 1_000_000
	WebhookPoll          = 200 * time.Millisecond
	WebhookBatch         = 100
	WebhookDeadMax       = 100_000
	WebhookMaxBodyEcho   = 512
	// WebhookPendingCap bounds the messages counted as pending per
	// partition (REST health, the pending metric); WebhookGaugeInterval is
	// how often the metric is counted.
	WebhookPendingCap    = 10_000
	WebhookGaugeInterval = 10 * time.Second
	// SSEHeartbeatSeconds keeps idle event streams open through proxies.
	SSEHeartbeatSeconds = 15

	// LiveBatchDelay is how long a subscription's first waiting change
	// waits for others before it is written: one write then carries the
	// changes of many agents, which is what lets a thousand subscribers
	// follow hundreds of changes a second. It adds at most this to a
	// change's delivery.
	LiveBatchDelay = 20 * time.Millisecond
	// LiveLagThreshold and LiveMaxReadDelay: while the supervisors' board
	// applies events more than LiveLagThreshold old, watches wait as long
	// as it lags (at most LiveMaxReadDelay) between reads, so that the
	// board gets the CPU to catch up (see board.readDelay).
	LiveLagThreshold = 50 * time.Millisecond
	LiveMaxReadDelay = time.Second
	// LiveLogSize is how many recent agent changes the board keeps for its
	// watches (a power of two). A watch that reads late folds what it
	// missed, one change per agent; one that falls further behind than this
	// (4 s at 2,000 changes/s) has lost changes and gets a resync snapshot.
	// About 1 KiB each once encoded.
	LiveLogSize = 8192
	// MaxFrameMessages and MaxFrameBytes bound the messages joined into
	// one WebSocket frame for a client that chose the batch subprotocol.
	MaxFrameMessages = 64
	MaxFrameBytes    = 64 << 10

	// RedisCommitBatches is how many batches of session commits may run on
	// Redis at once (each on a connection of its own): with one, Redis and
	// the broker took turns. 4 gave 7-23 % more commands per second at
	// full load than 1 (8 no more than 4), and the same latency and CPU at
	// 5,000 commands/s (docs/benchmarks.md, fifth round).
	RedisCommitBatches = 4

	// RenewBatch bounds the lease renewals sent to Redis in one pipeline:
	// Redis runs a pipeline's scripts back to back, so other nodes' and
	// sessions' commands wait behind it (200 renewals: about 2 ms).
	RenewBatch = 200
	// AcquirePollMs is how soon an opener retries a lease another node
	// holds, doubling (with jitter) up to AcquirePollMaxMs: a live owner
	// hands over within the first polls, a dead one's liveness lapses
	// within redis.nodettl, and thousands of agents failing over together
	// must not poll Redis every 50 ms each.
	AcquirePollMs    = 50
	AcquirePollMaxMs = 400
	// MaxOpeningPerCPU bounds the sessions a node opens or resumes at once,
	// per CPU: a failover storm (thousands of agents of a dead node
	// reconnecting together) queues for its turn instead of crowding out
	// the commands of the agents already there.
	MaxOpeningPerCPU = 8
	// MaxOrphanSweepSeconds bounds how often a node looks for sessions no
	// node holds (their node died and their agent did not come back): every
	// half session.grace, at least every second and at most this often,
	// but never more often than redis.leasettl (a session is adopted when
	// two sweeps in a row found it without a lease). One sweep costs Redis
	// a SMEMBERS and an EXISTS per live session.
	MaxOrphanSweepSeconds = 30
	// Interactions: attached data a client may set (keys, value bytes),
	// DTMF digits per command, a dial or transfer destination's bytes, and
	// the interactions a session holds (in progress or awaiting wrap-up).
	MaxInteractionDataKeys     = 64
	MaxInteractionDataValueLen = 1024
	MaxDTMFDigits              = 32
	MaxDestinationLength       = 128
	MaxInteractions            = 64
	// MaxInDoubt bounds the commits remembered while their outcome is
	// unknown (one per retry of a change while the store is down).
	MaxInDoubt = 64

	// HealthReserve connections above limits.connections are kept for
	// /healthz, /readyz and /metrics.
	HealthReserve = 16
	// FDReserve file descriptors are kept for everything but client
	// connections and Redis: listeners, log files, epoll, adapters. Redis's
	// pools are reserved on top (go-redis's default size, RedisPoolPerCPU
	// per CPU and address).
	FDReserve = 64
	// RedisPoolPerCPU is go-redis's default pool size per GOMAXPROCS.
	RedisPoolPerCPU = 10
	// RefuseConcurrency bounds the refused connections answered at once
	// (beyond it they are closed unanswered); each is answered within
	// RefuseSeconds, after reading at most RefuseReadBytes of its request.
	RefuseConcurrency = 64
	RefuseSeconds     = 1
	RefuseReadBytes   = 16 << 10
	// MaxPageNum bounds pageNum so that (pageNum-1)*pageSize cannot
	// overflow; a page beyond the list is simply empty.
	MaxPageNum = 1_000_000

	// JWKS fetching: the document's size, a fetch's time, how often a token
	// naming an unknown key id may make the broker fetch the set again (a
	// key rotation), and how long such a token waits for that.
	JWKSMaxBytes         = 1 << 20
	JWKSTimeoutSeconds   = 5
	JWKSUnknownKIDSecond = 10
	JWKSUnknownKIDWaitMs = 100
)
