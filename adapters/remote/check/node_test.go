package check_test

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctibroker/ctibroker/adapters/remote/check"
)

// The Node example adapter (examples/adapter-node, @grpc/grpc-js) passes
// the conformance kit. It needs node and npm: without them the test skips,
// loudly, unless CTIBROKER_REQUIRE_NODE=1 (CI) makes it fail.
func TestNodeExamplePassesTheKit(t *testing.T) {
	dir, err := filepath.Abs("../../../examples/adapter-node")
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing(t, "node is not installed")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@grpc", "grpc-js")); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			missing(t, "npm is not installed")
		}
		install := exec.Command(npm, "ci", "--no-audit", "--no-fund")
		install.Dir = dir
		if out, err := install.CombinedOutput(); err != nil {
			missing(t, "npm ci failed (is the npm registry reachable?): "+err.Error()+"\n"+string(out))
		}
	}
	cmd := exec.Command(node, "adapter.js", "--listen", "127.0.0.1:0")
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "adapter listening on "); ok {
				addr <- a
			}
		}
	}()
	var a string
	select {
	case a = <-addr:
	case <-time.After(20 * time.Second):
		t.Fatalf("the Node adapter did not start:\n%s", stderr.String())
	}
	var report bytes.Buffer
	if n := check.Run(context.Background(), a, check.Options{Timeout: 3 * time.Second}, &report); n != 0 {
		t.Fatalf("%d checks failed:\n%s", n, report.String())
	}
	t.Logf("the Node example:\n%s", report.String())
}

func missing(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CTIBROKER_REQUIRE_NODE") == "1" {
		t.Fatalf("CTIBROKER_REQUIRE_NODE=1: %s", why)
	}
	t.Skipf("SKIPPED LOUDLY: %s; the Node example adapter is not checked (set CTIBROKER_REQUIRE_NODE=1 to make this fail)", why)
}
