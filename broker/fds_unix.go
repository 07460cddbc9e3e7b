//go:build unix

package broker

import (
	"runtime"
	"syscall"

	"go.uber.org/zap"

	"github.com/ctibroker/ctibroker/protocol"
)

// connectionCap returns limits.connections, lowered (with a warning) to
// fit the process's file limit.
func (s *Server) connectionCap() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return s.cfg.Limits.Connections
	}
	capped := fitConnections(s.cfg.Limits.Connections, rl.Cur, s.cfg.Redis)
	if capped < s.cfg.Limits.Connections {
		s.log.Warn("limits.connections lowered to fit the process's file limit (raise ulimit -n)",
			zap.Int("limits.connections", s.cfg.Limits.Connections), zap.Int("effective", capped), zap.Uint64("nofile", rl.Cur))
	}
	return capped
}

// fitConnections lowers want so that client connections, the health
// reserve, Redis's pools and protocol.FDReserve fit in nofile files: at the
// cap, accept and Redis dials must still work, or health checks and commits
// fail.
func fitConnections(want int, nofile uint64, redis RedisConfig) int {
	budget := int64(nofile) - protocol.FDReserve - protocol.HealthReserve - int64(redisFDs(redis))
	if int64(want) <= budget {
		return want
	}
	return int(max(budget, 1))
}

// redisFDs is how many files Redis may use: go-redis's default pool per
// address (a cluster has one pool per node) and the PubSub connection.
func redisFDs(c RedisConfig) int {
	if !c.Enabled() {
		return 0
	}
	return protocol.RedisPoolPerCPU*runtime.GOMAXPROCS(0)*max(len(c.Addrs), 1) + 1
}
