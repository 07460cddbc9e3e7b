package broker

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ctibroker/ctibroker/history"
	"github.com/ctibroker/ctibroker/internal/redistest"
	"github.com/ctibroker/ctibroker/protocol"
)

func getJSON(tb testing.TB, url string, header http.Header) (int, map[string]any) {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		tb.Fatalf("GET %s: %d %q is not a JSON object", url, resp.StatusCode, body)
	}
	checkResponse(tb, req, resp, body) // every REST answer a test reads is checked against docs/openapi.yaml
	return resp.StatusCode, m
}

func num(v any) int64 { f, _ := v.(float64); return int64(f) }

// agentDay runs a short agent day: login, ready, lunch, a call (answered),
// after-call work, ready. It returns the session id.
func agentDay(t *testing.T, b *testBroker, agent, teams string) (*client, string) {
	t.Helper()
	return agentDayOn(t, b, agent+"&teams="+teams)
}

func agentDayOn(t *testing.T, b *testBroker, agentQuery string) (*client, string) {
	t.Helper()
	agent, _, _ := strings.Cut(agentQuery, "&")
	c, sid := attach(t, b, "agent="+agentQuery)
	steps := []struct {
		cmd, target string
		data        any
	}{
		{protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "phone", "name": agent + "-ext", "type": "TELEPHONY"}}},
		{protocol.CmdChannelActivate, sid + ".phone", map[string]any{"channeloptions": map[string]string{"queue": "sales"}}},
		{protocol.CmdChannelReady, sid + ".phone", nil},
		{protocol.CmdChannelNotReady, sid + ".phone", map[string]string{"reasoncode": "lunch"}},
		{protocol.CmdChannelReady, sid + ".phone", nil},
	}
	for _, st := range steps {
		if r := c.request(t, st.cmd, st.target, st.data); r["result"] != "success" {
			t.Fatalf("%s: %v", st.cmd, r)
		}
		time.Sleep(20 * time.Millisecond) // distinct interval lengths
	}
	for _, ev := range []string{`"event":"interaction.start","interaction":"call-1"`, `"event":"interaction.answer","interaction":"call-1"`, `"event":"interaction.end","interaction":"call-1"`} {
		if code, body := b.sim(t, fmt.Sprintf(`{%s,"agent":%q,"channel":"phone"}`, ev, agent)); code != 202 {
			t.Fatalf("sim %s: %d %v", ev, code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.until(t, func(m map[string]any) bool {
		return m["name"] == protocol.EvChannelInfoChanged && strings.Contains(fmt.Sprint(m["data"]), "after_call_work")
	})
	return c, sid
}

func TestRESTAgentsSessionsHistoryReports(t *testing.T) {
	for _, backend := range []string{"memory", "redis"} {
		t.Run(backend, func(t *testing.T) {
			env := []string{"CTIBROKER_ACW__TELEPHONY__AUTO=true", "CTIBROKER_ACW__TELEPHONY__TIMEOUT=0s", "CTIBROKER_ACW__TELEPHONY__THEN=ready"}
			if backend == "redis" {
				env = append(env, redisEnv(redistest.Start(t))...)
			}
			b := startBroker(t, env...)
			_, sid := agentDay(t, b, "alice", "sales")
			bob, bsid := attach(t, b, "agent=bob&teams=support")
			bob.request(t, protocol.CmdAddChannel, bsid, map[string]any{"channel": map[string]string{"id": "mail", "name": "bob@x", "type": "EMAIL"}})

			eventually(t, "the board to see both agents", func() bool {
				_, body := getJSON(t, b.url("/v1/agents"), nil)
				return num(body["total"]) == 2
			})
			// Filters, sort, paging.
			code, body := getJSON(t, b.url("/v1/agents?team=sales&status=after_call_work"), nil)
			if code != 200 || num(body["total"]) != 1 || body["list"].([]any)[0].(map[string]any)["agentId"] != "alice" {
				t.Fatalf("filtered agents: %d %v", code, body)
			}
			_, body = getJSON(t, b.url("/v1/agents?sort=-agentId&pageSize=1&pageNum=2"), nil)
			if l := body["list"].([]any); len(l) != 1 || l[0].(map[string]any)["agentId"] != "alice" || num(body["pageNum"]) != 2 {
				t.Fatalf("sorted page: %v", body)
			}
			_, body = getJSON(t, b.url("/v1/agents?channelType=EMAIL"), nil)
			if num(body["total"]) != 1 {
				t.Fatalf("channel type filter: %v", body)
			}
			if code, _ := getJSON(t, b.url("/v1/agents/nobody"), nil); code != 404 {
				t.Fatalf("unknown agent: %d", code)
			}

			// The session: timeline, totals, interactions with ring/talk/ACW.
			code, body = getJSON(t, b.url("/v1/sessions/"+sid), nil)
			if code != 200 || body["agentId"] != "alice" || body["live"] != true || num(body["login"]) == 0 {
				t.Fatalf("session: %d %v", code, body)
			}
			its := body["interactions"].([]any)
			if len(its) != 1 {
				t.Fatalf("interactions: %v", its)
			}
			it := its[0].(map[string]any)
			if num(it["ringMs"]) < 15 || num(it["talkMs"]) < 15 || it["inProgress"] != false || it["interactionId"] != "call-1" {
				t.Fatalf("interaction durations: %v", it)
			}
			totals := body["totals"].(map[string]any)
			if num(totals["statusMs"].(map[string]any)["ready"]) < 15 || num(totals["notReadyReasonMs"].(map[string]any)["lunch"]) < 15 {
				t.Fatalf("totals: %v", totals)
			}
			if _, ok := body["perChannel"].(map[string]any)["phone"]; !ok {
				t.Fatalf("per channel totals: %v", body["perChannel"])
			}

			// The agent's status log: one entry per interval, the last open.
			code, body = getJSON(t, b.url("/v1/agents/alice/history?pageSize=100"), nil)
			list := body["list"].([]any)
			if code != 200 || len(list) < 7 {
				t.Fatalf("history: %d %v", code, body)
			}
			last := list[len(list)-1].(map[string]any)
			if last["open"] != true || last["status"] != "after_call_work" || num(last["durationMs"]) < 0 {
				t.Fatalf("last interval: %v", last)
			}
			var lunch bool
			for _, e := range list {
				if e.(map[string]any)["reasonCode"] == "lunch" {
					lunch = true
				}
			}
			if !lunch {
				t.Fatal("the lunch interval is missing from the history")
			}

			// The report: one agent-interval per hour.
			from := time.Now().Truncate(time.Hour)
			code, body = getJSON(t, b.url(fmt.Sprintf("/v1/reports/agents?from=%d&to=%d&interval=30m&teams=sales", from.UnixMilli(), from.Add(time.Hour).UnixMilli())), nil)
			if code != 200 || num(body["total"]) != 1 {
				t.Fatalf("report: %d %v", code, body)
			}
			rep := body["list"].([]any)[0].(map[string]any)
			tot := rep["total"].(map[string]any)
			if len(rep["periods"].([]any)) != 2 || num(tot["interactions"]) != 1 || num(tot["loginMs"]) < 100 || num(tot["readyMs"]) < 15 {
				t.Fatalf("report for alice: %v", rep)
			}

			// My sessions, as the agent.
			code, body = getJSON(t, b.url("/v1/sessions/my?agent=alice"), nil)
			if code != 200 || num(body["total"]) != 1 || body["list"].([]any)[0].(map[string]any)["sessionId"] != sid {
				t.Fatalf("my sessions: %d %v", code, body)
			}

			// Bad parameters get 400 naming the parameter.
			for q, param := range map[string]string{
				"/v1/agents?pageSize=0":                                  "pageSize",
				"/v1/agents?pageNum=x":                                   "pageNum",
				"/v1/agents?sort=mood":                                   "sort",
				"/v1/agents/alice/history?from=yesterday":                "from",
				"/v1/reports/agents?interval=7m":                         "interval",
				"/v1/reports/agents?from=1700000002000&to=1700000001000": "to",
			} {
				code, body := getJSON(t, b.url(q), nil)
				msg := fmt.Sprint(body["error"])
				if code != 400 || !strings.Contains(msg, "parameter "+param) || !strings.Contains(msg, "INVALID_REQUEST") {
					t.Errorf("GET %s: %d %v, want 400 naming %s", q, code, body, param)
				}
			}
		})
	}
}

func TestRESTRoles(t *testing.T) {
	b := startBroker(t, "CTIBROKER_AUTH__MODE=jwt", "CTIBROKER_AUTH__JWT__SECRET="+testSecret)
	tok := func(sub, role string, teams ...string) http.Header {
		t, _ := MintToken(testSecret, sub, role, teams, time.Hour, time.Now())
		return http.Header{"Authorization": {"Bearer " + t}}
	}
	for _, a := range []struct{ id, team string }{{"alice", "sales"}, {"bob", "support"}} {
		tk, _ := MintToken(testSecret, a.id, RoleAgent, []string{a.team}, time.Hour, time.Now())
		attach(t, b, "access_token="+tk)
	}
	eventually(t, "two agents", func() bool {
		_, body := getJSON(t, b.url("/v1/agents"), tok("root", RoleAdmin))
		return num(body["total"]) == 2
	})
	tests := []struct {
		who    http.Header
		path   string
		status int
		total  int64
	}{
		{tok("root", RoleAdmin), "/v1/agents", 200, 2},
		{tok("sv", RoleSupervisor, "sales"), "/v1/agents", 200, 1},
		{tok("sv", RoleSupervisor, "sales"), "/v1/agents/bob", 404, -1},
		{tok("sv", RoleSupervisor, "sales"), "/v1/agents/alice", 200, -1},
		{tok("alice", RoleAgent, "sales"), "/v1/agents", 200, 1},
		{tok("alice", RoleAgent, "sales"), "/v1/agents/bob", 404, -1},
		{tok("alice", RoleAgent, "sales"), "/v1/sessions/my", 200, 1},
		{tok("sv", RoleSupervisor, "sales"), "/v1/sessions/my", 403, -1},
		{nil, "/v1/agents", 401, -1},
	}
	for _, tt := range tests {
		code, body := getJSON(t, b.url(tt.path), tt.who)
		if code != tt.status || (tt.total >= 0 && num(body["total"]) != tt.total) {
			t.Errorf("GET %s: %d %v, want %d (total %d)", tt.path, code, body, tt.status, tt.total)
		}
	}
}

// FuzzRESTQuery feeds arbitrary query strings to the REST parsers: they
// never panic, and what they accept is within the documented bounds.
func FuzzRESTQuery(f *testing.F) {
	for _, s := range []string{
		"from=9223199276854775807&to=9223372036854775807&interval=1d", "pageNum=9223372036854775807",
		"from=2000-01-01T00:00:00Z&to=2099-12-31T00:00:00Z&interval=15m", "pageSize=0", "from=&to=",
		"team=a,b,,c&status=ready", "interval=1h&from=1700000000000", "from=-1&to=%ff",
	} {
		f.Add(s)
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		if num, size, err := paging(q); err == nil {
			if num < 1 || num > protocol.MaxPageNum || size < 1 || size > protocol.MaxPageSize {
				t.Fatalf("paging(%q) = %d, %d", raw, num, size)
			}
			_ = paginate(make([]int, 3), num, size)
		}
		if from, to, step, err := reportWindow(q, now); err == nil {
			if from.UnixMilli() < protocol.MinTimeMs || to.UnixMilli() >= protocol.MaxTimeMs || !to.After(from) {
				t.Fatalf("reportWindow(%q) = %v, %v", raw, from, to)
			}
			periods := history.Report("a", nil, nil, from.UnixMilli(), to.UnixMilli(), step.Milliseconds())
			if len(periods) > protocol.MaxReportBuckets {
				t.Fatalf("reportWindow(%q) allowed %d periods", raw, len(periods))
			}
		}
		for _, v := range listParam(q, "team") {
			if v == "" || strings.Contains(v, ",") {
				t.Fatalf("listParam(%q) = %q", raw, v)
			}
		}
	})
}

// Talk records: one per agent who handled an interaction, written when its
// wrap-up completed, with the time in each phase; filtered, paged, and
// only the agents the caller may see.
func TestRESTTalkRecords(t *testing.T) {
	for _, backend := range []string{"memory", "redis"} {
		t.Run(backend, func(t *testing.T) {
			var env []string
			if backend == "redis" {
				env = redisEnv(redistest.Start(t))
			}
			b := startBroker(t, env...)
			a, sid := attach(t, b, "agent=alice&teams=sales")
			a.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "1001", "type": "TELEPHONY"}})
			a.request(t, protocol.CmdChannelActivate, sid+".p", map[string]any{"channeloptions": map[string]any{"queue": "sales"}})
			a.request(t, protocol.CmdChannelReady, sid+".p", nil)
			code, resp := b.simAt(t, "/v1/sim/calls", `{"queue":"sales","from":"+15550109"}`)
			if code != 202 {
				t.Fatalf("sim call: %d %v", code, resp)
			}
			ix := resp["interaction"].(string)
			target := sid + ".p." + ix
			eventually(t, "the offer", func() bool {
				return a.request(t, protocol.CmdInteractionAccept, target, nil)["result"] == "success"
			})
			time.Sleep(20 * time.Millisecond) // some talk time
			if r := a.request(t, protocol.CmdInteractionHold, target, nil); r["result"] != "success" {
				t.Fatalf("hold: %v", r)
			}
			// The agent's live session shows the call as a call session.
			_, my := getJSON(t, b.url("/v1/sessions/my?agent=alice"), nil)
			calls := my["list"].([]any)[0].(map[string]any)["calls"].([]any)
			call := calls[0].(map[string]any)
			members := call["members"].([]any)
			if len(calls) != 1 || call["interactionId"] != ix || call["callState"] != "Hold" || call["queueState"] != "Hold" ||
				call["direction"] != "inbound" || call["fromAddress"] != "+15550109" || call["toAddress"] != "sales" ||
				len(members) != 2 || members[0].(map[string]any)["role"] != "caller" || members[0].(map[string]any)["callState"] != "Hold" || num(call["dateCreated"]) == 0 {
				t.Fatalf("GET /v1/sessions/my calls: %v", calls)
			}
			time.Sleep(20 * time.Millisecond)
			if r := a.request(t, protocol.CmdInteractionRelease, target, nil); r["result"] != "success" {
				t.Fatalf("release: %v", r)
			}
			var body map[string]any
			eventually(t, "the talk record", func() bool {
				code, body = getJSON(t, b.url("/v1/interactions?agent=alice&direction=inbound&queue=sales"), nil)
				return code == 200 && num(body["total"]) == 1
			})
			rec := body["list"].([]any)[0].(map[string]any)
			if rec["agentId"] != "alice" || rec["interaction"].(map[string]any)["id"] != ix || num(rec["activeMs"]) < 15 || num(rec["heldMs"]) < 15 ||
				num(rec["handleMs"]) < num(rec["activeMs"])+num(rec["heldMs"]) {
				t.Fatalf("talk record: %v", rec)
			}
			for _, tt := range []struct {
				url  string
				want int64
			}{
				{"/v1/interactions?direction=outbound", 0},
				{"/v1/interactions?queue=support", 0},
				{"/v1/interactions?agent=bob", 0},
				{"/v1/interactions", 1},
			} {
				if _, body := getJSON(t, b.url(tt.url), nil); num(body["total"]) != tt.want {
					t.Errorf("%s: %v, want %v records", tt.url, body, tt.want)
				}
			}
			// The supervisors' view counts it in the agent's day.
			eventually(t, "today's counters", func() bool {
				_, v := getJSON(t, b.url("/v1/agents/alice"), nil)
				today, _ := v["today"].(map[string]any)
				return today != nil && num(today["handled"]) == 1 && num(today["inboundAnswered"]) == 1 && num(today["holdMs"]) >= 15
			})
			// Reports count it among the agent's interaction statistics.
			_, body = getJSON(t, b.url("/v1/reports/agents?interval=1d"), nil)
			stats := body["list"].([]any)[0].(map[string]any)["interactionStats"].(map[string]any)
			if num(stats["handled"]) != 1 || num(stats["inboundAnswered"]) != 1 || num(stats["inboundMissed"]) != 0 || num(stats["avgHoldMs"]) < 15 {
				t.Fatalf("report interaction stats: %v", stats)
			}
			if code, body := getJSON(t, b.url("/v1/interactions/"+ix), nil); code != 200 || len(body["records"].([]any)) != 1 {
				t.Fatalf("GET /v1/interactions/%s: %d %v", ix, code, body)
			}
			if code, _ := getJSON(t, b.url("/v1/interactions/nosuch"), nil); code != 404 {
				t.Fatalf("unknown interaction: %d", code)
			}
			if code, _ := getJSON(t, b.url("/v1/interactions?direction=sideways"), nil); code != 400 {
				t.Fatalf("bad direction: %d", code)
			}
		})
	}
}

