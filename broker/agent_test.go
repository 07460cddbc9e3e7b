package broker

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The agent desktop end to end in headless Chromium, two agents' pages on
// the simulated switch: a call arrives for alice, she accepts it, holds
// it, retrieves it and transfers it to bob's page, where bob answers, hangs
// up and completes it with a disposition (required for telephony here).
func TestAgentDesktopTransfersACall(t *testing.T) {
	b := startBroker(t, "CTIBROKER_ACW__TELEPHONY__DISPOSITION=required")
	ctx := browser(t)
	runCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	alice := runCtx
	// The browser starts with alice's tab; bob's is a second tab of it.
	if err := chromedp.Do(alice, chromedp.Navigate("about:blank")); err != nil {
		t.Fatal(err)
	}
	bob, cancelBob := chromedp.NewContext(alice)
	defer cancelBob()

	eval := func(tab context.Context, expr string) string {
		t.Helper()
		v, err := chromedp.Run(tab, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return v
	}
	waitText := func(tab context.Context, what, expr string, ok func(string) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		got := eval(tab, expr)
		for !ok(got) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the page shows %q (error line: %q)", what, got, eval(tab, `document.querySelector('#error').textContent`))
			}
			time.Sleep(20 * time.Millisecond)
			got = eval(tab, expr)
		}
	}
	do := func(tab context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(tab, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	status := `document.querySelector('#status').textContent`
	callState := `document.querySelector('#calls li .state')?.textContent || ""`
	is := func(want string) func(string) bool { return func(s string) bool { return s == want } }

	for _, tab := range []struct {
		ctx  context.Context
		name string
	}{{alice, "alice"}, {bob, "bob"}} {
		do(tab.ctx, tab.name+" opens the desktop", chromedp.Navigate(b.url("/agent?agent="+tab.name)), chromedp.WaitVisible(`#btn-login`))
		waitText(tab.ctx, tab.name+" connected", `document.querySelector('#conn').textContent`, is("Connected"))
		do(tab.ctx, tab.name+" logs in", chromedp.SetValue(`#ext`, "n-"+tab.name), chromedp.Click(`#btn-login`))
		waitText(tab.ctx, tab.name+" logged in", status, is("Not ready"))
	}
	// The reason catalog is there, in plain words.
	if got := eval(alice, `[...document.querySelectorAll('#reason option')].map(o => o.textContent).join(",")`); !strings.Contains(got, "Lunch") {
		t.Fatalf("reasons: %q", got)
	}
	do(alice, "alice goes ready", chromedp.Click(`#btn-ready`))
	waitText(alice, "alice ready", status, is("Ready"))

	if code, resp := b.simAt(t, "/v1/sim/calls", `{"queue":"sales","from":"+15550123","data":{"account":"A-42"}}`); code != 202 {
		t.Fatalf("sim call: %d %v", code, resp)
	}
	waitText(alice, "the call rings", callState, is("Ringing"))
	waitText(alice, "the caller and data", `document.querySelector('#calls li dl').textContent`, func(s string) bool {
		return strings.Contains(s, "+15550123") && strings.Contains(s, "sales") && strings.Contains(s, "account: A-42")
	})
	do(alice, "accept", chromedp.Click(`#calls li button[data-act="accept"]`))
	waitText(alice, "talking", callState, is("Talking"))
	waitText(alice, "on a call", status, is("On a call"))
	// What the state does not allow is not shown (rendered, not just hidden in the DOM).
	visible := `[...document.querySelectorAll('#calls li button, #login, #login-token, #calls li label')].filter(e => e.offsetParent !== null).map(e => e.dataset.act || e.id || e.textContent.trim().split(' ')[0]).join(",")`
	if got := eval(alice, visible); got != "hold,release,Transfer,blindTransfer,consult,Keypad,sendDTMF" {
		t.Fatalf("controls shown while talking: %s", got)
	}
	do(alice, "hold", chromedp.Click(`#calls li button[data-act="hold"]`))
	waitText(alice, "held", callState, is("On hold"))
	do(alice, "retrieve", chromedp.Click(`#calls li button[data-act="retrieve"]`))
	waitText(alice, "talking again", callState, is("Talking"))
	png, err := chromedp.Run(alice, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	saveScreenshot(t, "agent-desktop.png", png)

	do(alice, "transfer to bob", chromedp.SetValue(`#calls li input.dest`, "bob"), chromedp.Click(`#calls li button[data-act="blindTransfer"]`))
	waitText(bob, "the call rings at bob's", callState, is("Ringing"))
	do(bob, "bob accepts", chromedp.Click(`#calls li button[data-act="accept"]`))
	waitText(bob, "bob talking", callState, is("Talking"))
	do(bob, "bob hangs up", chromedp.Click(`#calls li button[data-act="release"]`))
	waitText(bob, "bob's wrap-up", callState, is("Wrap-up"))
	// The disposition is required: completing without one is refused, and
	// the page says why.
	do(bob, "complete without a disposition", chromedp.Click(`#calls li button[data-act="complete"]`))
	waitText(bob, "the refusal", `document.querySelector('#error').textContent`, func(s string) bool { return strings.Contains(s, "disposition") })
	do(bob, "complete with one", chromedp.SetValue(`#calls li select.disposition`, "sale"), chromedp.Click(`#calls li button[data-act="complete"]`))
	waitText(bob, "the call done", `String(document.querySelectorAll('#calls li').length)`, is("0"))
	// Alice's side of the transferred call wraps up too.
	if got := eval(alice, `document.querySelector('#calls li .state')?.textContent || "none"`); got != "Wrap-up" && got != "none" {
		t.Fatalf("alice's call after the transfer: %q", got)
	}
}

// saveScreenshot keeps a page's screenshot as a test artifact, and in docs/
// with UPDATE_SCREENSHOT=1.
func saveScreenshot(t *testing.T, name string, png []byte) {
	t.Helper()
	dir := filepath.Join("..", "testdata", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("UPDATE_SCREENSHOT") == "1" {
		_ = os.WriteFile(filepath.Join("..", "docs", name), png, 0o644)
	}
}
