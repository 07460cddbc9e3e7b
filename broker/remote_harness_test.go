package broker

import (
	"bufio"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// simAdapter is the simulated switch in a process of its own, served over
// the adapter protocol (ctibroker adapter sim).
type simAdapter struct {
	tb            testing.TB
	env           []string
	addr, control string
	cmd           *exec.Cmd
	log           *syncBuffer
}

// startSimAdapter starts an adapter process configured by environment
// assignments (its adapter.sim section).
func startSimAdapter(tb testing.TB, env ...string) *simAdapter {
	tb.Helper()
	a := &simAdapter{tb: tb, env: env, addr: "127.0.0.1:0", control: "127.0.0.1:0"}
	a.start()
	tb.Cleanup(a.kill)
	return a
}

// start starts the process (again, on the same addresses after a kill).
func (a *simAdapter) start() {
	a.tb.Helper()
	a.log = &syncBuffer{}
	a.cmd = exec.Command(brokerBinary(a.tb), "adapter", "sim", "--listen", a.addr, "--control", a.control)
	a.cmd.Env = append(append(brokerlessEnviron(), "CTIBROKER_LOG__LEVEL=warn"), a.env...)
	out, err := a.cmd.StdoutPipe()
	if err != nil {
		a.tb.Fatal(err)
	}
	a.cmd.Stderr = a.log
	if err := a.cmd.Start(); err != nil {
		a.tb.Fatal(err)
	}
	lines := make(chan string, 2)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, out)
	}()
	deadline := time.After(15 * time.Second)
	for got := 0; got < 2; {
		select {
		case l, ok := <-lines:
			if !ok {
				a.tb.Fatalf("the adapter process ended:\n%s", a.log.String())
			}
			if addr, found := strings.CutPrefix(l, "adapter listening on "); found {
				a.addr, got = addr, got+1
			} else if addr, found := strings.CutPrefix(l, "control listening on "); found {
				a.control, got = addr, got+1
			}
		case <-deadline:
			a.tb.Fatalf("the adapter process did not start:\n%s", a.log.String())
		}
	}
}

// kill sends SIGKILL.
func (a *simAdapter) kill() {
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	_ = a.cmd.Wait()
	a.cmd = nil
}

// remoteEnv configures a broker to use the adapter.
func (a *simAdapter) remoteEnv() []string {
	return []string{"CTIBROKER_ADAPTER__KIND=remote", "CTIBROKER_ADAPTER__REMOTE__ADDR=" + a.addr}
}

// startBrokerRemote starts a broker in this process whose switch is the
// adapter process; simAt reaches the adapter's control API.
func startBrokerRemote(tb testing.TB, a *simAdapter, env ...string) *testBroker {
	tb.Helper()
	b := startBroker(tb, append(a.remoteEnv(), env...)...)
	b.simBase = "http://" + a.control
	return b
}
