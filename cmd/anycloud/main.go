// Command anycloud deploys container workloads onto cloud VMs. See
// README.md, or run anycloud --help.
package main

import (
	"context"
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
	if msg := cli.Message(err); msg != "" {
		fmt.Fprintln(os.Stderr, "error:", msg)
	}
	os.Exit(cli.ExitCode(err))
}
