//go:build !unix

package wsbuf

import "errors"

// Elsewhere WaitReadable returns at once and the library waits.
const canRecvNoWait = false

func recvNoWait(uintptr, []byte) (int, error) {
	return 0, errors.New("wsbuf: no non-blocking receive on this system")
}
