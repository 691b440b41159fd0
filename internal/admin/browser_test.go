package admin

import (
	"fmt"
	"slices"
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
