package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/internal/testbrowser"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// TestConsolePauseResume drives a rotation from the rotations console in
// headless Chromium, against real worker processes: open the list, open
// the running rotation, Pause it and see it paused (and no UpdateKeypair
// call after that), see the same page on a read-only worker without
// buttons, back out of Cancel's confirmation, Resume, and watch the page
// refresh itself to the final state. Screenshots are saved in the test's
// artifact directory (go test -artifacts).
func TestConsolePauseResume(t *testing.T) {
	r := testredis.Mini(t)
	// 15 batches at 1 UpdateKeypair a second: the rotation is still
	// submitting when the browser pauses it.
	f := startSim(t, cphsim.Options{Servers: 1500, Seed: 11, JobLatency: time.Second, JobJitter: 500 * time.Millisecond,
		BadServerRate: 0.004})
	env := baseEnv(r, f)
	addr, roAddr := freeAddr(t), freeAddr(t)
	startWorker(t, append(env, "REKEY_ADMIN_TOKEN="+adminToken), "--admin-addr", addr, "--submit-rate", "1/s")
	startWorker(t, append(env, "REKEY_ADMIN_TOKEN="+adminToken), "--admin-addr", roAddr, "--submit-rate", "1/s", "--ui-readonly")
	base, roBase := "http://"+addr, "http://"+roAddr
	waitHTTP(t, base+"/readyz")
	waitHTTP(t, roBase+"/readyz")

	// A canary wave of 1 %, then the rest: the history shows both start.
	st := startRotation(t, env, "--actor", "alice", "--waves", "1%", writeTargets(t, f))
	id := st.Rotation
	rdb := r.Client(t)
	ctx := testbrowser.New(t, adminToken, 3*time.Minute)

	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	state := func(s string) string { return `//span[contains(@class,"state")][@data-state="` + s + `"]` }

	run("the list shows the rotation", chromedp.Navigate(base+"/rotations/"),
		chromedp.WaitVisible(`//table[@id="rotations"]//a[text()="`+id+`"]`))
	testbrowser.Shot(t, ctx, "console-list.png")

	run("open the running rotation", chromedp.Click(`//a[text()="`+id+`"]`),
		chromedp.WaitVisible(`#rotation-id`), chromedp.WaitVisible(state("running")), chromedp.WaitVisible(`#pause`))
	testbrowser.Shot(t, ctx, "console-running.png")
	page, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("main").innerText`))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(page, "\n") {
		if l := strings.TrimSpace(line); l == "null" || l == "undefined" {
			t.Errorf("the rotation's page shows a line %q: %q", l, page)
		}
	}

	run("pause", chromedp.Click(`#pause`), chromedp.WaitVisible(state("paused")), chromedp.WaitVisible(`#resume`))
	rot := readRotation(t, rdb, id)
	if rot.State != tasks.StatePaused {
		t.Fatalf("the page shows paused, the rotation is %s", rot.State)
	}
	// A submit that had passed its last state check when the pause
	// landed may still make its call; after that, none.
	time.Sleep(time.Second)
	calls := updateCalls(f)
	time.Sleep(3 * time.Second)
	if after := updateCalls(f); after != calls {
		t.Fatalf("UpdateKeypair calls went from %d to %d while paused", calls, after)
	}
	if rot := readRotation(t, rdb, id); rot.Counts.Pending == 0 {
		t.Fatalf("nothing left to submit after the pause (%+v): the test paused too late to show anything", rot.Counts)
	}
	testbrowser.Shot(t, ctx, "console-paused.png")

	// The read-only worker's console shows the same rotation, without a
	// single button.
	run("read-only page", chromedp.Navigate(roBase+"/rotations/"+id), chromedp.WaitVisible(state("paused")),
		chromedp.WaitVisible(`//a[text()="Report CSV"]`))
	buttons, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("main button").length`))
	if err != nil {
		t.Fatal(err)
	}
	if buttons != 0 {
		t.Errorf("the read-only console shows %d buttons, want none", buttons)
	}
	testbrowser.Shot(t, ctx, "console-readonly.png")

	// Cancel asks first; keeping the rotation changes nothing.
	run("cancel, then keep it", chromedp.Navigate(base+"/rotations/"+id), chromedp.WaitVisible(`#cancel`),
		chromedp.Click(`#cancel`), chromedp.WaitVisible(`#confirm-yes`))
	testbrowser.Shot(t, ctx, "console-cancel-confirm.png")
	run("keep it", chromedp.Click(`#confirm-no`), chromedp.WaitNotVisible(`#confirm-yes`))
	if rot := readRotation(t, rdb, id); rot.State != tasks.StatePaused {
		t.Fatalf("after backing out of cancel the rotation is %s, want paused", rot.State)
	}

	run("resume", chromedp.Click(`#resume`), chromedp.WaitVisible(state("running")))
	// The page refreshes itself: no reload until the final state shows.
	run("the final state", chromedp.WaitVisible(state("completed_with_errors")))
	rot = waitFinished(t, rdb, id, time.Minute)
	if rot.State != tasks.StateCompletedWithErrors || rot.Counts.Failed == 0 || rot.Counts.Succeeded+rot.Counts.Failed != rot.Counts.Total {
		t.Fatalf("final rotation: %s %+v", rot.State, rot.Counts)
	}
	if updateCalls(f) <= calls {
		t.Fatalf("no UpdateKeypair call after resume")
	}
	// Every submit waited for the 1/s limiter, many were put back for
	// it, and no API call failed: the asynq UI's failure counts, which
	// count only real failures, stay at zero.
	insp := asynq.NewInspectorFromRedisClient(rdb)
	for _, q := range []string{tasks.QueueSubmit, tasks.QueuePoll} {
		info, err := insp.GetQueueInfo(q)
		if err != nil {
			t.Fatal(err)
		}
		if info.FailedTotal != 0 {
			t.Errorf("queue %s counts %d failed tasks; rate-limit waits are not failures", q, info.FailedTotal)
		}
	}
	run("failures by code", chromedp.WaitVisible(`//table[@id="failures"]//td[text()="`+cphsim.JobCodeServerAbnormal+`"]`))
	testbrowser.Shot(t, ctx, "console-finished.png")

	// The history says who did what: alice started it (enqueue --actor),
	// the browser's user paused and resumed it, the workers did the rest.
	run("the history", chromedp.ScrollIntoView(`#timeline`), chromedp.WaitVisible(`#timeline li.kind-finished`))
	timeline, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`[...document.querySelectorAll("#timeline li")].map(li => li.className + " " + li.querySelector(".who").innerText)`))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(strings.Join(timeline, "\n"), "kind-wave_started by cph-rekey"); n != 2 {
		t.Errorf("the history shows %d wave starts, want 2: %q", n, timeline)
	}
	// Where the waves' starts fall depends on when the pause landed.
	got := slices.DeleteFunc(slices.Clone(timeline), func(s string) bool { return strings.HasPrefix(s, "kind-wave_started") })
	want := []string{"kind-created by alice", "kind-paused by operator (console)", "kind-resumed by operator (console)",
		"kind-finished by cph-rekey"}
	if !slices.Equal(got, want) {
		t.Errorf("the history shows %q; want, waves aside, %q", timeline, want)
	}
	testbrowser.ShotOf(t, ctx, "#timeline", "console-history.png")

	// The asynq UI links back to the console.
	run("asynq UI", chromedp.Navigate(base+"/monitoring/"), chromedp.WaitVisible(`//a[text()="Rotations console"]`),
		chromedp.WaitVisible(`//table//*[text()="rekey-submit"]`))
	testbrowser.Shot(t, ctx, "asynq-ui.png")
}
