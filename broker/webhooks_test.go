package broker

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/ctibroker/ctibroker/internal/redistest"
	"github.com/ctibroker/ctibroker/internal/testutil"
	"github.com/ctibroker/ctibroker/protocol"
	"github.com/ctibroker/ctibroker/webhook"
)

const (
	testCompanyID = "acme-company"
	testAppKey    = "legacy-app-key-0123456789"
)

// receiver is a back office's webhook endpoint: a real HTTP server that
// verifies every delivery's signature (Standard Webhooks, or the legacy
// MD5 scheme), and can fail, be slow, answer 410 or be down.
type receiver struct {
	t      testing.TB
	secret string // hmac-sha256; empty: legacy-md5
	addr   string
	srv    *http.Server
	done   chan struct{} // closed by stop: a slow answer ends

	mu        sync.Mutex
	got       []protocol.WebhookMessage
	attempts  int
	failFirst int           // answer 500 to this many attempts first
	status    int           // answer this instead of 200 (0: 200)
	delay     time.Duration // before answering
	badSig    []string      // deliveries whose signature did not verify
}

func startReceiver(t testing.TB, hmac bool) *receiver {
	t.Helper()
	r := &receiver{t: t, addr: "127.0.0.1:0"}
	if hmac {
		r.secret = webhook.NewSecret()
	}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *receiver) url() string { return "http://" + r.addr + "/hook" }

func (r *receiver) start() {
	r.t.Helper()
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.mu.Lock()
	r.done = make(chan struct{})
	r.mu.Unlock()
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
}

// stop takes the endpoint down (connections refused until start).
func (r *receiver) stop() {
	if r.srv != nil {
		r.mu.Lock()
		close(r.done)
		r.mu.Unlock()
		_ = r.srv.Close()
		r.srv = nil
	}
}