// Queue figures follow a scripted scenario exactly: three calls into sales,
// one answered, one abandoned while queued, one still waiting; two agents
// staffed, one busy, one not ready.
func TestRESTQueues(t *testing.T) {
	b := startBroker(t)
	alice, asid := attach(t, b, "agent=alice")
	bob, bsid := attach(t, b, "agent=bob")
	for _, c := range []struct {
		cl  *client
		sid string
	}{{alice, asid}, {bob, bsid}} {
		c.cl.request(t, protocol.CmdAddChannel, c.sid, map[string]any{"channel": map[string]string{"id": "p", "name": "n-" + c.sid, "type": "TELEPHONY"}})
		c.cl.request(t, protocol.CmdChannelActivate, c.sid+".p", map[string]any{"channeloptions": map[string]any{"queue": "sales"}})
	}
	alice.request(t, protocol.CmdChannelReady, asid+".p", nil)
	call := func() string {
		code, resp := b.simAt(t, "/v1/sim/calls", `{"queue":"sales","from":"1"}`)
		if code != 202 {
			t.Fatalf("sim call: %d %v", code, resp)
		}
		return resp["interaction"].(string)
	}
	first := call()
	eventually(t, "the offer", func() bool {
		return alice.request(t, protocol.CmdInteractionAccept, asid+".p."+first, nil)["result"] == "success"
	})
	second, _ := call(), call()
	if code, _ := b.simAt(t, "/v1/sim/interactions/"+second, `{"event":"abandon"}`); code != 202 {
		t.Fatalf("abandon: %d", code)
	}
	var q map[string]any
	// The sim takes calls and their events asynchronously: wait for the
	// last of them (the abandon) to show, then check every figure.
	eventually(t, "the figures", func() bool {
		var code int
		code, q = getJSON(t, b.url("/v1/queues/sales"), nil)
		return code == 200 && num(q["busy"]) == 1 && num(q["offered"]) == 3 && num(q["abandoned"]) == 1
	})
	for field, want := range map[string]int64{"offered": 3, "answered": 1, "abandoned": 1, "waiting": 1, "staffed": 2, "busy": 1, "notReady": 1, "ready": 0, "serviceLevelSec": 20, "serviceLevelPct": 100} {
		if got := num(q[field]); got != want {
			t.Errorf("%s = %d, want %d (%v)", field, got, want, q)
		}
	}
	if num(q["longestWaitStart"]) == 0 {
		t.Errorf("longestWaitStart missing: %v", q)
	}
	if _, body := getJSON(t, b.url("/v1/queues"), nil); num(body["total"]) != 2 {
		t.Errorf("GET /v1/queues: %v, want sales and support", body)
	}
	if code, _ := getJSON(t, b.url("/v1/queues/nosuch"), nil); code != 404 {
		t.Errorf("unknown queue: %d", code)
	}
	if code, _ := getJSON(t, b.url("/v1/queues?agent=alice"), nil); code != 403 {
		t.Errorf("an agent reading queues: %d, want 403", code)
	}
}
