package broker

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ctibroker/ctibroker/protocol"
)

// browser starts headless Chromium (Debian's chromium package). Without it
// the test skips loudly, or fails when CTIBROKER_REQUIRE_BROWSER=1 (CI).
func browser(t *testing.T) context.Context {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		msg := "chromium is not installed: SKIPPING the wallboard browser test (apt-get install chromium)"
		if os.Getenv("CTIBROKER_REQUIRE_BROWSER") == "1" {
			t.Fatal("CTIBROKER_REQUIRE_BROWSER=1 but " + msg)
		}
		t.Skip("!!! " + msg)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.WindowSize(1200, 700))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	return ctx
}

func TestWallboardShowsLiveStatus(t *testing.T) {
	// The switch knows alice's name: the wallboard shows it.
	b := startBrokerYAML(t, "adapter:\n  sim:\n    agents:\n      alice: {name: Alice Martin, teams: [sales]}\n")
	ctx := browser(t)
	alice, asid := attach(t, b, "agent=alice&teams=sales")
	alice.request(t, protocol.CmdAddChannel, asid, map[string]any{"channel": map[string]string{"id": "phone", "name": "1001", "type": "TELEPHONY"}})
	alice.request(t, protocol.CmdChannelActivate, asid+".phone", map[string]any{"channeloptions": map[string]any{"queue": "sales"}})
	bob, bsid := attach(t, b, "agent=bob&teams=support")
	bob.request(t, protocol.CmdAddChannel, bsid, map[string]any{"channel": map[string]string{"id": "chat", "name": "bob-chat", "type": "CHAT"}})
	bob.request(t, protocol.CmdChannelActivate, bsid+".chat", nil)
	bob.request(t, protocol.CmdChannelReady, bsid+".chat", nil)

	runCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	status := `document.querySelector('tr[data-agent="alice"] .status')?.textContent || ""`
	eval := func(expr string) string {
		t.Helper()
		v, err := chromedp.Run(runCtx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return v
	}
	if err := chromedp.Do(runCtx, chromedp.Navigate(b.url("/?alertAfter=1")), chromedp.WaitVisible(`tr[data-agent="alice"]`)); err != nil {
		t.Fatalf("wallboard did not show alice: %v", err)
	}
	if name := eval(`document.querySelector('tr[data-agent="alice"] td.agent').textContent`); name != "Alice Martin" {
		t.Fatalf("alice's row names %q, want her display name", name)
	}
	got := eval(status)
	if got != "Not ready" {
		t.Fatalf("alice shows %q, want \"Not ready\"", got)
	}

	// Alice goes ready over the protocol: the page shows it within a second.
	changed := time.Now()
	alice.request(t, protocol.CmdChannelReady, asid+".phone", nil)
	for got != "Ready" {
		if time.Since(changed) > time.Second {
			t.Fatalf("after 1s the wallboard still shows %q for alice", got)
		}
		time.Sleep(20 * time.Millisecond)
		got = eval(status)
	}
	t.Logf("wallboard showed the change after %v", time.Since(changed).Round(time.Millisecond))

	// A call offered to alice shows on her row (direction, state, queue,
	// time in state), and follows her answer.
	code, resp := b.simAt(t, "/v1/sim/calls", `{"queue":"sales","from":"+15550110"}`)
	if code != 202 {
		t.Fatalf("sim call: %d %v", code, resp)
	}
	offered := resp["interaction"].(string)
	ix := `document.querySelector('tr[data-agent="alice"] .ix')?.textContent || ""`
	waitFor := func(what, expr string, ok func(string) bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		got := eval(expr)
		for !ok(got) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the wallboard shows %q", what, got)
			}
			time.Sleep(20 * time.Millisecond)
			got = eval(expr)
		}
	}
	waitFor("the offered call", ix, func(s string) bool { return strings.HasPrefix(s, "inbound ringing · sales") })
	if r := alice.request(t, protocol.CmdInteractionAccept, asid+".phone."+offered, nil); r["result"] != "success" {
		t.Fatalf("accept: %v", r)
	}
	waitFor("the answered call", ix, func(s string) bool {
		return strings.HasPrefix(s, "inbound talking · sales") && strings.Contains(s, ":")
	})

	// The queues show, and a supervisor sets a team member's state from
	// the page: bob goes not ready, then ready again.
	if err := chromedp.Do(runCtx, chromedp.WaitVisible(`#queuetable tr[data-queue="sales"]`)); err != nil {
		t.Fatalf("queues: %v", err)
	}
	bobStatus := `document.querySelector('tr[data-agent="bob"] .status')?.textContent || ""`
	for _, step := range []struct{ button, want string }{{"not_ready", "Not ready"}, {"ready", "Ready"}} {
		if err := chromedp.Do(runCtx, chromedp.Click(`tr[data-agent="bob"] button[data-act="`+step.button+`"]`)); err != nil {
			t.Fatalf("click %s: %v", step.button, err)
		}
		waitFor("bob after "+step.button, bobStatus, func(s string) bool { return s == step.want })
	}

	// Sorting: by name, alice first; by status, bob (ready) before alice (on a call).
	order := `[...document.querySelectorAll('#agents tbody tr')].map(r => r.dataset.agent).join(",")`
	waitFor("sorted by name", order, func(s string) bool { return s == "alice,bob" })
	if err := chromedp.Do(runCtx, chromedp.SetValue(`#sort`, "status"), chromedp.Evaluate[chromedp.Void](`document.querySelector('#sort').dispatchEvent(new Event('change'))`)); err != nil {
		t.Fatal(err)
	}
	waitFor("sorted by status", order, func(s string) bool { return s == "bob,alice" })
	// Not ready beyond the alert threshold (?alertAfter=1): the row turns to the alert colour.
	bobAlert := `document.querySelector('tr[data-agent="bob"]').classList.contains('alert') ? "alert" : "calm"`
	if err := chromedp.Do(runCtx, chromedp.Click(`tr[data-agent="bob"] button[data-act="not_ready"]`)); err != nil {
		t.Fatal(err)
	}
	waitFor("bob not ready", bobStatus, func(s string) bool { return s == "Not ready" })
	waitFor("bob in the alert colour", bobAlert, func(s string) bool { return s == "alert" })
	if err := chromedp.Do(runCtx, chromedp.Click(`tr[data-agent="bob"] button[data-act="ready"]`)); err != nil {
		t.Fatal(err)
	}
	waitFor("bob calm again", bobAlert, func(s string) bool { return s == "calm" })

	// The summary counts and the ticking timer follow.
	readyCount := eval(`document.querySelector('#summary .count.ready b').textContent`)
	timer := eval(`document.querySelector('tr[data-agent="alice"] td.timer').textContent`)
	if readyCount != "1" || timer == "" {
		t.Fatalf("summary ready=%q, timer=%q", readyCount, timer)
	}
	// Clicking an agent shows today's timeline.
	if err := chromedp.Do(runCtx, chromedp.Click(`tr[data-agent="alice"]`), chromedp.WaitVisible(`#timeline .seg`)); err != nil {
		t.Fatalf("history timeline: %v", err)
	}
	segments, err := chromedp.Run(runCtx, chromedp.Evaluate[int](`document.querySelectorAll('#timeline .seg').length`))
	if err != nil || segments < 3 {
		t.Fatalf("%d timeline segments for alice (%v), want at least 3", segments, err)
	}
	png, err := chromedp.Run(runCtx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("..", "testdata", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "wallboard.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("UPDATE_SCREENSHOT") == "1" {
		_ = os.WriteFile(filepath.Join("..", "docs", "wallboard.png"), png, 0o644)
	}
	// The queue figures are live: another call counts at once.
	if code, resp := b.simAt(t, "/v1/sim/calls", `{"queue":"sales","from":"+15550111"}`); code != 202 {
		t.Fatalf("sim call: %d %v", code, resp)
	}
	waitFor("the queue's offered count", `document.querySelector('#queuetable tr[data-queue="sales"] td:nth-child(7)')?.textContent || ""`,
		func(s string) bool { return s == "2" })

	// Disconnected: the page says so.
	var conn string
	b.stop()
	deadline := time.Now().Add(5 * time.Second)
	for conn != "conn down" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		conn = eval(`document.querySelector('#conn').className`)
	}
	if conn != "conn down" {
		t.Fatalf("the page does not show the disconnection: %q", conn)
	}
}

