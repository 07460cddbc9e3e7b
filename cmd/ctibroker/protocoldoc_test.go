package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/session"
)

const protocolDoc = "../../docs/protocol.md"

const generatedMark = "<!-- Generated from the broker's tables by TestProtocolDocument (cmd/ctibroker); UPDATE_PROTOCOL=1 rewrites it. -->\n"

// renderProtocolTables renders the tables part of docs/protocol.md.
func renderProtocolTables() string {
	var b strings.Builder
	b.WriteString(generatedMark)
	b.WriteString("\n## Commands\n\n| command | target | roles | cacheable | what it does |\n| --- | --- | --- | --- | --- |\n")
	for _, c := range session.Commands() {
		fmt.Fprintf(&b, "| `%s` | %s | %s | %v | %s |\n", c.Name, c.Target, strings.Join(c.Roles, ", "), c.Cacheable, c.Doc)
	}
	b.WriteString("\n## Events\n\n| event | kind |\n| --- | --- |\n")
	for _, e := range protocol.Events() {
		kind := "history (seq, replayed)"
		if e.Live {
			kind = "live (no seq, not replayed)"
		}
		fmt.Fprintf(&b, "| `%s` | %s |\n", e.Name, kind)
	}
	b.WriteString("\n## Failure codes\n\n| code | HTTP status | transient | in replies | when |\n| --- | --- | --- | --- | --- |\n")
	for _, f := range protocol.FailureCodes() {
		fmt.Fprintf(&b, "| `%s` | %d | %v | %v | %s |\n", f.Code, f.HTTPStatus, f.Transient, f.InReplies, f.When)
	}
	b.WriteString("\n## Close codes\n\n| code | reconnect | when |\n| --- | --- | --- |\n")
	for _, c := range protocol.CloseCodes() {
		fmt.Fprintf(&b, "| %d | %v | %s |\n", c.Code, c.Reconnect, c.When)
	}
	return b.String()
}

// docs/protocol.md lists every command, event, failure code and close
// code exactly as the broker's tables say.
func TestProtocolDocument(t *testing.T) {
	raw, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	head, _, found := strings.Cut(string(raw), generatedMark)
	if !found {
		t.Fatalf("%s lacks the generated tables' mark", protocolDoc)
	}
	want := head + renderProtocolTables()
	if os.Getenv("UPDATE_PROTOCOL") == "1" {
		if err := os.WriteFile(protocolDoc, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if string(raw) != want {
		t.Fatalf("%s's tables are not the broker's: UPDATE_PROTOCOL=1 go test ./cmd/ctibroker -run TestProtocolDocument", protocolDoc)
	}
}
