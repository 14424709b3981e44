package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// chromiumPaths are where Debian's chromium-headless-shell package (and
// the full chromium package) put the browser.
var chromiumPaths = []string{
	"/usr/bin/chromium-headless-shell",
	"/usr/lib/chromium/chromium-headless-shell",
	"/usr/bin/chromium",
}

// RequireChromium returns the path of a headless Chromium for browser
// tests: $ANYCLOUD_CHROMIUM when set, else the Debian package's. The
// path is always explicit: chromedp's own search would find some other
// browser on a developer's machine.
func RequireChromium(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("ANYCLOUD_CHROMIUM"); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			Missing(t, "ANYCLOUD_CHROMIUM="+p+" is not an executable: "+err.Error())
		}
		return p
	}
	for _, p := range chromiumPaths {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	Missing(t, "headless Chromium not found (apt-get install chromium-headless-shell, or set ANYCLOUD_CHROMIUM)")
	return ""
}
