package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// ApplyOptions are the options of `anycloud apply`.
type ApplyOptions struct {
	f         *Factory
	Files     []string
	Recursive bool
	DryRun    bool
	Wait      bool
	Timeout   time.Duration
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
	return cmd
}

// Validate checks the options alone.
func (o *ApplyOptions) Validate() error {
	if len(o.Files) == 0 {
		return usageErrorf("apply: -f FILE|DIR|- is required")
	}
	if o.Wait && o.DryRun {
		return usageErrorf("apply: --wait and --dry-run do not go together")
	}
	return nil
}

// Run loads, resolves and applies.
func (o *ApplyOptions) Run(ctx context.Context) error {
	io := o.f.IO
	docs, err := manifests.Load(o.Files, manifests.LoadOptions{Recursive: o.Recursive, Stdin: io.In})
	if err != nil {
		return err
	}
	if len(docs) == 0 {
		return fmt.Errorf("no objects found in %v", o.Files)
	}
	items, warnings, err := resolveDocuments(docs, io.Getenv)
	for _, w := range warnings {
		fmt.Fprintln(io.ErrOut, "Warning:", w)
	}
	if err != nil {
		return err
	}
	c, err := o.f.Client(ctx)
	if err != nil {
		return err
	}
	resp, err := c.Apply(ctx, api.ApplyRequest{Items: items, DryRun: o.DryRun})
	if err != nil {
		return err
	}
	printApplyResponse(o.f, resp, o.DryRun)
	if !o.Wait {
		return nil
	}
	var names []string
	for _, r := range resp.Results {
		if r.Ref.Kind == manifests.KindDeployment {
			names = append(names, r.Ref.Name)
		}
	}
	return waitReady(ctx, o.f, c, names, o.Timeout)
}

func printApplyResponse(f *Factory, resp *api.ApplyResponse, dryRun bool) {
	suffix := ""
	if dryRun {
		suffix = " (dry run)"
	}
	for _, r := range resp.Results {
		fmt.Fprintf(f.IO.Out, "%s %s%s\n", refName(r.Ref), r.Action, suffix)
	}
	for _, w := range resp.Warnings {
		fmt.Fprintln(f.IO.ErrOut, "Warning:", w)
	}
}

// resolveDocuments turns decoded documents into apply items: a bundle's
// fromEnv names are read from the environment here, on the applying
// machine, and its stringData values move out of the object into the
// item's secrets. Every problem is reported at once, naming the file,
// document and field; a value is never part of a message.
func resolveDocuments(docs []manifests.Document, getenv func(string) string) ([]api.ApplyItem, []string, error) {
	var (
		items    []api.ApplyItem
		warnings []string
		errs     manifests.ErrorList
	)
	for i := range docs {
		d := &docs[i]
		var secrets map[string]string
		obj := d.Object
		switch o := obj.(type) {
		case *manifests.SecretBundle:
			o = manifests.DeepCopy(o)
			secrets = map[string]string{}
			for j, k := range o.Spec.FromEnv {
				v, ok := lookupEnv(getenv, k)
				if !ok {
					errs = append(errs, d.Locate(&manifests.FieldError{Field: fmt.Sprintf("spec.fromEnv[%d]", j), Msg: fmt.Sprintf("environment variable %s is not set (fromEnv reads the applying process's environment)", k)}))
					continue
				}
				secrets[k] = v
			}
			if len(o.Spec.StringData) > 0 {
				e := d.Locate(&manifests.FieldError{Field: "spec.stringData", Msg: "plaintext secret values in a file; prefer fromEnv or `anycloud secrets seal`"})
				warnings = append(warnings, e.Error())
				for k, v := range o.Spec.StringData {
					secrets[k] = v
				}
				o.Spec.StringData = nil
			}
			obj = o
		case *manifests.Credentials:
			if a := o.Spec.AWS; a != nil && a.SecretAccessKeyFromEnv != "" {
				v, ok := lookupEnv(getenv, a.SecretAccessKeyFromEnv)
				if !ok {
					errs = append(errs, d.Locate(&manifests.FieldError{Field: "spec.aws.secretAccessKeyFromEnv", Msg: fmt.Sprintf("environment variable %s is not set", a.SecretAccessKeyFromEnv)}))
					break
				}
				secrets = map[string]string{"secretAccessKey": v}
			}
		}
		raw, err := json.Marshal(obj)
		if err != nil {
			return nil, warnings, err
		}
		items = append(items, api.ApplyItem{Object: raw, Secrets: secrets, Source: &api.Source{File: d.File, Doc: d.Index, Line: d.Line}})
	}
	return items, warnings, errs.Err()
}

// lookupEnv treats an empty variable as unset: an empty secret is almost
// always a mistake.
func lookupEnv(getenv func(string) string, k string) (string, bool) {
	v := getenv(k)
	return v, v != ""
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
