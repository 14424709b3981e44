package cli

import (
	"context"

	"github.com/spf13/cobra"
)

// LogsOptions are the options of `anycloud logs`.
type LogsOptions struct {
	f      *Factory
	Name   string
	Follow bool
}

// NewCmdLogs builds `anycloud logs`.
func NewCmdLogs(f *Factory, runF func(*LogsOptions) error) *cobra.Command {
	o := &LogsOptions{f: f}
	cmd := &cobra.Command{
		Use:   "logs NAME [-f]",
		Short: "Print the workload log of a deployment's current VM",
		Example: `  anycloud logs hello
  anycloud logs train -f`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			if runF != nil {
				return runF(o)
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().BoolVarP(&o.Follow, "follow", "f", false, "stream the log until interrupted")
	return cmd
}

// Run copies the log to stdout.
func (o *LogsOptions) Run(ctx context.Context) error {
	c, err := o.f.Client(ctx)
	if err != nil {
		return err
	}
	return c.Logs(ctx, o.Name, o.Follow, o.f.IO.Out)
}
