// Package typescript holds the TypeScript client; this Go test runs its
// Node tests (npm test) against the broker built from this tree, so that
// `make test` covers it, and checks that the agent desktop embeds the
// current build (broker/web/lib).
package typescript_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestTypeScriptClient(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		missing(t, "node is not installed")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		missing(t, "npm is not installed")
	}
	_ = node
	if _, err := os.Stat(filepath.Join("node_modules", "typescript")); err != nil {
		install := exec.Command(npm, "ci", "--no-audit", "--no-fund")
		if out, err := install.CombinedOutput(); err != nil {
			missing(t, "npm ci failed (is the npm registry reachable?): "+err.Error()+"\n"+string(out))
		}
	}
	bin := filepath.Join(t.TempDir(), "ctibroker")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/ctibroker").CombinedOutput(); err != nil {
		t.Fatalf("building the broker: %v\n%s", err, out)
	}
	cmd := exec.Command(npm, "test")
	cmd.Env = append(os.Environ(), "CTIBROKER_BIN="+bin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("npm test: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	// The agent desktop embeds this build: it must be this one.
	for _, f := range []string{"index.js", "protocol.js"} {
		built, err := os.ReadFile(filepath.Join("dist", f))
		if err != nil {
			t.Fatal(err)
		}
		embedded := filepath.Join("..", "..", "broker", "web", "lib", f)
		if os.Getenv("UPDATE_LIB") == "1" {
			if err := os.WriteFile(embedded, built, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if have, _ := os.ReadFile(embedded); string(have) != string(built) {
			t.Errorf("%s is not the current build of the client: UPDATE_LIB=1 go test ./clients/typescript", embedded)
		}
	}
}

func missing(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CTIBROKER_REQUIRE_NODE") == "1" {
		t.Fatalf("CTIBROKER_REQUIRE_NODE=1: %s", why)
	}
	t.Skipf("SKIPPED LOUDLY: %s; the TypeScript client is not tested (set CTIBROKER_REQUIRE_NODE=1 to make this fail)", why)
}