// The wallboard opened with ?token= (a bookmark, a link) keeps the token out
// of every URL: the address bar drops it, and the WebSocket and REST calls
// carry it in headers, so a proxy in front logs no token.
func TestWallboardKeepsTokensOutOfURLs(t *testing.T) {
	b := startBroker(t, jwtEnv...)
	ctx := browser(t)
	alice, asid := attach(t, b, "access_token="+mustToken(t, "alice", RoleAgent, "sales"))
	alice.request(t, protocol.CmdAddChannel, asid, map[string]any{"channel": map[string]string{"id": "phone", "name": "1001", "type": "TELEPHONY"}})

	// A logging reverse proxy in front of the broker.
	target, _ := url.Parse(b.url("/"))
	var mu sync.Mutex
	var logged []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		logged = append(logged, r.URL.String())
		mu.Unlock()
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	}))
	defer proxy.Close()

	tok := mustToken(t, "vicky", RoleSupervisor, "sales")
	runCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(runCtx, chromedp.Navigate(proxy.URL+"/?token="+tok), chromedp.WaitVisible(`tr[data-agent="alice"]`)); err != nil {
		t.Fatalf("wallboard with a token did not show alice: %v", err)
	}
	// Clicking an agent fetches its history over REST.
	if err := chromedp.Do(runCtx, chromedp.Click(`tr[data-agent="alice"]`), chromedp.WaitVisible(`#detail`)); err != nil {
		t.Fatal(err)
	}
	href, err := chromedp.Run(runCtx, chromedp.Evaluate[string](`location.href`))
	if err != nil || strings.Contains(href, tok) || strings.Contains(href, "token") {
		t.Fatalf("the address bar still holds the token: %s (%v)", href, err)
	}
	mu.Lock()
	defer mu.Unlock()
	sawWS := false
	for _, u := range logged {
		if strings.Contains(u, tok[len(tok)-20:]) && !strings.HasPrefix(u, "/?token=") {
			t.Errorf("the proxy logged a token in %s", u)
		}
		sawWS = sawWS || strings.HasPrefix(u, "/v1/ws")
	}
	if !sawWS {
		t.Fatalf("no WebSocket went through the proxy: %v", logged)
	}
}
