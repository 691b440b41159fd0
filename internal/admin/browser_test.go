package admin

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// chromiumPath is where Debian's chromium package puts the browser; CI
// installs it (apt-get install chromium).
const chromiumPath = "/usr/bin/chromium"

// TestBrowserShowsQueues opens the web UI in headless Chromium, logged in
// with basic auth, and waits for the dashboard to list the rekey-submit
// queue; it leaves a screenshot in the test's artifact directory (kept
// with go test -artifacts).
func TestBrowserShowsQueues(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("no Chromium at %s (%v): browser test skipped; CI installs it with apt-get install chromium", chromiumPath, err)
	}
	r := miniWithTasks(t)
	_, base := start(t, Options{Token: testToken, ReadOnly: true, RedisConnOpt: r.ConnOpt()})

	alloc, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(alloc, chromedp.WithErrorf(t.Logf))
	t.Cleanup(cancel)
	// A generous bound, not a speed check: a slow shared machine still
	// passes, a UI that never shows the queue fails instead of hanging.
	ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(cancel)

	// Chromium drops credentials given in the URL for the page's
	// subresources, so send the header with every request instead.
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("operator:"+testToken))
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Authorization": auth},
	}); err != nil {
		t.Fatalf("set the Authorization header: %v", err)
	}
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/monitoring/"),
		chromedp.WaitVisible(`//table//*[text()="rekey-submit"]`),
	); err != nil {
		t.Fatalf("web UI in Chromium: %v", err)
	}
	shot(t, ctx, "queues.png")

	// The queue's pending tasks, with payloads shown by FormatJSON.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/monitoring/queues/rekey-submit?status=pending"),
		chromedp.WaitVisible(`//table//*[contains(text(), "r-demo")]`),
	); err != nil {
		t.Fatalf("pending tasks in Chromium: %v", err)
	}
	shot(t, ctx, "pending-tasks.png")
}

// shot saves a screenshot of the tab in the test's artifact directory.
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("save screenshot: %v", err)
	}
	t.Logf("screenshot of the web UI: %s", path)
}

// miniWithTasks is a miniredis holding tasks in all three queues.
func miniWithTasks(t *testing.T) *testredis.Redis {
	t.Helper()
	r := testredis.Mini(t)
	for i := range 5 {
		enqueue(t, r, "rekey-submit", "rotation:submit", fmt.Sprintf(`{"rotation":"r-demo","chunk":%d,"attempt":1,"servers":50}`, i))
	}
	enqueue(t, r, "rekey-poll", "rotation:poll", `{"rotation":"r-demo","chunk":0,"attempt":1,"round":3}`)
	enqueue(t, r, "rekey-events", "rotation:finished", `{"rotation":"r-old","state":"finished","counts":{"succeeded":100}}`)
	return r
}
