package admin

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/internal/testbrowser"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// TestBrowserShowsQueues opens the web UI in headless Chromium, logged in
// with basic auth, and waits for the dashboard to list the rekey-submit
// queue; it leaves a screenshot in the test's artifact directory (kept
// with go test -artifacts).
func TestBrowserShowsQueues(t *testing.T) {
	r := miniWithTasks(t)
	_, base := start(t, Options{Token: testToken, ReadOnly: true, RedisConnOpt: r.ConnOpt()})
	ctx := testbrowser.New(t, testToken, 2*time.Minute)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/monitoring/"),
		chromedp.WaitVisible(`//table//*[text()="rekey-submit"]`),
	); err != nil {
		t.Fatalf("web UI in Chromium: %v", err)
	}
	testbrowser.Shot(t, ctx, "queues.png")

	// The queue's pending tasks, with payloads shown by FormatJSON.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/monitoring/queues/rekey-submit?status=pending"),
		chromedp.WaitVisible(`//table//*[contains(text(), "r-demo")]`),
	); err != nil {
		t.Fatalf("pending tasks in Chromium: %v", err)
	}
	testbrowser.Shot(t, ctx, "pending-tasks.png")

	// asynqmon shows a task ID only up to its first "-": the pipeline's
	// IDs put what tells tasks apart before it.
	shown, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`[...document.querySelectorAll("table tbody tr > :first-child")].map(td => td.innerText.trim())`))
	if err != nil {
		t.Fatalf("read the task table: %v", err)
	}
	want := []string{"submit.1", "submit.2", "submit.3", "submit.4", "submit.5"}
	slices.Sort(shown)
	if !slices.Equal(shown, want) {
		t.Errorf("task IDs shown in the asynq UI = %q, want %q (each task told apart)", shown, want)
	}
}

// miniWithTasks is a miniredis holding tasks in all three queues.
func miniWithTasks(t *testing.T) *testredis.Redis {
	t.Helper()
	r := testredis.Mini(t)
	c := asynq.NewClient(r.ConnOpt())
	defer c.Close()
	add := func(queue, typ, id, payload string) {
		t.Helper()
		if _, err := c.Enqueue(asynq.NewTask(typ, []byte(payload)), asynq.Queue(queue), asynq.TaskID(id)); err != nil {
			t.Fatalf("enqueue %s: %v", id, err)
		}
	}
	for i := 1; i <= 5; i++ {
		add(tasks.QueueSubmit, tasks.TypeSubmit, tasks.SubmitTaskID("r-demo", i), fmt.Sprintf(`{"rotation":"r-demo","batch":%d,"servers":100}`, i))
	}
	add(tasks.QueuePoll, tasks.TypeTick, tasks.TickTaskID("r-demo", 1, 3), `{"rotation":"r-demo","gen":1,"seq":3}`)
	add(tasks.QueueEvents, tasks.TypeFinished, tasks.FinishedTaskID("r-old"), `{"rotation":"r-old","state":"succeeded","counts":{"succeeded":100}}`)
	return r
}

// TestBrowserShowsCappedHistory opens a rotation whose history went past
// its cap in headless Chromium: the timeline keeps its first entries and
// its latest, marks the gap between them with how many were left out, and
// names who paused and resumed it from the console.
func TestBrowserShowsCappedHistory(t *testing.T) {
	rig := newConsoleRig(t, Options{Token: testToken})
	url := rig.base + APIPath + "/" + rig.id
	if code, msg := post(t, url+"/pause", "", basic("alice", testToken)); code != http.StatusOK {
		t.Fatalf("pause: %d %q", code, msg)
	}
	if code, msg := post(t, url+"/resume", `{"max_errors":"20"}`, basic("bob", testToken)); code != http.StatusOK {
		t.Fatalf("resume: %d %q", code, msg)
	}
	ctx := context.Background()
	const extra = tasks.HistoryMax + 20
	for i := range extra {
		e := tasks.HistoryEntry{Kind: tasks.HistoryPaused, Actor: "carol", Detail: fmt.Sprintf("pause %d", i+1)}
		if i%2 == 1 {
			e.Kind, e.Detail = tasks.HistoryResumed, fmt.Sprintf("resume %d", i+1)
		}
		if _, err := rig.store.AddHistory(ctx, rig.id, e); err != nil {
			t.Fatal(err)
		}
	}
	bctx := testbrowser.New(t, testToken, 2*time.Minute)
	if err := chromedp.Do(bctx, chromedp.Navigate(rig.base+ConsolePath+"/"+rig.id),
		chromedp.WaitVisible(`#timeline li.gap`)); err != nil {
		t.Fatalf("the timeline in Chromium: %v", err)
	}
	rows, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](
		`[...document.querySelectorAll("#timeline li")].map(li => li.innerText.replace(/\s+/g, " ").trim())`))
	if err != nil {
		t.Fatal(err)
	}
	// 4 entries before (created, wave 1, alice's pause, bob's resume),
	// then the extras: the first 10 entries and the latest 90 are kept.
	total := 4 + extra
	left := total - tasks.HistoryMax
	if len(rows) != tasks.HistoryMax+1 || !strings.Contains(rows[tasks.HistoryHead], fmt.Sprintf("%d entries left out", left)) {
		t.Fatalf("timeline of %d rows, row %d %q; want %d entries and the gap of %d after the first %d",
			len(rows), tasks.HistoryHead+1, rows[min(len(rows)-1, tasks.HistoryHead)], tasks.HistoryMax, left, tasks.HistoryHead)
	}
	for i, want := range map[int]string{0: "Created", 2: "Paused by alice (console) was running",
		3: "Resumed by bob (console) was paused; max errors 25 -> 20", len(rows) - 1: fmt.Sprintf("by carol resume %d", extra)} {
		if !strings.Contains(rows[i], want) {
			t.Errorf("row %d is %q, want it to hold %q", i+1, rows[i], want)
		}
	}
	testbrowser.ShotOf(t, bctx, "#timeline", "console-history-capped.png")
}
