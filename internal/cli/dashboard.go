package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/anycloud/anycloud/dashboard"
)

// DashboardOptions are the options of `anycloud dashboard`.
type DashboardOptions struct {
	f        *Factory
	PrintURL bool
	// Open shows a local file in the user's browser; openInBrowser when
	// nil.
	Open func(ctx context.Context, path string) error
}

// NewCmdDashboard builds `anycloud dashboard`.
func NewCmdDashboard(f *Factory, runF func(*DashboardOptions) error) *cobra.Command {
	o := &DashboardOptions{f: f}
	cmd := &cobra.Command{
		Use:   "dashboard [--print-url]",
		Short: "Open the web dashboard served by the control plane",
		Long: `Open the dashboard in your browser: deployments updating live, each one's
spec, conditions, events and VM timeline, secret bundles (key names only),
credentials (never a key), GitOps sources, and recovery times; resubmit and
delete behind a confirmation.

The control plane serves it on 127.0.0.1. Each run mints a sign-in link that
works once, within two minutes, and gives the browser a session cookie;
nothing is served without it. --print-url prints the link instead of
opening it (it is a credential until used: do not paste it anywhere else).`,
		Example: `  anycloud dashboard
  anycloud dashboard --print-url`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(o)
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().BoolVar(&o.PrintURL, "print-url", false, "print the one-time sign-in link instead of opening a browser")
	return cmd
}

// Run mints a sign-in link and opens or prints it.
func (o *DashboardOptions) Run(ctx context.Context) error {
	c, err := o.f.Client(ctx)
	if err != nil {
		return err
	}
	t, err := c.DashboardTicket(ctx)
	if err != nil {
		return fmt.Errorf("get a dashboard link: %w", err)
	}
	valid := time.Until(t.ExpiresAt).Round(time.Second)
	if o.PrintURL {
		fmt.Fprintln(o.f.IO.Out, t.URL)
		fmt.Fprintf(o.f.IO.ErrOut, "The link signs in one browser, once, within %s.\n", valid)
		return nil
	}
	home, err := o.f.HomeDir()
	if err != nil {
		return err
	}
	path, err := dashboard.WriteLauncher(home, t.URL)
	if err != nil {
		return err
	}
	open := o.Open
	if open == nil {
		open = o.openInBrowser
	}
	if err := open(ctx, path); err != nil {
		fmt.Fprintf(o.f.IO.ErrOut, "Could not open a browser (%v). Open this link, which signs in once within %s:\n", err, valid)
		fmt.Fprintln(o.f.IO.Out, t.URL)
		return nil
	}
	base := t.URL
	if u, err := url.Parse(t.URL); err == nil {
		base = u.Scheme + "://" + u.Host + "/"
	}
	fmt.Fprintf(o.f.IO.Out, "Opened the dashboard at %s in your browser.\n", base)
	return nil
}

// openInBrowser starts $BROWSER, else the desktop's opener, with path and
// does not wait for it: a browser started fresh may run until it is
// closed.
func (o *DashboardOptions) openInBrowser(ctx context.Context, path string) error {
	var argv []string
	if b := strings.TrimSpace(o.f.IO.Getenv("BROWSER")); b != "" {
		// $BROWSER may list several, separated by colons; the first is
		// tried.
		argv = append(strings.Fields(strings.Split(b, ":")[0]), path)
	} else if runtime.GOOS == "darwin" {
		argv = []string{"open", path}
	} else {
		argv = []string{"xdg-open", path}
	}
	exe, err := exec.LookPath(argv[0])
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("%s is not installed; set BROWSER", argv[0])
		}
		return err
	}
	cmd := exec.Command(exe, argv[1:]...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	go cmd.Wait()
	return nil
}
