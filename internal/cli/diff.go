package cli

import (
	"context"

	"github.com/spf13/cobra"
)

// DiffOptions are the options of `anycloud diff`.
type DiffOptions struct {
	f          *Factory
	Files      []string
	Recursive  bool
	Prune      bool
	ApplySet   string
	AllowEmpty bool
}

// NewCmdDiff builds `anycloud diff`.
func NewCmdDiff(f *Factory, runF func(*DiffOptions) error) *cobra.Command {
	o := &DiffOptions{f: f}
	cmd := &cobra.Command{
		Use:   "diff -f FILE|DIR [-R] [--prune] [--apply-set NAME]",
		Short: "Show what apply would do: create, update (field by field), prune, unchanged",
		Long: `Show the plan of an apply without writing anything: objects to create, to
update (with a field-level diff of labels, annotations and spec), to prune
(with --prune) and unchanged. Secret values are never shown: a bundle's plan
names keys added or removed and says when values changed.

Exit status, as kubectl diff: 0 when there is nothing to do, 1 when there is,
2 or more on an error.`,
		Example: `  anycloud diff -f deploy/ --prune`,
		Args:    exactArgs(0, "no arguments (use -f)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(o.Files) == 0 {
				return usageErrorf("diff: -f FILE|DIR|- is required")
			}
			if err := validateApplySet(o.Files, o.Prune, o.ApplySet); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringSliceVarP(&o.Files, "filename", "f", nil, "manifest file, directory, or - for stdin (repeatable)")
	cmd.Flags().BoolVarP(&o.Recursive, "recursive", "R", false, "descend into subdirectories")
	bindApplySetFlags(cmd, &o.Prune, &o.ApplySet, &o.AllowEmpty)
	return cmd
}

// Run prints the plan. Changes found end with exit status 1;
// any failure is exit status 2.
func (o *DiffOptions) Run(ctx context.Context) error {
	n, err := o.plan(ctx)
	if err != nil {
		return &ExitError{Code: 2, Err: err}
	}
	if n > 0 {
		return &ExitError{Code: 1}
	}
	return nil
}

func (o *DiffOptions) plan(ctx context.Context) (int, error) {
	req, err := loadApplyRequest(o.f, o.Files, o.Recursive, o.Prune, o.ApplySet, o.AllowEmpty)
	if err != nil {
		return 0, err
	}
	c, err := o.f.Client(ctx)
	if err != nil {
		return 0, err
	}
	req.DryRun = true
	resp, err := c.Apply(ctx, *req)
	if err != nil {
		return 0, err
	}
	n := printPlan(o.f.IO.Out, resp)
	printWarnings(o.f, resp)
	return n, nil
}
