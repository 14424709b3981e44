package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/reconcile"
	"github.com/anycloud/anycloud/state"
)

// ApplyOptions are the options of `anycloud apply`.
type ApplyOptions struct {
	f          *Factory
	Files      []string
	Recursive  bool
	DryRun     bool
	Wait       bool
	Timeout    time.Duration
	Prune      bool
	ApplySet   string
	AllowEmpty bool
}

// NewCmdApply builds `anycloud apply`.
func NewCmdApply(f *Factory, runF func(*ApplyOptions) error) *cobra.Command {
	o := &ApplyOptions{f: f}
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|- [-R] [--dry-run] [--wait] [--timeout 10m]",
		Short: "Create or update objects from manifests",
		Long: `Create or update Deployments, SecretBundles and Credentials from YAML
manifests: files, directories (-R descends into subdirectories) or - for
standard input. Every object is written in one transaction: when any
document is invalid, nothing is written and every problem is reported.

SecretBundle values named in spec.fromEnv are read from this process's
environment; spec.stringData is accepted with a warning.`,
		Example: `  anycloud apply -f examples/quickstart
  anycloud apply -f train.yaml --wait
  cat app.yaml | anycloud apply -f -`,
		Args: exactArgs(0, "no arguments (use -f)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Validate(); err != nil {
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
	cmd.Flags().BoolVar(&o.DryRun, "dry-run", false, "validate and show what would change; write nothing")
	cmd.Flags().BoolVar(&o.Wait, "wait", false, "wait until every applied deployment is Ready")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 10*time.Minute, "how long --wait waits")
	bindApplySetFlags(cmd, &o.Prune, &o.ApplySet, &o.AllowEmpty)
	return cmd
}

func bindApplySetFlags(cmd *cobra.Command, prune *bool, set *string, allowEmpty *bool) {
	cmd.Flags().BoolVar(prune, "prune", false, "delete the objects of the apply set that the source no longer holds")
	cmd.Flags().StringVar(set, "apply-set", "", "name of the apply set (default: derived from the source paths)")
	cmd.Flags().BoolVar(allowEmpty, "allow-empty", false, "let --prune with a source that holds no objects delete the whole set")
}

// Validate checks the options alone.
func (o *ApplyOptions) Validate() error {
	if len(o.Files) == 0 {
		return usageErrorf("apply: -f FILE|DIR|- is required")
	}
	if o.Wait && o.DryRun {
		return usageErrorf("apply: --wait and --dry-run do not go together")
	}
	return validateApplySet(o.Files, o.Prune, o.ApplySet)
}

func validateApplySet(files []string, prune bool, set string) error {
	if prune && set == "" && slices.Contains(files, "-") {
		return usageErrorf("--prune with standard input needs --apply-set NAME")
	}
	return nil
}

// applySetName is --apply-set or the default derived from the sources
// and whether they are read recursively.
func applySetName(files []string, recursive bool, set string) string {
	if set != "" {
		return set
	}
	return manifests.DefaultApplySet(files, recursive)
}

// Run loads, resolves and applies.
func (o *ApplyOptions) Run(ctx context.Context) error {
	streams := o.f.IO
	req, err := loadApplyRequest(o.f, o.Files, o.Recursive, o.Prune, o.ApplySet, o.AllowEmpty)
	if err != nil {
		return err
	}
	c, err := o.f.Client(ctx)
	if err != nil {
		return err
	}
	req.DryRun = o.DryRun
	resp, err := c.Apply(ctx, *req)
	if err != nil {
		return err
	}
	if o.DryRun {
		printPlan(streams.Out, resp)
		printWarnings(o.f, resp)
		return nil
	}
	printApplyResponse(o.f, resp, false)
	if !o.Wait {
		return nil
	}
	var names []string
	for _, r := range resp.Results {
		if r.Ref.Kind == manifests.KindDeployment && r.Action != state.ActionPruned {
			names = append(names, r.Ref.Name)
		}
	}
	return waitReady(ctx, o.f, c, names, o.Timeout)
}

// loadApplyRequest reads the sources into an apply request: every problem
// in every file is reported at once and nothing is sent.
func loadApplyRequest(f *Factory, files []string, recursive, prune bool, set string, allowEmpty bool) (*api.ApplyRequest, error) {
	docs, err := manifests.Load(files, manifests.LoadOptions{Recursive: recursive, Stdin: f.IO.In})
	if err != nil {
		return nil, err
	}
	if len(docs) == 0 && !prune {
		return nil, fmt.Errorf("no objects found in %v", files)
	}
	items, warnings, err := api.ItemsFromDocuments(docs, f.IO.Getenv)
	for _, w := range warnings {
		fmt.Fprintln(f.IO.ErrOut, "Warning:", w)
	}
	if err != nil {
		return nil, err
	}
	return &api.ApplyRequest{Items: items, ApplySet: applySetName(files, recursive, set), Prune: prune, AllowEmpty: allowEmpty}, nil
}

func printApplyResponse(f *Factory, resp *api.ApplyResponse, dryRun bool) {
	suffix := ""
	if dryRun {
		suffix = " (dry run)"
	}
	for _, r := range resp.Results {
		action := r.Action
		if r.Action == state.ActionPruned && r.Terminating {
			action += " (terminating until what holds it is gone)"
		}
		fmt.Fprintf(f.IO.Out, "%s %s%s\n", refName(r.Ref), action, suffix)
	}
	printWarnings(f, resp)
}

