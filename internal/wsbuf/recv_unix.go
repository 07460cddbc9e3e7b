//go:build unix

package wsbuf

import "syscall"

const canRecvNoWait = true

// recvNoWait reads what the socket holds, up to len(p) bytes, without
// waiting.
func recvNoWait(fd uintptr, p []byte) (int, error) {
	n, _, err := syscall.Recvfrom(int(fd), p, syscall.MSG_DONTWAIT)
	return n, err
}
