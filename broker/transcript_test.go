package broker

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/ctibroker/ctibroker/internal/redistest"
	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/session"
)

// Golden protocol transcripts: testdata/transcripts/*.txt are replayed over
// real WebSockets against a real broker. Format, one step per line (a line
// starting with whitespace continues the previous step's JSON):
//
//	# comment
//	config CTIBROKER_KEY=value     broker configuration (before the first step)
//	connect NAME QUERY             open connection NAME with the query string
//	NAME > JSON                    NAME sends a text frame
//	NAME raw > TEXT                NAME sends TEXT as a text frame
//	NAME binary > TEXT             NAME sends TEXT as a binary frame
//	NAME < JSON                    NAME's next message must match JSON
//	NAME close                     NAME closes its connection
//	NAME closed CODE               the server closes NAME with CODE
//	sim STATUS JSON                POST JSON to the sim control API, expect STATUS
//	sim STATUS /PATH JSON          POST JSON to another path of it (/v1/sim/calls)
//	only redis                     run this transcript only against Redis
//	only remote                    only with the switch in an adapter process
//	redis stop | redis start       kill / restart the Redis server
//	wait ready | wait unready      poll GET /readyz until it answers 200 / 503
//	wait agent ID STATUS           poll GET /v1/agents/ID until its status is STATUS
//	                               (the switch's events are asynchronous)
//
// Every transcript runs against the in-memory store and against a real
// Redis (skipped loudly without redis-server, unless CTIBROKER_REQUIRE_REDIS=1).
//
// In expected JSON, string values may hold placeholders: {{name}} binds a
// variable on first use and must equal it after; "{{*}}" matches anything;
// "{{seq}}" a seq strictly greater than the connection's previous one,
// "{{seq:name}}" the same and binds it; "{{ts}}" a Unix-ms timestamp within a
// minute of now. Sent frames and queries substitute bound variables.
// After the last step every open connection must have nothing more to say.

var placeholderRe = regexp.MustCompile(`\{\{([^}]*)\}\}`)

type step struct {
	line int
	conn string
	verb string
	arg  string
}

func parseTranscript(tb testing.TB, path string) (env []string, steps []step, only string) {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(steps) == 0 {
				tb.Fatalf("%s:%d: continuation without a step", path, n)
			}
			steps[len(steps)-1].arg += "\n" + line
			continue
		}
		fields := strings.SplitN(line, " ", 3)
		switch {
		case fields[0] == "config":
			env = append(env, strings.TrimSpace(strings.TrimPrefix(line, "config")))
		case line == "only redis" || line == "only remote":
			only = strings.TrimPrefix(line, "only ")
		case fields[0] == "redis" || fields[0] == "wait":
			steps = append(steps, step{n, "", fields[0], strings.TrimPrefix(line, fields[0]+" ")})
		case fields[0] == "connect":
			parts := strings.SplitN(line, " ", 3)
			steps = append(steps, step{n, parts[1], "connect", parts[2]})
		case fields[0] == "sim":
			steps = append(steps, step{n, "", "sim", strings.TrimPrefix(line, "sim ")})
		case len(fields) >= 2 && (fields[1] == ">" || fields[1] == "<"):
			steps = append(steps, step{n, fields[0], fields[1], fields[2]})
		case len(fields) == 3 && (fields[1] == "raw" || fields[1] == "binary") && strings.HasPrefix(fields[2], "> "):
			steps = append(steps, step{n, fields[0], fields[1], strings.TrimPrefix(fields[2], "> ")})
		case len(fields) >= 2 && (fields[1] == "close" || fields[1] == "closed"):
			arg := ""
			if len(fields) == 3 {
				arg = fields[2]
			}
			steps = append(steps, step{n, fields[0], fields[1], arg})
		default:
			tb.Fatalf("%s:%d: cannot parse %q", path, n, line)
		}
	}
	return env, steps, only
}

type transcriptRun struct {
	tb      testing.TB
	where   string
	vars    map[string]any
	lastSeq map[string]float64
}

func (r *transcriptRun) subst(s string) string {
	return placeholderRe.ReplaceAllStringFunc(s, func(m string) string {
		name := m[2 : len(m)-2]
		v, ok := r.vars[name]
		if !ok {
			r.tb.Fatalf("%s: variable %q used before it was bound", r.where, name)
		}
		if str, ok := v.(string); ok {
			return str
		}
		b, _ := json.Marshal(v)
		return string(b)
	})
}

// match compares an actual decoded JSON value with an expected one.
func (r *transcriptRun) match(conn, path string, want, got any) error {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want an object, got %v", path, got)
		}
		keys := map[string]bool{}
		for k := range w {
			keys[k] = true
		}
		for k := range g {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			wv, wok := w[k]
			gv, gok := g[k]
			if !wok {
				return fmt.Errorf("%s.%s: unexpected field with value %v", path, k, gv)
			}
			if !gok {
				return fmt.Errorf("%s.%s: missing", path, k)
			}
			if err := r.match(conn, path+"."+k, wv, gv); err != nil {
				return err
			}
		}
		return nil
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Errorf("%s: want %d elements, got %v", path, len(w), got)
		}
		for i := range w {
			if err := r.match(conn, fmt.Sprintf("%s[%d]", path, i), w[i], g[i]); err != nil {
				return err
			}
		}
		return nil
	case string:
		return r.matchString(conn, path, w, got)
	default:
		if !reflect.DeepEqual(want, got) {
			return fmt.Errorf("%s: want %v, got %v", path, want, got)
		}
		return nil
	}
}

