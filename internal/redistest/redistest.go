// Package redistest starts real redis-server processes for tests, on free
// loopback ports. Tests that need Redis skip with a loud message when
// redis-server is not installed, and fail instead when
// CTIBROKER_REQUIRE_REDIS=1 (as in CI).
package redistest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server process owned by a test.
type Server struct {
	tb   testing.TB
	bin  string
	dir  string
	Port int
	Addr string

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start starts redis-server with append-only persistence (fsync always), so
// that a restart keeps every acknowledged write. It is stopped at cleanup.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server is not installed: SKIPPING a test that needs a real Redis (apt-get install redis-server)"
		if os.Getenv("CTIBROKER_REQUIRE_REDIS") == "1" {
			tb.Fatal("CTIBROKER_REQUIRE_REDIS=1 but " + msg)
		}
		tb.Skip("!!! " + msg)
	}
	s := &Server{tb: tb, bin: bin, dir: tb.TempDir(), Port: freePort(tb)}
	s.Addr = "127.0.0.1:" + strconv.Itoa(s.Port)
	s.StartAgain()
	tb.Cleanup(s.Stop)
	return s
}

// URL returns a redis:// URL for database 0.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

func freePort(tb testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// StartAgain (re)starts the server on the same port and data directory.
func (s *Server) StartAgain() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.tb.Fatal("redistest: server already running")
	}
	cmd := exec.Command(s.bin, "--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no",
		"--logfile", filepath.Join(s.dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("redistest: start redis-server: %v", err)
	}
	s.cmd = cmd
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.tb.Fatalf("redistest: redis-server on %s did not answer: %v\n%s", s.Addr, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server (SIGKILL: an outage, not a clean shutdown) and waits
// for it to exit.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // a paused server dies too
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Pause stops the server without killing it (SIGSTOP): connections stay
// open and commands sent meanwhile run when it resumes, as after a long GC
// pause, a frozen VM or a network stall.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.tb.Fatal("redistest: server not running")
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.tb.Fatalf("redistest: %v: %v", sig, err)
	}
}

// Client returns a client for the test's own checks, closed at cleanup.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	s.tb.Cleanup(func() { _ = c.Close() })
	return c
}
