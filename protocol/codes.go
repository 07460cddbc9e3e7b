package protocol

import "net/http"

// FailureCode is the machine-readable reason of a failure. Clients branch on
// it; the human-readable message may change between releases, the code may
// not.
type FailureCode string

// Failure codes. FailureCodes lists them with what they mean.
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
	CodeUnauthorized   FailureCode = "UNAUTHORIZED"
	CodeTooLarge       FailureCode = "TOO_LARGE"
	CodeUnsupported    FailureCode = "UNSUPPORTED_MEDIA_TYPE"
	CodeNotSupported   FailureCode = "NOT_SUPPORTED"
	CodeCTILinkDown    FailureCode = "CTI_LINK_DOWN"
)

// FailureDoc describes one failure code: the HTTP status a REST error with
// it has, whether it is transient (the same request may succeed later: it
// is retried with the same requestId, and its reply is not remembered), and
// whether command replies carry it (or only REST and the WebSocket upgrade).
type FailureDoc struct {
	Code       FailureCode
	HTTPStatus int
	Transient  bool
	InReplies  bool
	When       string
}

// The failure code table: the one place that says what each code means.
var failureCodes = []FailureDoc{
	{CodeInvalidJSON, http.StatusBadRequest, false, true, "The frame is not valid JSON (or is a binary frame). `original` holds the received text as a JSON string."},
	{CodeInvalidRequest, http.StatusBadRequest, false, true, "A field is missing or has the wrong type, e.g. `channel.notready` without `reasoncode`, an id containing `.`."},
	{CodeUnknownCommand, http.StatusBadRequest, false, true, "The `command` is not one the broker knows."},
	{CodeInvalidTarget, http.StatusBadRequest, false, true, "The `target` is malformed for the command (empty part, too many parts, session command with a channel target)."},
	{CodeNotFound, http.StatusNotFound, false, true, "The target session, channel group or channel does not exist."},
	{CodeForbidden, http.StatusForbidden, false, true, "The target belongs to another agent's session, or the caller's role or teams do not allow it."},
	{CodeInvalidState, http.StatusConflict, false, true, "The channel or interaction state machine refuses the command (the message names the current state and, for a required disposition, the interaction), the channel is at its capacity, or the id already exists."},
	{CodeInvalidReason, http.StatusBadRequest, false, true, "The reason code is not in the not-ready or logout catalog, or is not selectable by agents."},
	{CodeAdapterError, http.StatusBadGateway, true, true, "The telephony switch (CTI adapter) refused or failed the change. Nothing changed in the broker."},
	{CodeTimeout, http.StatusGatewayTimeout, true, true, "The switch did not answer within `adapter.timeout`. Nothing changed in the broker."},
	{CodeCTILinkDown, http.StatusServiceUnavailable, true, true, "The CTI adapter process, or its link to the switch, is down (`session.ctilink.changed` said so): the command failed at once and nothing changed. Retry once the link is back."},
	{CodeRateLimited, http.StatusTooManyRequests, true, true, "The session receives commands faster than `limits.commandrate` (whatever its connections: reconnecting does not refill the bucket); the command was not applied. Before the WebSocket upgrade (HTTP 429 with `Retry-After`): the agent has a session on this node and connected to it faster than `limits.connectrate`."},
	{CodeUnavailable, http.StatusServiceUnavailable, true, true, "The shared state store (Redis) is unreachable, so the change could not be stored: nothing was applied, or, if the switch had already applied it, the events follow once the store is back. Retry later. Before the WebSocket upgrade (HTTP 503 with `Retry-After`): the node holds `limits.connections`, or more upgrades wait for their turn than `limits.upgradewait` covers."},
	{CodeInternal, http.StatusInternalServerError, true, true, "A bug in the broker or an adapter; the command was not applied and the broker keeps running."},
	{CodeUnauthorized, http.StatusUnauthorized, false, false, "REST and the WebSocket upgrade: the token is missing, invalid or expired."},
	{CodeTooLarge, http.StatusRequestEntityTooLarge, false, false, "REST: the request body is larger than its route allows."},
	{CodeUnsupported, http.StatusUnsupportedMediaType, false, false, "REST: the request body is not `application/json`."},
	{CodeNotSupported, http.StatusNotImplemented, false, true, "The switch adapter does not implement what the command needs (interaction control)."},
}