func (r *transcriptRun) matchString(conn, path, w string, got any) error {
	if m := placeholderRe.FindStringSubmatch(w); m != nil && m[0] == w {
		name := m[1]
		switch {
		case name == "*":
			return nil
		case name == "ts":
			ts, ok := got.(float64)
			if !ok || time.Since(time.UnixMilli(int64(ts))).Abs() > time.Minute {
				return fmt.Errorf("%s: want a timestamp near now, got %v", path, got)
			}
			return nil
		case name == "seq" || strings.HasPrefix(name, "seq:"):
			seq, ok := got.(float64)
			if !ok || seq <= r.lastSeq[conn] {
				return fmt.Errorf("%s: want a seq above %v, got %v", path, r.lastSeq[conn], got)
			}
			r.lastSeq[conn] = seq
			if v, ok := strings.CutPrefix(name, "seq:"); ok {
				r.vars[v] = strconv.FormatFloat(seq, 'f', -1, 64)
			}
			return nil
		}
		if v, ok := r.vars[name]; ok {
			if !reflect.DeepEqual(v, got) {
				return fmt.Errorf("%s: want %s = %v, got %v", path, name, v, got)
			}
			return nil
		}
		r.vars[name] = got
		return nil
	}
	g, ok := got.(string)
	if !ok {
		return fmt.Errorf("%s: want a string like %q, got %v", path, w, got)
	}
	if !strings.Contains(w, "{{") {
		if g != w {
			return fmt.Errorf("%s: want %q, got %q", path, w, g)
		}
		return nil
	}
	// A string mixing text and placeholders: bound variables must appear
	// verbatim, unbound ones bind to an id (no dots).
	var names []string
	pattern := "^"
	last := 0
	for _, loc := range placeholderRe.FindAllStringSubmatchIndex(w, -1) {
		pattern += regexp.QuoteMeta(w[last:loc[0]])
		name := w[loc[2]:loc[3]]
		if v, ok := r.vars[name]; ok {
			pattern += regexp.QuoteMeta(fmt.Sprint(v))
		} else if name == "*" {
			pattern += ".*"
		} else {
			pattern += `([^.]+)`
			names = append(names, name)
		}
		last = loc[1]
	}
	pattern += regexp.QuoteMeta(w[last:]) + "$"
	m := regexp.MustCompile(pattern).FindStringSubmatch(g)
	if m == nil {
		return fmt.Errorf("%s: want %q, got %q", path, r.subst(placeholderRe.ReplaceAllStringFunc(w, func(p string) string {
			if _, ok := r.vars[p[2:len(p)-2]]; ok {
				return p
			}
			return "{{*}}"
		})), g)
	}
	for i, name := range names {
		r.vars[name] = m[i+1]
	}
	return nil
}

// simStep splits a sim step's argument: STATUS [/PATH] JSON (the path
// defaults to /v1/sim/events).
func simStep(arg string) (status, path, body string) {
	status, body, _ = strings.Cut(arg, " ")
	path = "/v1/sim/events"
	if strings.HasPrefix(body, "/") {
		path, body, _ = strings.Cut(body, " ")
	}
	return status, path, body
}

const barrier = `{"command":"transcript.barrier","target":"none"}`

func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("../testdata/transcripts/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts: %v", err)
	}
	for _, path := range files {
		_, _, only := parseTranscript(t, path)
		for _, backend := range []string{"memory", "redis", "remote"} {
			if only != "" && backend != only {
				continue // by design, not a skip: the summary lists only real skips
			}
			t.Run(strings.TrimSuffix(filepath.Base(path), ".txt")+"/"+backend, func(t *testing.T) {
				t.Parallel()
				runTranscript(t, path, backend)
			})
		}
	}
}

