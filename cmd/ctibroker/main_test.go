package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/ctibroker/ctibroker/channel"
	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/session"
)

func TestFSMCommandMatchesREADME(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"fsm"}, nil, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != channel.Mermaid() {
		t.Fatal("ctibroker fsm does not print the machine's diagram")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```mermaid\n"+out.String()+"```") {
		t.Fatal("README.md does not embed the current `ctibroker fsm` output; regenerate it with `make readme-fsm`")
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
	err = run([]string{"--listen", "0.0.0.0:1"}, nil, &out)
	if err == nil || !strings.Contains(err.Error(), "auth.mode") {
		t.Fatalf("auth none on a public address: %v", err)
	}
	out.Reset()
	if err := run([]string{"version"}, nil, &out); err != nil || !strings.HasPrefix(out.String(), "ctibroker ") {
		t.Fatalf("version: %q %v", out.String(), err)
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