func printWarnings(f *Factory, resp *api.ApplyResponse) {
	for _, w := range resp.Warnings {
		fmt.Fprintln(f.IO.ErrOut, "Warning:", w)
	}
}

// printPlan writes what an apply would do, field by field, and returns
// how many objects would change.
func printPlan(w io.Writer, resp *api.ApplyResponse) int {
	var create, update, prune, same int
	for _, r := range resp.Results {
		switch r.Action {
		case state.ActionCreated:
			create++
			fmt.Fprintf(w, "+ %s (create)\n", refName(r.Ref))
			for _, c := range r.Changes {
				fmt.Fprintf(w, "    + %s: %s\n", c.Path, c.New)
			}
		case state.ActionConfigured:
			update++
			fmt.Fprintf(w, "~ %s (update)\n", refName(r.Ref))
			for _, c := range r.Changes {
				switch {
				case c.Old == "":
					fmt.Fprintf(w, "    + %s: %s\n", c.Path, c.New)
				case c.New == "":
					fmt.Fprintf(w, "    - %s: %s\n", c.Path, c.Old)
				default:
					fmt.Fprintf(w, "    ~ %s: %s -> %s\n", c.Path, c.Old, c.New)
				}
			}
		case state.ActionPruned:
			prune++
			note := ""
			if r.Terminating {
				note = ", waits until what holds it is gone"
			}
			fmt.Fprintf(w, "- %s (prune%s)\n", refName(r.Ref), note)
		default:
			same++
		}
	}
	fmt.Fprintf(w, "Plan: %d to create, %d to update, %d to prune, %d unchanged.\n", create, update, prune, same)
	return create + update + prune
}

// missingBundlesError fails a wait at once when the deployment cannot get
// a VM because bundles it names do not exist: waiting would only run out
// the timeout. The condition says SecretBundleNotFound; the bundles are
// looked up to be sure it is not a condition from before they were made.
func missingBundlesError(ctx context.Context, c *api.Client, d *manifests.Deployment) error {
	rc := manifests.FindCondition(d.Status.Conditions, manifests.ConditionReady)
	if rc == nil || rc.Reason != reconcile.ReasonSecretBundleNotFound {
		return nil
	}
	var missing []string
	for _, b := range d.Spec.Secrets {
		if _, err := c.Get(ctx, manifests.KindSecretBundle, b); errors.Is(err, state.ErrNotFound) {
			missing = append(missing, b)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	what := "no VM is created until they exist"
	if d.Status.VM != nil {
		what = fmt.Sprintf("VM %s keeps running, and is replaced once they exist", d.Status.VM.ID)
	}
	return fmt.Errorf("deployment %s: secret bundle(s) %s not found: %s (make them with `anycloud secrets new NAME KEY=VALUE` or apply their manifests)", d.Metadata.Name, strings.Join(missing, ", "), what)
}

// waitReady waits until every named deployment is Ready for its current
// generation, printing progress as phases change.
func waitReady(ctx context.Context, f *Factory, c *api.Client, names []string, timeout time.Duration) error {
	if len(names) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	last := map[string]string{}
	ready := map[string]bool{}
	errDone := errors.New("done")
	err := c.Watch(ctx, manifests.KindDeployment, func(ev state.WatchEvent) error {
		d := ev.Object.(*manifests.Deployment)
		name := d.Metadata.Name
		if !want[name] {
			return nil
		}
		if ev.Type == state.Deleted {
			return fmt.Errorf("deployment %s was deleted while waiting", name)
		}
		line := phaseOf(d) + " " + readiness(d)
		if last[name] != line {
			last[name] = line
			msg := ""
			if rc := manifests.FindCondition(d.Status.Conditions, manifests.ConditionReady); rc != nil && rc.Message != "" {
				msg = ": " + rc.Message
			}
			fmt.Fprintf(f.IO.ErrOut, "deployment/%s: %s%s\n", name, phaseOf(d), msg)
		}
		rc := manifests.FindCondition(d.Status.Conditions, manifests.ConditionReady)
		ready[name] = rc != nil && rc.Status == manifests.ConditionTrue && d.Status.ObservedGeneration >= d.Metadata.Generation
		if st := manifests.FindCondition(d.Status.Conditions, manifests.ConditionStalled); st != nil && st.Status == manifests.ConditionTrue {
			return fmt.Errorf("deployment %s is stalled: %s: %s", name, st.Reason, st.Message)
		}
		if err := missingBundlesError(ctx, c, d); err != nil {
			return err
		}
		for n := range want {
			if !ready[n] {
				return nil
			}
		}
		return errDone
	})
	if errors.Is(err, errDone) {
		fmt.Fprintf(f.IO.ErrOut, "all %d deployment(s) ready\n", len(names))
		return nil
	}
	if err == nil || errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		var pending []string
		for _, n := range names {
			if !ready[n] {
				pending = append(pending, n)
			}
		}
		return fmt.Errorf("timed out after %s waiting for %v to be Ready (see `anycloud describe deployment NAME`)", timeout, pending)
	}
	return err
}