func runTranscript(t *testing.T, path, backend string) {
	env, steps, only := parseTranscript(t, path)
	if only != "" && backend != only {
		t.Skip("transcript runs against " + only + " only")
	}
	var rs *redistest.Server
	if backend == "redis" {
		rs = redistest.Start(t)
		env = append(redisEnv(rs), env...)
	}
	var b *testBroker
	if backend == "remote" {
		// The switch in an adapter process, over the adapter protocol.
		b = startBrokerRemote(t, startSimAdapter(t, env...), env...)
	} else {
		b = startBroker(t, env...)
	}
	r := &transcriptRun{tb: t, vars: map[string]any{}, lastSeq: map[string]float64{}}
	conns := map[string]*client{}
	open := map[string]bool{}
	for _, s := range steps {
		r.where = fmt.Sprintf("%s:%d", filepath.Base(path), s.line)
		c := conns[s.conn]
		if s.conn != "" && s.verb != "connect" && c == nil {
			t.Fatalf("%s: unknown connection %q", r.where, s.conn)
		}
		switch s.verb {
		case "connect":
			conns[s.conn] = mustDial(t, b, r.subst(s.arg))
			open[s.conn] = true
			r.lastSeq[s.conn] = 0
		case ">":
			c.sendRaw(t, websocket.MessageText, []byte(compactJSON(t, r.subst(s.arg))))
		case "raw":
			c.sendRaw(t, websocket.MessageText, []byte(r.subst(s.arg)))
		case "binary":
			c.sendRaw(t, websocket.MessageBinary, []byte(r.subst(s.arg)))
		case "<":
			var want any
			if err := json.Unmarshal([]byte(s.arg), &want); err != nil {
				t.Fatalf("%s: bad expectation: %v", r.where, err)
			}
			got, err := c.nextErr()
			if err != nil {
				t.Fatalf("%s: %v", r.where, err)
			}
			if err := r.match(s.conn, "$", want, got); err != nil {
				gotJSON, _ := json.Marshal(got)
				t.Fatalf("%s: %v\n got message: %s", r.where, err, gotJSON)
			}
		case "close":
			_ = c.ws.Close(websocket.StatusNormalClosure, "bye")
			open[s.conn] = false
		case "closed":
			want, _ := strconv.Atoi(s.arg)
			if got := c.waitClose(t); int(got) != want {
				t.Fatalf("%s: closed with %d, want %s", r.where, got, s.arg)
			}
			open[s.conn] = false
		case "redis":
			if s.arg == "stop" {
				rs.Stop()
			} else {
				rs.StartAgain()
			}
		case "wait":
			if agent, status, ok := strings.Cut(strings.TrimPrefix(s.arg, "agent "), " "); ok && strings.HasPrefix(s.arg, "agent ") {
				eventually(t, agent+" "+status, func() bool {
					_, v := getJSON(t, b.url("/v1/agents/"+agent), nil)
					return v["status"] == status
				})
				continue
			}
			want := http.StatusOK
			if s.arg == "unready" {
				want = http.StatusServiceUnavailable
			}
			eventually(t, "/readyz "+s.arg, func() bool { return b.readyz() == want })
		case "sim":
			status, path, body := simStep(s.arg)
			code, resp := b.simAt(t, r.subst(path), r.subst(body))
			if strconv.Itoa(code) != status {
				t.Fatalf("%s: sim answered %d %v, want %s", r.where, code, resp, status)
			}
			for k, v := range resp {
				r.vars["sim."+k] = v
			}
		}
	}
	// Nothing unexpected may follow: the barrier's reply must come next.
	for name, c := range conns {
		if !open[name] {
			continue
		}
		c.sendRaw(t, websocket.MessageText, []byte(barrier))
		got := c.next(t)
		if got["command"] != "transcript.barrier" {
			gotJSON, _ := json.Marshal(got)
			t.Fatalf("%s: connection %s got an unexpected message after the last step: %s", filepath.Base(path), name, gotJSON)
		}
	}
}

// TestTranscriptsCoverProtocol checks that the transcripts exercise every
// command's success and every failure code.
func TestTranscriptsCoverProtocol(t *testing.T) {
	files, _ := filepath.Glob("../testdata/transcripts/*.txt")
	success := map[string]bool{}
	codes := map[string]bool{}
	events := map[string]bool{}
	for _, path := range files {
		_, steps, _ := parseTranscript(t, path)
		for _, s := range steps {
			if s.verb != "<" {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(s.arg), &m); err != nil {
				t.Fatalf("%s:%d: %v", path, s.line, err)
			}
			if m["result"] == "success" {
				success[m["command"].(string)] = true
			}
			if f, ok := m["failure"].(map[string]any); ok {
				codes[f["code"].(string)] = true
			}
			if name, ok := m["name"].(string); ok {
				events[name] = true
			}
		}
	}
	for _, cmd := range session.Commands() {
		if !success[cmd.Name] {
			t.Errorf("no transcript shows %s succeeding", cmd.Name)
		}
	}
	for _, c := range protocol.FailureCodes() {
		if c.InReplies && !codes[string(c.Code)] {
			t.Errorf("no transcript shows failure code %s", c.Code)
		}
	}
	for _, ev := range protocol.Events() {
		if !events[ev.Name] {
			t.Errorf("no transcript shows event %s", ev.Name)
		}
	}
}

type discardRedisLog struct{}

func (discardRedisLog) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	// go-redis logs reconnect attempts to stderr by default; the outage tests
	// provoke plenty. Assertions, not log lines, tell what happened.
	redis.SetLogger(discardRedisLog{})
	code := m.Run()
	if brokerBin.dir != "" {
		_ = os.RemoveAll(brokerBin.dir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak: goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}
