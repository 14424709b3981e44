// Command anycloud deploys container workloads onto cloud VMs. See
// README.md, or run anycloud --help.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"

	"github.com/anycloud/anycloud/internal/cli"
)

func main() {
	f := &cli.Factory{IO: cli.SystemIO()}
	// Ctrl-C ends `get -w`, `apply --wait` and friends cleanly.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := cli.NewRootCmd(f).ExecuteContext(ctx)
	stop()
	var exit *cli.ExitError
	if err != nil && !errors.Is(err, cli.ErrSilent) && !errors.As(err, &exit) {
		fmt.Fprintln(os.Stderr, "error:", err)
	}
	os.Exit(cli.ExitCode(err))
}
