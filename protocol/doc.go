// Package protocol defines the ctibroker wire protocol: requests, replies and
// object events exchanged as JSON text frames over the agent WebSocket, the
// typed tables of failure codes and close codes, target parsing, and the data
// shapes of every command and event.
//
// The package depends on nothing else in the module so that clients, adapters
// and tests can share it without pulling in the broker.
package protocol
