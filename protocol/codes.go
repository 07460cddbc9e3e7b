package protocol

// FailureCode is the machine-readable reason of a failure reply. Clients branch
// on it; the human-readable message may change between releases, the code may not.
type FailureCode string

// Failure codes. FailureCodes lists them with their documentation.
const (
	CodeInvalidJSON    FailureCode = "INVALID_JSON"
	CodeInvalidRequest FailureCode = "INVALID_REQUEST"
	CodeUnknownCommand FailureCode = "UNKNOWN_COMMAND"
	CodeInvalidTarget  FailureCode = "INVALID_TARGET"
	CodeNotFound       FailureCode = "NOT_FOUND"
	CodeForbidden      FailureCode = "FORBIDDEN"
	CodeInvalidState   FailureCode = "INVALID_STATE"
	CodeInvalidReason  FailureCode = "INVALID_REASON"
	CodeAdapterError   FailureCode = "ADAPTER_ERROR"
	CodeTimeout        FailureCode = "TIMEOUT"
	CodeRateLimited    FailureCode = "RATE_LIMITED"
	CodeUnavailable    FailureCode = "UNAVAILABLE"
	CodeInternal       FailureCode = "INTERNAL"
)

// CodeDoc documents one code of a table.
type CodeDoc[T any] struct {
	Code T
	When string
}

var failureCodes = []CodeDoc[FailureCode]{
	{CodeInvalidJSON, "The frame is not valid JSON (or is a binary frame). `original` holds the received text as a JSON string."},
	{CodeInvalidRequest, "A field is missing or has the wrong type, e.g. `channel.notready` without `reasoncode`, an id containing `.`."},
	{CodeUnknownCommand, "The `command` is not one the broker knows."},
	{CodeInvalidTarget, "The `target` is malformed for the command (empty part, too many parts, session command with a channel target)."},
	{CodeNotFound, "The target session, channel group or channel does not exist."},
	{CodeForbidden, "The target belongs to another agent's session."},
	{CodeInvalidState, "The channel state machine refuses the command (the message names the current state), or the id already exists."},
	{CodeInvalidReason, "The reason code is not in the not-ready or logout catalog, or is not selectable by agents."},
	{CodeAdapterError, "The telephony switch (CTI adapter) refused or failed the change. Nothing changed in the broker."},
	{CodeTimeout, "The switch did not answer within `adapter.timeout`. Nothing changed in the broker."},
	{CodeRateLimited, "The session receives commands faster than `limits.commandrate` (whatever its connections: reconnecting does not refill the bucket); the command was not applied."},
	{CodeUnavailable, "The shared state store (Redis) is unreachable, so the change could not be stored: nothing was applied, or, if the switch had already applied it, the events follow once the store is back. Retry later."},
	{CodeInternal, "A bug in the broker or an adapter; the command was not applied and the broker keeps running."},
}

// FailureCodes returns the failure code table in documentation order.
func FailureCodes() []CodeDoc[FailureCode] {
	return append([]CodeDoc[FailureCode](nil), failureCodes...)
}

// CloseCode is a WebSocket close status the broker sends. It is a plain int so
// that this package does not depend on a WebSocket library.
type CloseCode int

// Close codes. CloseCodes lists them with their documentation.
const (
	CloseNormal           CloseCode = 1000
	CloseGoingAway        CloseCode = 1001
	ClosePolicyViolation  CloseCode = 1008
	CloseMessageTooBig    CloseCode = 1009
	CloseInternalError    CloseCode = 1011
	CloseTryAgainLater    CloseCode = 1013
	CloseSessionEnded     CloseCode = 4000
	CloseTakenOver        CloseCode = 4001
	CloseAlreadyConnected CloseCode = 4002
	CloseUnauthorized     CloseCode = 4401
)

var closeCodes = []CodeDoc[CloseCode]{
	{CloseNormal, "The client closed the connection."},
	{CloseGoingAway, "The broker is shutting down; reconnect (to another node) with `since=<last seq>`."},
	{ClosePolicyViolation, "The client broke the protocol in a way that cannot be answered with a failure reply."},
	{CloseMessageTooBig, "A frame exceeded `ws.maxmessage`."},
	{CloseInternalError, "The broker failed unexpectedly; reconnect with `since=`."},
	{CloseTryAgainLater, "Slow consumer: the client did not read fast enough and its send queue (`limits.sendqueue` messages or `limits.sendqueuebytes` bytes) overflowed. The session lives on; reconnect with `since=`."},
	{CloseSessionEnded, "The session ended (`session.logout`); do not reconnect automatically."},
	{CloseTakenOver, "Another connection of the same agent took the session over (`session.multiconnect: takeover`)."},
	{CloseAlreadyConnected, "The agent already has a live connection and `session.multiconnect` is `reject`."},
	{CloseUnauthorized, "The token expired while the connection was open; reconnect with a fresh token."},
}

// CloseCodes returns the close code table in documentation order.
func CloseCodes() []CodeDoc[CloseCode] { return append([]CodeDoc[CloseCode](nil), closeCodes...) }