var failureByCode = func() map[FailureCode]FailureDoc {
	m := make(map[FailureCode]FailureDoc, len(failureCodes))
	for _, d := range failureCodes {
		m[d.Code] = d
	}
	return m
}()

// FailureCodes returns the failure code table in documentation order.
func FailureCodes() []FailureDoc { return append([]FailureDoc(nil), failureCodes...) }

// Transient reports whether a failure may go away by itself: retry later,
// with the same requestId.
func (c FailureCode) Transient() bool { return failureByCode[c].Transient }

// HTTPStatus is the status of a REST error with this code (500 for a code
// not in the table).
func (c FailureCode) HTTPStatus() int {
	if d, ok := failureByCode[c]; ok {
		return d.HTTPStatus
	}
	return http.StatusInternalServerError
}

// CloseCode is a WebSocket close status the broker sends. It is a plain int so
// that this package does not depend on a WebSocket library.
type CloseCode int

// Close codes. CloseCodes lists them with what they mean.
const (
	CloseNormal           CloseCode = 1000
	CloseGoingAway        CloseCode = 1001
	CloseProtocolError    CloseCode = 1002
	ClosePolicyViolation  CloseCode = 1008
	CloseMessageTooBig    CloseCode = 1009
	CloseInternalError    CloseCode = 1011
	CloseTryAgainLater    CloseCode = 1013
	CloseSessionEnded     CloseCode = 4000
	CloseTakenOver        CloseCode = 4001
	CloseAlreadyConnected CloseCode = 4002
	CloseMoved            CloseCode = 4003
	CloseUnauthorized     CloseCode = 4401
)

// CloseDoc describes one close code and whether a client should reconnect
// after it (with since=<last seq>); after the others, reconnecting
// automatically would fight the reason it was closed for.
type CloseDoc struct {
	Code      CloseCode
	Reconnect bool
	When      string
}

var closeCodes = []CloseDoc{
	{CloseNormal, false, "The client closed the connection."},
	{CloseGoingAway, true, "The broker is shutting down; reconnect (to another node) with `since=<last seq>`."},
	{CloseProtocolError, true, "The client broke the WebSocket protocol (RFC 6455): a malformed, unmasked or oversize control frame, reserved bits, an unknown opcode."},
	{ClosePolicyViolation, false, "The client broke the protocol in a way that cannot be answered with a failure reply."},
	{CloseMessageTooBig, true, "A frame exceeded `ws.maxmessage`."},
	{CloseInternalError, true, "The broker failed unexpectedly; reconnect with `since=`."},
	{CloseTryAgainLater, true, "Slow consumer: the client did not read fast enough and its send queue (`limits.sendqueue` messages or `limits.sendqueuebytes` bytes) overflowed. The session lives on; reconnect with `since=`."},
	{CloseSessionEnded, false, "The session ended (`session.logout`); do not reconnect automatically."},
	{CloseTakenOver, false, "Another connection of the same agent took the session over (`session.multiconnect: takeover`)."},
	{CloseAlreadyConnected, false, "The agent already has a live connection and `session.multiconnect` is `reject`."},
	{CloseMoved, true, "`session.multiconnect` is `share` and the agent's session is served by another node, which its other connections use: reconnect there. The reason is that node's `node.url` (or, without one, `node <id>`: reach it through a load balancer that keeps an agent on one node)."},
	{CloseUnauthorized, true, "The token expired while the connection was open; reconnect with a fresh token."},
}

// CloseCodes returns the close code table in documentation order.
func CloseCodes() []CloseDoc { return append([]CloseDoc(nil), closeCodes...) }
