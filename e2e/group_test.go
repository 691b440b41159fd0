package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
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

var updateDocs = flag.Bool("update-docs", false, "write docs/console.png from TestConsoleRotationAcrossRegions's screenshot")

// twoRegions serves north, the default place, and east, reached by
// --endpoint REGION=URL, and writes a target list of both fleets.
func twoRegions(t *testing.T, redisURL string, northOpts, eastOpts cphsim.Options) (env []string, list string, north, east *region) {
	t.Helper()
	north = startRegion(t, "cn-north-4", testProject, northOpts)
	east = startRegion(t, "cn-east-3", "11111111111111111111111111111111", eastOpts)
	env = append(os.Environ(),
		"REDIS_URL="+redisURL,
		"REKEY_REGION="+north.name,
		"REKEY_ENDPOINT="+north.fleet.url+","+east.name+"="+east.fleet.url,
		"HUAWEICLOUD_SDK_AK="+testAK,
		"HUAWEICLOUD_SDK_SK="+testSK,
		"HUAWEICLOUD_SDK_PROJECT_ID="+testProject,
	)
	var b strings.Builder
	b.WriteString("server_id,region,project_id\n")
	for _, s := range north.fleet.sim.Servers() {
		fmt.Fprintf(&b, "%s,,\n", s.ServerID)
	}
	for _, s := range east.fleet.sim.Servers() {
		fmt.Fprintf(&b, "%s,%s,%s\n", s.ServerID, east.name, east.project)
	}
	list = filepath.Join(t.TempDir(), "fleet.csv")
	if err := os.WriteFile(list, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return env, list, north, east
}

// TestRegionHaltAcrossWorkers: two worker processes run a rotation over
// two regions; cn-east-3 goes past its budget, and under the default
// --on-region-halt halt the workers halt cn-north-4 too, whichever of them
// recorded the failures; cn-north-4 makes no call after that. Cancelled,
// the rotation sends one completion event as a whole, besides its parts'.
func TestRegionHaltAcrossWorkers(t *testing.T) {
	r := testredis.Mini(t)
	// cn-north-4 submits one chunk a second: still at work when cn-east-3,
	// a third of whose servers always fail, goes past its budget.
	env, list, north, _ := twoRegions(t, r.URL(),
		cphsim.Options{Servers: 300, Seed: 31, JobLatency: 200 * time.Millisecond},
		cphsim.Options{Servers: 60, Seed: 32, JobLatency: 200 * time.Millisecond, BadServerRate: 0.3})
	st := startRotation(t, env, "--chunk-size", "10", "--max-errors", "2", list)
	rates := []string{"--submit-rate", "cn-north-4=1/s:1,20/s:1"}
	startWorker(t, env, rates...)
	startWorker(t, env, rates...)

	store := tasks.NewStore(r.Client(t), "")
	ctx := context.Background()
	northID, eastID := tasks.PartID(st.Rotation, 1), tasks.PartID(st.Rotation, 2)
	deadline := time.Now().Add(time.Minute)
	var n *tasks.Rotation
	for {
		e, err := store.Rotation(ctx, eastID)
		if err != nil {
			t.Fatal(err)
		}
		if n, err = store.Rotation(ctx, northID); err != nil {
			t.Fatal(err)
		}
		if e.State == tasks.StateFailed && n.Halted() {
			break
		}
		if n.Finished() || time.Now().After(deadline) {
			t.Fatalf("cn-east-3 %s %q, cn-north-4 %s: want cn-north-4 halted with cn-east-3", e.State, e.Reason, n.State)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !tasks.HaltedByGroup(n) || !strings.Contains(n.Reason, eastID) || n.Counts.Pending == 0 {
		t.Fatalf("cn-north-4 halted with %q, %+v: want it halted by its rotation, naming %s, servers left", n.Reason, n.Counts, eastID)
	}
	// Calls already past their state check may still land; then none.
	time.Sleep(1500 * time.Millisecond)
	calls := updateCalls(north.fleet)
	time.Sleep(2 * time.Second)
	if after := updateCalls(north.fleet); after != calls {
		t.Fatalf("cn-north-4 made %d UpdateKeypair calls while halted", after-calls)
	}
	out, code, _ := enqueueCode(t, env, "status", "--json", st.Rotation)
	if code != 0 || !strings.Contains(out, `"state":"failed"`) || !strings.Contains(out, eastID) {
		t.Fatalf("status of the halted rotation: exit %d, %s", code, out)
	}

	enqueue(t, env, "cancel", st.Rotation)
	for _, id := range []string{northID, eastID} {
		waitFinished(t, r.Client(t), id, time.Minute)
	}
	insp := asynq.NewInspectorFromRedisClient(r.Client(t))
	deadline = time.Now().Add(30 * time.Second)
	for {
		whole, parts := 0, 0
		ts, err := insp.ListPendingTasks(tasks.QueueEvents, asynq.PageSize(100))
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range ts {
			var e tasks.Summary
			if err := json.Unmarshal(task.Payload, &e); err != nil {
				t.Fatal(err)
			}
			switch {
			case e.Rotation == st.Rotation:
				whole++
				// Halted, then cancelled: cancelled, or failed if
				// cn-east-3 ended on its own failures first.
				if len(e.Parts) != 2 || e.Parts[1].Rotation != eastID || e.State != tasks.StateCancelled && e.State != tasks.StateFailed {
					t.Errorf("the rotation's event %s: want it cancelled or failed, naming its parts", task.Payload)
				}
			case e.Group == st.Rotation:
				parts++
			}
		}
		if whole > 1 {
			t.Fatalf("%d events of the whole rotation, want one", whole)
		}
		if whole == 1 && parts == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("events: %d of the whole rotation, %d of its parts; want 1 and 2", whole, parts)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestConsoleRotationAcrossRegions drives a rotation over two regions from
// the console in headless Chromium, against a real worker: the list shows
// it as one row with a row a part, its page a table by region and project;
// pausing cn-east-3 there pauses it alone while cn-north-4 runs on, and
// resuming it lets the rotation finish, the page following by itself.
// With -update-docs its screenshot becomes docs/console.png.
func TestConsoleRotationAcrossRegions(t *testing.T) {
	r := testredis.Mini(t)
	env, list, north, east := twoRegions(t, r.URL(),
		cphsim.Options{Servers: 1200, Seed: 41, JobLatency: time.Second, JobJitter: 500 * time.Millisecond,
			UpdateKeypairQuota: 2, JobFailRate: 0.05, BadServerRate: 0.01},
		cphsim.Options{Servers: 600, Seed: 42, JobLatency: time.Second, JobJitter: 500 * time.Millisecond,
			UpdateKeypairQuota: 2, JobFailRate: 0.05, BadServerRate: 0.02})
	addr := freeAddr(t)
	startWorker(t, append(env, "REKEY_ADMIN_TOKEN="+adminToken), "--admin-addr", addr,
		"--submit-rate", "2/s:1")
	base := "http://" + addr
	waitHTTP(t, base+"/readyz")
	st := startRotation(t, env, "--chunk-size", "50", "--max-errors-total", "5%", list)
	id, eastID := st.Rotation, tasks.PartID(st.Rotation, 2)
	rdb := r.Client(t)
	ctx := testbrowser.New(t, adminToken, 3*time.Minute)
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	inPart := func(part int, state string) string {
		return fmt.Sprintf(`//table[@id="parts"]/tbody/tr[%d]//span[contains(@class,"state")][@data-state="%s"]`, part, state)
	}

	run("the list shows the rotation as one row with its parts", chromedp.Navigate(base+"/rotations/"),
		chromedp.WaitVisible(`//table[@id="rotations"]//tr[contains(@class,"group")]//a[text()="`+id+`"]`),
		chromedp.WaitVisible(`//table[@id="rotations"]//tr[contains(@class,"part")]//a[text()="`+eastID+`"]`),
		// The workers' own region is named, not "default".
		chromedp.WaitVisible(`//table[@id="rotations"]//tr[contains(@class,"part")]/td[text()="cn-north-4"]`))
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#rotations tbody tr").length`))
	if err != nil || rows != 3 {
		t.Fatalf("the list has %d rows (%v), want the rotation's and one a part", rows, err)
	}
	testbrowser.Shot(t, ctx, "regions-list.png")

	run("open it", chromedp.Click(`//a[text()="`+id+`"]`), chromedp.WaitVisible(`#parts`),
		chromedp.WaitVisible(inPart(1, "running")), chromedp.WaitVisible(inPart(2, "running")))
	// Far enough in for the page to have something to show.
	waitSubmitted(t, rdb, eastID, 150)
	run("pause cn-east-3", chromedp.Click(`#part-2-pause`), chromedp.WaitVisible(inPart(2, "paused")))
	if e, n := readRotation(t, rdb, eastID), readRotation(t, rdb, tasks.PartID(id, 1)); e.State != tasks.StatePaused || n.State != tasks.StateRunning {
		t.Fatalf("after pausing cn-east-3 in the page: cn-east-3 %s, cn-north-4 %s", e.State, n.State)
	}
	// cn-north-4 goes on while cn-east-3 waits.
	time.Sleep(time.Second)
	northCalls, eastCalls := updateCalls(north.fleet), updateCalls(east.fleet)
	time.Sleep(3 * time.Second)
	if updateCalls(north.fleet) == northCalls || updateCalls(east.fleet) != eastCalls {
		t.Fatalf("while cn-east-3 is paused: %d more UpdateKeypair calls in cn-north-4, %d in cn-east-3; want some, and none",
			updateCalls(north.fleet)-northCalls, updateCalls(east.fleet)-eastCalls)
	}
	shot := testbrowser.Shot(t, ctx, "regions-one-paused.png")
	if *updateDocs {
		png, err := os.ReadFile(shot)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("../docs/console.png", png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	run("resume cn-east-3", chromedp.Click(`#part-2-resume`), chromedp.WaitVisible(inPart(2, "running")))
	run("the final state", chromedp.WaitVisible(`//h1//span[contains(@class,"state")][@data-state="completed_with_errors"]`))
	rot := waitFinished(t, rdb, eastID, time.Minute)
	if rot.Counts.Failed == 0 || rot.Counts.Succeeded+rot.Counts.Failed != rot.Counts.Total {
		t.Fatalf("cn-east-3 ended %s %+v", rot.State, rot.Counts)
	}
	testbrowser.Shot(t, ctx, "regions-finished.png")
}

// TestRotationWideBudgetAcrossWorkers: --max-errors-total halts every part
// of a rotation over two regions once the failures across them are past
// it, none past its own budget, whichever of two worker processes
// recorded them; resume --max-errors-total lifts it and the rotation ends.
func TestRotationWideBudgetAcrossWorkers(t *testing.T) {
	r := testredis.Mini(t)
	env, list, _, _ := twoRegions(t, r.URL(),
		cphsim.Options{Servers: 150, Seed: 51, JobLatency: 200 * time.Millisecond, BadServerRate: 0.05},
		cphsim.Options{Servers: 100, Seed: 52, JobLatency: 200 * time.Millisecond, BadServerRate: 0.1})
	st := startRotation(t, env, "--chunk-size", "10", "--max-errors", "100%", "--max-errors-total", "4", list)
	rates := []string{"--submit-rate", "cn-north-4=1/s:1,20/s:1"}
	startWorker(t, env, rates...)
	startWorker(t, env, rates...)

	store := tasks.NewStore(r.Client(t), "")
	ctx := context.Background()
	deadline := time.Now().Add(time.Minute)
	for {
		g, err := store.Group(ctx, st.Rotation)
		if err != nil {
			t.Fatal(err)
		}
		n, err := store.Rotation(ctx, tasks.PartID(st.Rotation, 1))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(g.Halted, "rotation-wide error budget exceeded") && n.Halted() {
			if !tasks.HaltedByGroup(n) || n.Counts.Pending == 0 {
				t.Fatalf("cn-north-4 %q %+v: want it halted by its rotation with servers left", n.Reason, n.Counts)
			}
			break
		}
		if n.Finished() || time.Now().After(deadline) {
			t.Fatalf("group halted %q, cn-north-4 %s: want both halted by the rotation-wide budget", g.Halted, n.State)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, code, stderr := enqueueCode(t, env, "resume", st.Rotation); code == 0 || !strings.Contains(stderr, "--max-errors-total") {
		t.Fatalf("resume within the exceeded budget: exit %d, %s; want it refused", code, stderr)
	}
	enqueue(t, env, "resume", "--max-errors-total", "100%", st.Rotation)
	for i := 1; i <= 2; i++ {
		rot := waitFinished(t, r.Client(t), tasks.PartID(st.Rotation, i), time.Minute)
		if rot.State != tasks.StateCompletedWithErrors || rot.Counts.Succeeded+rot.Counts.Failed != rot.Counts.Total {
			t.Fatalf("part %d ended %s %+v", i, rot.State, rot.Counts)
		}
	}
}
