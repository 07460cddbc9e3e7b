// Package channel implements one agent channel: its state machine (looplab/fsm
// is the single source of truth for which transitions are legal), the mapping
// from protocol commands to machine events, interactions in progress, and the
// timeline of every (state, status, reason) interval.
//
// Ownership: a Channel is not safe for concurrent use. It is owned by the
// session goroutine that created it, which is the only caller of its methods;
// other goroutines see channels only through copies (Snapshot, Timeline).
package channel
