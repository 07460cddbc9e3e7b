package broker

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestRecordTranscript drafts a golden transcript: with
// CTIBROKER_RECORD=<draft> it replays the draft's actions (connect, >, sim;
// its < lines are ignored) against a fresh in-memory broker and prints the
// transcript with every message received after each action, timestamps,
// seqs, session and interaction ids as placeholders. A person reviews the
// draft before it becomes testdata: it records what the broker does, not
// what it should do.
func TestRecordTranscript(t *testing.T) {
	path := os.Getenv("CTIBROKER_RECORD")
	if path == "" {
		t.Skip("set CTIBROKER_RECORD to a draft transcript to record it")
	}
	env, steps, only := parseTranscript(t, path)
	var b *testBroker
	if only == "remote" {
		b = startBrokerRemote(t, startSimAdapter(t, env...), env...)
	} else {
		b = startBroker(t, env...)
	}
	r := &transcriptRun{tb: t, vars: map[string]any{}, lastSeq: map[string]float64{}}
	conns := map[string]*client{}
	var names []string
	ids := map[string]string{} // actual id -> placeholder
	lines, _ := os.ReadFile(path)
	src := strings.Split(string(lines), "\n")
	var out strings.Builder
	defer func() { fmt.Print(out.String()) }() // what was recorded, also when a step fails
	for _, l := range src {
		if strings.HasPrefix(l, "config ") || strings.HasPrefix(l, "only ") {
			out.WriteString(l + "\n")
		}
	}
	simID := regexp.MustCompile(`sim-[0-9]+`)
	nix := 0
	placeholder := func(s string) string {
		// Longest ids first: a session id may contain another's digits.
		keys := make([]string, 0, len(ids))
		for k := range ids {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return len(keys[i]) > len(keys[j]) })
		for _, k := range keys {
			s = strings.ReplaceAll(s, k, "{{"+ids[k]+"}}")
		}
		return simID.ReplaceAllStringFunc(s, func(id string) string {
			if _, ok := ids[id]; !ok {
				nix++
				ids[id] = fmt.Sprintf("ix%d", nix)
				r.vars[ids[id]] = id
			}
			return "{{" + ids[id] + "}}"
		})
	}
	var norm func(key string, v any, depth int) any
	norm = func(key string, v any, depth int) any {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				x[k] = norm(k, e, depth+1)
			}
			return x
		case []any:
			for i, e := range x {
				x[i] = norm(key, e, depth+1)
			}
			return x
		case float64:
			switch key {
			case "timestamp", "since", "created", "stateSince", "start", "end", "ended", "completed", "dateCreated", "dateCompleted":
				return "{{ts}}"
			case "seq":
				if depth > 1 {
					return "{{*}}" // a seq in the data: the message's own is checked
				}
				return "{{seq}}"
			case "queuedMs", "talkMs", "holdMs", "handleMs":
				return "{{*}}"
			}
		case string:
			if key == "day" {
				return "{{*}}" // the date of the run
			}
			return placeholder(x)
		}
		return v
	}
	wait := 300 * time.Millisecond // CTIBROKER_RECORD_WAIT: longer, for drafts with timers
	if d, err := time.ParseDuration(os.Getenv("CTIBROKER_RECORD_WAIT")); err == nil {
		wait = d
	}
	drain := func() {
		time.Sleep(wait)
		for _, name := range names {
			for {
				var data []byte
				select {
				case data = <-conns[name].msgs:
				default:
				}
				if data == nil {
					break
				}
				var m map[string]any
				_ = json.Unmarshal(data, &m)
				if m["name"] == "session.initialized" {
					if target, _ := m["target"].(string); target != "" && ids[target] == "" {
						v := "sid"
						if name != "a" {
							v = name + "sid"
						}
						ids[target], r.vars[v] = v, target
					}
				}
				enc, _ := json.Marshal(norm("", m, 0))
				out.WriteString(name + " < " + strings.ReplaceAll(string(enc), `\u0026`, "&") + "\n")
			}
		}
	}
	for _, s := range steps {
		for i := s.line - 2; i >= 0 && strings.HasPrefix(src[i], "#"); i-- {
			if i == 0 || !strings.HasPrefix(src[i-1], "#") {
				for j := i; j < s.line-1; j++ {
					out.WriteString("\n" + src[j])
				}
				out.WriteString("\n")
				break
			}
		}
		switch s.verb {
		case "connect":
			conns[s.conn] = mustDial(t, b, r.subst(s.arg))
			names = append(names, s.conn)
			out.WriteString("connect " + s.conn + " " + s.arg + "\n")
		case ">":
			conns[s.conn].sendRaw(t, websocket.MessageText, []byte(compactJSON(t, r.subst(s.arg))))
			out.WriteString(s.conn + " > " + s.arg + "\n")
		case "sim":
			status, path, body := simStep(s.arg)
			code, resp := b.simAt(t, r.subst(path), r.subst(body))
			if strconv.Itoa(code) != status {
				out.WriteString(fmt.Sprintf("# RECORDER: sim answered %d %v, the draft says %s\n", code, resp, status))
			}
			for k, v := range resp {
				if id, ok := v.(string); ok && simID.MatchString(id) {
					placeholder(id)
				}
				r.vars["sim."+k] = v
			}
			out.WriteString("sim " + s.arg + "\n")
		case "close":
			drain()
			_ = conns[s.conn].ws.Close(websocket.StatusNormalClosure, "bye")
			names = slices.DeleteFunc(names, func(n string) bool { return n == s.conn })
			out.WriteString(s.conn + " close\n")
			continue
		case "closed":
			drain()
			out.WriteString(fmt.Sprintf("%s closed %d\n", s.conn, conns[s.conn].waitClose(t)))
			names = slices.DeleteFunc(names, func(n string) bool { return n == s.conn })
			continue
		default:
			continue
		}
		drain()
	}
}
