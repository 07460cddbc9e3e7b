//go:build unix

package broker

import (
	"syscall"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/protocol"
)

// connectionCap returns limits.connections, lowered (with a warning) so
// that client connections, the health reserve and protocol.FDReserve fit in the
// process's file limit: at the cap, accept must still work, or health
// checks stop answering.
func (s *Server) connectionCap() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return s.cfg.Limits.Connections
	}
	budget := int64(rl.Cur) - protocol.FDReserve - protocol.HealthReserve
	if int64(s.cfg.Limits.Connections) <= budget {
		return s.cfg.Limits.Connections
	}
	capped := int(max(budget, 1))
	s.log.Warn("limits.connections lowered to fit the process's file limit (raise ulimit -n)",
		zap.Int("limits.connections", s.cfg.Limits.Connections), zap.Int("effective", capped), zap.Uint64("nofile", rl.Cur))
	return capped
}
