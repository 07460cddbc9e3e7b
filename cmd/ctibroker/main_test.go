package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctibroker/ctibroker/channel"
	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/session"
)

func TestFSMCommandMatchesREADME(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"fsm"}, channel.Mermaid()},
		{[]string{"fsm", "--interaction"}, channel.IxMermaid()},
	} {
		var out bytes.Buffer
		if err := run(tc.args, nil, &out); err != nil {
			t.Fatal(err)
		}
		if out.String() != tc.want {
			t.Fatalf("ctibroker %v does not print the machine's diagram", tc.args)
		}
		if !strings.Contains(string(readme), "```mermaid\n"+out.String()+"```") {
			t.Fatalf("README.md does not embed the current `ctibroker %v` output; regenerate it with `make readme-fsm`", tc.args)
		}
	}
}

func TestTokenCommand(t *testing.T) {
	secret := strings.Repeat("k", 32)
	env := []string{"CTIBROKER_AUTH__MODE=jwt", "CTIBROKER_AUTH__JWT__SECRET=" + secret}
	var out bytes.Buffer
	if err := run([]string{"token", "--sub", "alice", "--role", "supervisor", "--teams", "a,b", "--ttl", "1h"}, env, &out); err != nil {
		t.Fatal(err)
	}
	if strings.Count(strings.TrimSpace(out.String()), ".") != 2 {
		t.Fatalf("not a JWT: %q", out.String())
	}
	if err := run([]string{"token", "--sub", "alice"}, nil, &out); err == nil || !strings.Contains(err.Error(), "auth.jwt.secret") {
		t.Fatalf("token without a secret: %v", err)
	}
	if err := run([]string{"token", "--sub", "a.b"}, env, &out); err == nil {
		t.Fatal("token for an invalid agent id")
	}
	// A short secret is refused as serve refuses it, whatever auth.mode.
	if err := run([]string{"token", "--sub", "alice"}, []string{"CTIBROKER_AUTH__JWT__SECRET=short"}, &out); err == nil || !strings.Contains(err.Error(), "32 bytes") {
		t.Fatalf("token with a 5-byte secret: %v", err)
	}
}

func TestCommandErrors(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"dance"}, nil, &out); err == nil {
		t.Fatal("unknown command accepted")
	}
	err := run([]string{"serve"}, []string{"CTIBROKER_SESSION__GRACE=forever"}, &out)
	if err == nil || !strings.Contains(err.Error(), "session.grace") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("bad config: %v", err)
	}
	err = run([]string{"serve", "--listen", "0.0.0.0:1"}, nil, &out)
	if err == nil || !strings.Contains(err.Error(), "auth.mode") {
		t.Fatalf("auth none on a public address: %v", err)
	}
	if err := run([]string{"serve", "extra"}, nil, &out); err == nil {
		t.Fatal("serve took an argument")
	}
	if err := run([]string{"token", "--listen", "127.0.0.1:1"}, nil, &out); err == nil || !strings.Contains(err.Error(), "unknown flag") {
		t.Fatalf("token took serve's flags: %v", err)
	}
}

// Help and version print and succeed: nothing starts a broker or prints a
// diagram when asked for help.
func TestHelpAndVersion(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"Usage:", "serve", "config", "token", "fsm", "commands", "version"}},
		{[]string{"--help"}, []string{"Usage:", "serve"}},
		{[]string{"help"}, []string{"Usage:", "serve"}},
		{[]string{"help", "serve"}, []string{"--listen", "--config", "--auth-mode"}},
		{[]string{"serve", "--help"}, []string{"--listen", "--config"}},
		{[]string{"fsm", "--help"}, []string{"Mermaid"}},
		{[]string{"token", "--help"}, []string{"--sub", "--role", "--teams", "--ttl"}},
		{[]string{"config", "--help"}, []string{"print", "check"}},
		{[]string{"version"}, []string{"ctibroker "}},
		{[]string{"--version"}, []string{"ctibroker "}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			if err := run(tc.args, nil, &out); err != nil {
				t.Fatalf("exit with %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if strings.Contains(out.String(), "stateDiagram") {
				t.Error("help printed the state diagram")
			}
		})
	}
}

func TestConfigPrintMasksSecrets(t *testing.T) {
	secret := strings.Repeat("s", 40)
	env := []string{"CTIBROKER_AUTH__MODE=jwt", "CTIBROKER_AUTH__JWT__SECRET=" + secret,
		"CTIBROKER_REDIS__URL=redis://app:hunter2hunter2@127.0.0.1:6379/0"}
	var out bytes.Buffer
	if err := run([]string{"config", "print", "--listen", "127.0.0.1:9999"}, env, &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, leak := range []string{secret, "hunter2"} {
		if strings.Contains(got, leak) {
			t.Errorf("config print shows the secret %q:\n%s", leak, got)
		}
	}
	for _, w := range []string{"127.0.0.1:9999", "redis://app:", "mode: jwt", "grace: 2m"} {
		if !strings.Contains(got, w) {
			t.Errorf("config print lacks %q:\n%s", w, got)
		}
	}
	if err := run([]string{"config", "print"}, []string{"CTIBROKER_SESSION__GRACE=120"}, &out); err == nil || !strings.Contains(err.Error(), "session.grace") {
		t.Fatalf("config print of an invalid configuration: %v", err)
	}
}

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte("session:\n  grace: 90s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("session:\n  grace: 90\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run([]string{"config", "check", good}, nil, &out); err != nil || !strings.Contains(out.String(), "ok") {
		t.Fatalf("good file: %q %v", out.String(), err)
	}
	if err := run([]string{"config", "check", bad}, nil, &out); err == nil || !strings.Contains(err.Error(), "session.grace") {
		t.Fatalf("bad file: %v", err)
	}
	if err := run([]string{"config", "check", filepath.Join(dir, "missing.yaml")}, nil, &out); err == nil {
		t.Fatal("missing file accepted")
	}
	if err := run([]string{"config", "check"}, nil, &out); err == nil {
		t.Fatal("config check without a file accepted")
	}
}

func TestCommandsListsTheTable(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"commands"}, nil, &out); err != nil {
		t.Fatal(err)
	}
	for _, c := range session.Commands() {
		if !strings.Contains(out.String(), c.Name) {
			t.Errorf("ctibroker commands lacks %s", c.Name)
		}
	}
}

// The README's command tables list every command of the command table, with
// the target it takes.
func TestREADMEListsEveryCommand(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range session.Commands() {
		if c.Doc == "" || len(c.Roles) == 0 {
			t.Errorf("%s: no doc or no roles in the command table", c.Name)
		}
		if !strings.Contains(string(readme), "| `"+c.Name+"` |") {
			t.Errorf("README.md has no table row for %s", c.Name)
		}
	}
}

func TestREADMEListsCodeTables(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	yesNo := map[bool]string{true: "yes", false: "no"}
	for _, c := range protocol.FailureCodes() {
		if row := fmt.Sprintf("| `%s` | %d | %s | %s |", c.Code, c.HTTPStatus, yesNo[c.Transient], c.When); !strings.Contains(string(readme), row) {
			t.Errorf("README.md lacks the row %q", row)
		}
	}
	for _, c := range protocol.CloseCodes() {
		if row := fmt.Sprintf("| %d | %s | %s |", c.Code, yesNo[c.Reconnect], c.When); !strings.Contains(string(readme), row) {
			t.Errorf("README.md lacks the row %q", row)
		}
	}
}
