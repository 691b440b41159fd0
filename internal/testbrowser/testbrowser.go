// Package testbrowser starts headless Chromium for tests of the web pages
// the worker serves, and saves screenshots where a person can look at them.
//
// Tests that use it skip, saying why, when Chromium is not installed (CI
// installs it: apt-get install chromium) or in -short mode.
package testbrowser

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// ChromiumPath is where Debian's chromium package puts the browser.
const ChromiumPath = "/usr/bin/chromium"

// New starts a headless Chromium for t and returns a tab's context, bounded
// by timeout (a bound against hanging, not a speed check). With a token,
// every request carries it as basic auth: Chromium drops credentials given
// in a URL for the page's subresources and fetches.
func New(t *testing.T, token string, timeout time.Duration) context.Context {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	if _, err := os.Stat(ChromiumPath); err != nil {
		t.Skipf("no Chromium at %s (%v): browser test skipped; CI installs it with apt-get install chromium", ChromiumPath, err)
	}
	alloc, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(ChromiumPath),
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
		chromedp.WindowSize(1280, 1000),
	)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(alloc, chromedp.WithErrorf(t.Logf))
	t.Cleanup(cancel)
	ctx, cancel = context.WithTimeout(ctx, timeout)
	t.Cleanup(cancel)
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	if token != "" {
		auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("operator:"+token))
		if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
			Headers: network.Headers{"Authorization": auth},
		}); err != nil {
			t.Fatalf("set the Authorization header: %v", err)
		}
	}
	return ctx
}

// Shot saves a full-page screenshot of the tab as name in the test's
// artifact directory (kept with go test -artifacts) and logs its path.
func Shot(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	return save(t, name, png)
}

// ShotOf saves a screenshot of the element sel (a CSS selector) alone, as
// Shot does: a part of a page a document shows.
func ShotOf(t *testing.T, ctx context.Context, sel, name string) string {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("screenshot %s of %s: %v", name, sel, err)
	}
	return save(t, name, png)
}

func save(t *testing.T, name string, png []byte) string {
	t.Helper()
	path := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("save screenshot: %v", err)
	}
	t.Logf("screenshot: %s", path)
	return path
}