func (r *receiver) verify(body []byte, h http.Header) error {
	if r.secret != "" {
		wh, err := standardwebhooks.NewWebhook(r.secret)
		if err != nil {
			return err
		}
		return wh.Verify(body, h)
	}
	sum := md5.Sum([]byte(testCompanyID + h.Get("X-Log-TimeStamp") + h.Get("X-Log-RandomCode") + testAppKey))
	if h.Get("X-Log-Sign") != hex.EncodeToString(sum[:]) || h.Get("X-Log-RandomCode") == "" {
		return errors.New("X-Log-Sign does not match")
	}
	return nil
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	r.mu.Lock()
	r.attempts++
	delay, fail, status := r.delay, r.failFirst > 0, r.status
	if fail {
		r.failFirst--
	}
	done := r.done
	r.mu.Unlock()
	select {
	case <-time.After(delay):
	case <-done:
		return
	}
	if err := r.verify(body, req.Header); err != nil {
		r.mu.Lock()
		r.badSig = append(r.badSig, err.Error())
		r.mu.Unlock()
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	if fail {
		http.Error(w, "try again", http.StatusInternalServerError)
		return
	}
	if status != 0 {
		w.WriteHeader(status)
		return
	}
	var m protocol.WebhookMessage
	if err := json.Unmarshal(body, &m); err != nil {
		http.Error(w, "not a message", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.got = append(r.got, m)
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// messages returns the distinct messages received (first delivery of each
// id), in arrival order.
func (r *receiver) messages() []protocol.WebhookMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	var out []protocol.WebhookMessage
	for _, m := range r.got {
		if !seen[m.ID] {
			seen[m.ID] = true
			out = append(out, m)
		}
	}
	return out
}

// statuses returns, per agent, the statuses its agent.status messages
// went to, in arrival order.
func statuses(msgs []protocol.WebhookMessage) map[string][]string {
	out := map[string][]string{}
	for _, m := range msgs {
		if m.Type != "agent.status" {
			continue
		}
		var d struct {
			Current struct{ Status, State string }
		}
		_ = json.Unmarshal(m.Data, &d)
		out[m.AgentID] = append(out[m.AgentID], d.Current.State+"/"+d.Current.Status)
	}
	return out
}

func webhookYAML(eps ...string) string {
	return "webhooks:\n  retrymin: 20ms\n  retrymax: 200ms\n  leasettl: 1s\n  endpoints:\n" + strings.Join(eps, "")
}

func hmacEndpoint(name string, r *receiver, events string) string {
	return fmt.Sprintf("    - {name: %s, url: %q, secret: %q, events: [%s]}\n", name, r.url(), r.secret, events)
}

func md5Endpoint(name string, r *receiver, events, teams string) string {
	return fmt.Sprintf("    - {name: %s, url: %q, secret: %q, signature: legacy-md5, companyid: %s, events: [%s], teams: [%s]}\n",
		name, r.url(), testAppKey, testCompanyID, events, teams)
}

// activatePhone logs the agent's phone in (into queue, if set); its
// agent.status message says ACTIVE/not_ready.
func activatePhone(t testing.TB, c *client, sid, queue string) {
	t.Helper()
	var data any
	if queue != "" {
		data = map[string]any{"channeloptions": map[string]any{"queue": queue}}
	}
	if r := c.request(t, protocol.CmdChannelActivate, sid+".p", data); r["result"] != "success" {
		t.Fatalf("activate: %v", r)
	}
}

// toggles drives an agent's active channel through n status changes and
// returns what its agent.status messages must say, in order.
func toggles(t testing.TB, c *client, sid string, n int) []string {
	t.Helper()
	var want []string
	for i := range n {
		cmd, data := toggle(i)
		if r := c.request(t, cmd, sid+".p", data); r["result"] != "success" {
			t.Fatalf("toggle %d: %v", i, r)
		}
		want = append(want, map[bool]string{true: "ACTIVE/ready", false: "ACTIVE/not_ready"}[i%2 == 0])
	}
	return want
}

func addPhone(t testing.TB, c *client, sid string) {
	t.Helper()
	c.request(t, protocol.CmdAddChannel, sid, map[string]any{"channel": map[string]string{"id": "p", "name": "n-" + sid[:6], "type": "TELEPHONY"}})
}

// Both signature schemes verify at a real receiver; every status change
// arrives once per endpoint, in order per agent; an endpoint's event and
// team filters hold; a call's life arrives as interaction messages and a
// talk record.
func TestWebhooksDeliverSignedInOrder(t *testing.T) {
	hm, legacy := startReceiver(t, true), startReceiver(t, false)
	b := startBrokerYAML(t, webhookYAML(hmacEndpoint("crm", hm, `"*"`), md5Endpoint("wfm", legacy, `"agent.status"`, "sales")))
	alice, asid := attach(t, b, "agent=alice&teams=sales")
	bob, bsid := attach(t, b, "agent=bob&teams=support")
	addPhone(t, alice, asid)
	addPhone(t, bob, bsid)
	activatePhone(t, alice, asid, "sales")
	activatePhone(t, bob, bsid, "")
	var wantA, wantB []string
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); wantA = append([]string{"ACTIVE/not_ready"}, toggles(t, alice, asid, 30)...) }()
	go func() { defer wg.Done(); wantB = append([]string{"ACTIVE/not_ready"}, toggles(t, bob, bsid, 30)...) }()
	wg.Wait()
	eventually(t, "every status change at both endpoints", func() bool {
		return len(statuses(hm.messages())["alice"]) >= len(wantA) && len(statuses(hm.messages())["bob"]) >= len(wantB) &&
			len(statuses(legacy.messages())["alice"]) >= len(wantA)
	})
	got := statuses(hm.messages())
	if strings.Join(got["alice"], ",") != strings.Join(wantA, ",") || strings.Join(got["bob"], ",") != strings.Join(wantB, ",") {
		t.Fatalf("crm got, in order:\nalice %v\nbob   %v\nwant\nalice %v\nbob   %v", got["alice"], got["bob"], wantA, wantB)
	}
	if l := statuses(legacy.messages()); strings.Join(l["alice"], ",") != strings.Join(wantA, ",") || len(l["bob"]) != 0 {
		t.Fatalf("wfm (legacy-md5, sales only) got alice %v, bob %v", l["alice"], l["bob"])
	}
	// A call: ringing, established, held, retrieved, released, completed
	// (no wrap-up by default), and its talk record.
	alice.request(t, protocol.CmdChannelReady, asid+".p", nil)
	code, resp := b.simAt(t, "/v1/sim/calls", `{"queue":"sales","from":"+15550100"}`)
	if code != 202 {
		t.Fatalf("sim call: %d %v", code, resp)
	}
	ix := asid + ".p." + resp["interaction"].(string)
	eventually(t, "the offer", func() bool { return alice.request(t, protocol.CmdInteractionAccept, ix, nil)["result"] == "success" })
	for _, cmd := range []string{protocol.CmdInteractionHold, protocol.CmdInteractionRetrieve, protocol.CmdInteractionRelease} {
		if r := alice.request(t, cmd, ix, nil); r["result"] != "success" {
			t.Fatalf("%s: %v", cmd, r)
		}
	}
	want := []string{"interaction.ringing", "interaction.established", "interaction.held", "interaction.retrieved",
		"interaction.released", "interaction.completed", "interaction.talkrecord"}
	var types []string
	eventually(t, "the call's messages", func() bool {
		types = types[:0]
		for _, m := range hm.messages() {
			if strings.HasPrefix(m.Type, "interaction.") && !strings.HasPrefix(m.Type, "interaction.party.") {
				types = append(types, m.Type)
			}
		}
		return len(types) >= len(want)
	})
	if strings.Join(types, ",") != strings.Join(want, ",") {
		t.Fatalf("interaction messages: %v, want %v", types, want)
	}
	for _, r := range []*receiver{hm, legacy} {
		if len(r.badSig) > 0 {
			t.Fatalf("signatures that did not verify: %v", r.badSig)
		}
	}
	for _, m := range legacy.messages() {
		if m.Type != "agent.status" {
			t.Fatalf("wfm takes agent.status only, got %s", m.Type)
		}
	}
}

// A receiver that fails its first attempts, is slow, and goes down for a
// while loses nothing and keeps each agent's order; commands are not
// slowed by it.
func TestWebhooksSurviveAFailingSlowAndDownReceiver(t *testing.T) {
	hm := startReceiver(t, true)
	hm.failFirst = 5
	b := startBrokerYAML(t, webhookYAML(hmacEndpoint("crm", hm, `"agent.status"`)))
	alice, asid := attach(t, b, "agent=alice")
	addPhone(t, alice, asid)
	activatePhone(t, alice, asid, "")
	want := append([]string{"ACTIVE/not_ready"}, toggles(t, alice, asid, 10)...)
	hm.mu.Lock()
	hm.delay = 100 * time.Millisecond
	hm.mu.Unlock()
	want = append(want, toggles(t, alice, asid, 6)...)
	eventually(t, "the slow deliveries", func() bool { return len(statuses(hm.messages())["alice"]) >= len(want) })
	// Down: the receiver refuses connections while the agent works on.
	hm.mu.Lock()
	hm.delay = 0
	hm.mu.Unlock()
	hm.stop()
	for i := range 10 {
		cmd, data := toggle(i)
		start := time.Now()
		if r := alice.request(t, cmd, asid+".p", data); r["result"] != "success" {
			t.Fatalf("toggle while the receiver is down: %v", r)
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("a command took %v while the receiver was down", took)
		}
		want = append(want, map[bool]string{true: "ACTIVE/ready", false: "ACTIVE/not_ready"}[i%2 == 0])
	}
	hm.start()
	all := want
	eventually(t, "everything after the receiver came back", func() bool { return len(statuses(hm.messages())["alice"]) >= len(all) })
	if got := statuses(hm.messages())["alice"]; strings.Join(got, ",") != strings.Join(all, ",") {
		t.Fatalf("alice's statuses:\n%v\nwant\n%v", got, all)
	}
	if hm.attempts <= len(all) {
		t.Fatalf("%d attempts for %d messages: the failures were not retried", hm.attempts, len(all))
	}
}

// A message the receiver never acknowledges is dead-lettered after
// webhooks.maxage, listed, and delivered by a replay; an endpoint that
// answers 410 is disabled.
func TestWebhooksDeadLettersReplayAndGone(t *testing.T) {
	hm, gone := startReceiver(t, true), startReceiver(t, true)
	hm.failFirst = 1 << 30
	gone.status = http.StatusGone
	b := startBrokerYAML(t, webhookYAML(hmacEndpoint("crm", hm, `"agent.status"`), hmacEndpoint("old", gone, `"agent.status"`))+"  maxage: 300ms\n")
	alice, asid := attach(t, b, "agent=alice")
	addPhone(t, alice, asid)
	activatePhone(t, alice, asid, "")
	toggles(t, alice, asid, 1)
	var body map[string]any
	eventually(t, "the dead letters", func() bool {
		_, body = getJSON(t, b.url("/v1/webhooks/crm/deliveries?status=dead"), nil)
		return num(body["total"]) == 2
	})
	first := body["list"].([]any)[0].(map[string]any)
	if first["message"].(map[string]any)["type"] != "agent.status" || !strings.Contains(first["reason"].(string), "HTTP 500") {
		t.Fatalf("a dead letter: %v", first)
	}
	hm.mu.Lock()
	hm.failFirst = 0
	hm.mu.Unlock()
	req, _ := http.NewRequest(http.MethodPost, b.url("/v1/webhooks/crm/replay"), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("replay: %v %v", resp, err)
	}
	resp.Body.Close()
	eventually(t, "the replayed messages", func() bool { return len(statuses(hm.messages())["alice"]) == 2 })
	_, list := getJSON(t, b.url("/v1/webhooks"), nil)
	for _, e := range list["list"].([]any) {
		e := e.(map[string]any)
		if e["name"] == "old" && !strings.Contains(fmt.Sprint(e["disabled"]), "410") {
			t.Fatalf("the endpoint that answered 410: %v", e)
		}
	}
}

// Two nodes on one Redis: node B delivers every partition; it is killed
// (SIGKILL) during a burst of 10,000 status changes made through node A.
// Node A takes the partitions over from the stored cursors: the receiver
// gets all 10,000, each agent's in order (a message in flight may come
// twice, with the same id).
func TestClusterWebhooksSurviveTheDeliveringNodeKilled(t *testing.T) {
	rs := redistest.Start(t)
	hm := startReceiver(t, true)
	yaml := webhookYAML(hmacEndpoint("crm", hm, `"agent.status"`))
	nb := startNodeYAML(t, rs, "wh-b", yaml)
	time.Sleep(300 * time.Millisecond) // B leases every partition before A starts
	na := startNodeYAML(t, rs, "wh-a", yaml, "CTIBROKER_LIMITS__COMMANDRATE=0")
	const agents, each = 20, 499 // with the activation: 500 messages an agent
	var wg sync.WaitGroup
	wants := make([][]string, agents)
	killed := make(chan struct{})
	for i := range agents {
		c, sid := attach(t, na.broker(), fmt.Sprintf("agent=a%02d", i))
		addPhone(t, c, sid)
		wg.Add(1)
		go func() {
			defer wg.Done()
			activatePhone(t, c, sid, "")
			wants[i] = append([]string{"ACTIVE/not_ready"}, toggles(t, c, sid, each)...)
		}()
	}
	go func() {
		defer close(killed)
		for deadline := time.Now().Add(time.Minute); len(hm.messages()) < agents*(each+1)/2 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		nb.kill() // mid-burst: the agents keep going on node A
	}()
	wg.Wait()
	<-killed
	testutil.EventuallyWithin(t, time.Minute, "all 10,000 messages", func() bool { return len(hm.messages()) >= agents*(each+1) })
	got := statuses(hm.messages())
	for i := range agents {
		a := fmt.Sprintf("a%02d", i)
		if strings.Join(got[a], ",") != strings.Join(wants[i], ",") {
			t.Fatalf("%s: %d messages, out of order or missing", a, len(got[a]))
		}
	}
	t.Logf("%d deliveries for %d messages", len(hm.got), agents*(each+1))
}

// A node that dies between a commit and its relay leaves the commit's
// webhook messages in the session's outbox (stored with the commit): the
// node that restores the session pushes them. Simulated here by a record
// left in a session's outbox after its node was killed.
func TestClusterWebhooksLeftInASessionAreRelayedOnRestore(t *testing.T) {
	rs := redistest.Start(t)
	hm := startReceiver(t, true)
	yaml := webhookYAML(hmacEndpoint("crm", hm, `"agent.status"`))
	a, b := startNodeYAML(t, rs, "left-a", yaml), startNodeYAML(t, rs, "left-b", yaml)
	alice, sid := attach(t, a.broker(), "agent=alice")
	addPhone(t, alice, sid)
	activatePhone(t, alice, sid, "")
	last := alice.until(t, isEvent(protocol.EvStateUpdated))
	eventually(t, "the activation delivered", func() bool { return len(hm.messages()) == 1 })
	a.kill()
	rec, _ := json.Marshal(protocol.WebhookRecord{Msg: protocol.WebhookMessage{ID: "left-behind", Type: "agent.status", Time: time.Now().UnixMilli(),
		AgentID: "alice", Data: json.RawMessage(`{"current":{"state":"ACTIVE","status":"ready"}}`)}})
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rc.Close()
	if err := rc.XAdd(context.Background(), &redis.XAddArgs{Stream: "ctibroker:sess:{" + sid + "}:wh", ID: "999999-0", Values: []any{"d", rec}}).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "alice back on node B", func() bool {
		c, err := dial(t, b.broker(), fmt.Sprintf("agent=alice&since=%d", seqOf(last)), nil)
		return err == nil && c.until(t, isEvent(protocol.EvSessionInitialized))["target"] == sid
	})
	eventually(t, "the message left behind", func() bool {
		msgs := hm.messages()
		return len(msgs) == 2 && msgs[1].ID == "left-behind"
	})
	eventually(t, "the session's outbox emptied", func() bool {
		n, _ := rc.XLen(context.Background(), "ctibroker:sess:{"+sid+"}:wh").Result()
		return n == 0
	})
}

// A slow endpoint delays nothing but itself: another endpoint gets the
// same messages at once.
func TestWebhooksSlowEndpointDoesNotDelayAnother(t *testing.T) {
	slow, fast := startReceiver(t, true), startReceiver(t, true)
	slow.delay = 2 * time.Second
	b := startBrokerYAML(t, webhookYAML(hmacEndpoint("slow", slow, `"agent.status"`), hmacEndpoint("fast", fast, `"agent.status"`)))
	alice, asid := attach(t, b, "agent=alice")
	addPhone(t, alice, asid)
	activatePhone(t, alice, asid, "")
	want := append([]string{"ACTIVE/not_ready"}, toggles(t, alice, asid, 10)...)
	start := time.Now()
	eventually(t, "the fast endpoint's messages", func() bool { return len(statuses(fast.messages())["alice"]) == len(want) })
	if took := time.Since(start); took > time.Second {
		t.Fatalf("the fast endpoint waited %v behind the slow one", took)
	}
	if n := len(slow.messages()); n > 1 {
		t.Fatalf("the slow endpoint got %d messages already: it is not slow", n)
	}
}
