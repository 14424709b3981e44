package dashboard

import (
	"fmt"
	"html/template"
	"os"
	"path/filepath"
	"strings"
)

// LauncherFile is the launcher's name inside the home directory.
const LauncherFile = "dashboard.html"

var launcher = template.Must(template.New("launcher").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="0;url={{.}}">
<title>anycloud dashboard</title></head>
<body><p>Opening <a href="{{.}}">the anycloud dashboard</a>…</p></body></html>
`))

// WriteLauncher writes a local page (mode 0600) that forwards a browser
// to a sign-in link, and returns its path. A browser is started with the
// path of this file, not the link: a process's arguments can be read by
// every user of the machine, a file in the 0700 home cannot. The link in
// it works once and expires within TicketTTL.
func WriteLauncher(home, link string) (string, error) {
	if !strings.HasPrefix(link, "http://127.0.0.1:") && !strings.HasPrefix(link, "http://[::1]:") {
		return "", fmt.Errorf("dashboard link %q is not on a loopback address", link)
	}
	path := filepath.Join(home, LauncherFile)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", fmt.Errorf("write the dashboard launcher: %w", err)
	}
	// An older file may have had a looser mode.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return "", fmt.Errorf("write the dashboard launcher: %w", err)
	}
	if err := launcher.Execute(f, link); err != nil {
		f.Close()
		return "", fmt.Errorf("write the dashboard launcher: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write the dashboard launcher: %w", err)
	}
	return path, nil
}
