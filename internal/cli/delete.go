package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// DeleteOptions are the options of `anycloud delete`.
type DeleteOptions struct {
	f              *Factory
	Files          []string
	Recursive      bool
	Kind           manifests.Kind
	Name           string
	Force          bool
	Wait           bool
	Timeout        time.Duration
	IgnoreNotFound bool
}

// NewCmdDelete builds `anycloud delete`.
func NewCmdDelete(f *Factory, runF func(*DeleteOptions) error) *cobra.Command {
	o := &DeleteOptions{f: f}
	cmd := &cobra.Command{
		Use:   "delete -f FILE|DIR [-R] | delete KIND NAME [--force] [--wait]",
		Short: "Delete objects",
		Long: `Delete the objects in manifests, or one object by kind and name.

Deployments are deleted first; a deployment stays Terminating until its VM is
gone. With -f, a SecretBundle or Credentials object that deployments still
use stays Terminating until the last of them is gone, then disappears: so
deleting a deployment and its bundle together just works. By name, deleting
one in use is refused (exit status 3) listing its users.

--force says what it leaves behind. A bundle is deleted at once, even in
use (running VMs keep their values; their next VM creation waits for it).
Credentials in use are kept, Terminating, until their users are gone:
nothing else can terminate those VMs. A deployment is removed at once,
without waiting for its VM (for a cloud that cannot be reached, such as
credentials that never worked): the VM, if any, is recorded on its
credentials, which are kept until the orphan sweep has terminated it.`,
		Example: `  anycloud delete -f examples/quickstart
  anycloud delete deploy train --wait
  anycloud delete sb hf --force`,
		Args: rangeArgs(0, 2, "KIND NAME, or -f FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 2 {
				k, err := manifests.ParseKind(args[0])
				if err != nil {
					return usage(err)
				}
				o.Kind, o.Name = k, args[1]
			} else if len(args) == 1 {
				return usageErrorf("delete: want KIND NAME, got only %q", args[0])
			}
			if err := o.Validate(); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringSliceVarP(&o.Files, "filename", "f", nil, "manifest file, directory, or - for stdin")
	cmd.Flags().BoolVarP(&o.Recursive, "recursive", "R", false, "descend into subdirectories")
	cmd.Flags().BoolVar(&o.Force, "force", false, "deployments: at once, without waiting for the VM; bundles: even while in use; credentials in use: when their users are gone")
	cmd.Flags().BoolVar(&o.Wait, "wait", false, "wait until the objects are gone")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 10*time.Minute, "how long --wait waits")
	cmd.Flags().BoolVar(&o.IgnoreNotFound, "ignore-not-found", false, "treat objects that do not exist as deleted")
	return cmd
}

// Validate checks the options alone.
func (o *DeleteOptions) Validate() error {
	switch {
	case len(o.Files) > 0 && o.Name != "":
		return usageErrorf("delete: use either -f or KIND NAME, not both")
	case len(o.Files) == 0 && o.Name == "":
		return usageErrorf("delete: want -f FILE|DIR or KIND NAME")
	}
	return nil
}

// Run deletes.
func (o *DeleteOptions) Run(ctx context.Context) error {
	var refs []manifests.ObjectRef
	if o.Name != "" {
		refs = []manifests.ObjectRef{{Kind: o.Kind, Name: o.Name}}
	} else {
		docs, err := manifests.Load(o.Files, manifests.LoadOptions{Recursive: o.Recursive, Stdin: o.f.IO.In})
		if err != nil {
			return err
		}
		for _, d := range docs {
			refs = append(refs, manifests.Ref(d.Object))
		}
	}
	// Users before what they use: deployments, then bundles, then
	// credentials.
	slices.SortStableFunc(refs, func(a, b manifests.ObjectRef) int {
		return slices.Index(manifests.Kinds, b.Kind) - slices.Index(manifests.Kinds, a.Kind)
	})
	c, err := o.f.Client(ctx)
	if err != nil {
		return err
	}
	var (
		errs    []error
		pending []manifests.ObjectRef
	)
	for _, r := range refs {
		// Deleting through manifests is declarative (a bundle in use waits,
		// Terminating, for its users); by name it is not: a bundle or
		// credentials in use is refused (exit 3) unless --force.
		res, err := c.DeleteWithResult(ctx, r.Kind, r.Name, state.DeleteOptions{Declarative: len(o.Files) > 0, Force: o.Force})
		switch {
		case errors.Is(err, state.ErrNotFound) && o.IgnoreNotFound:
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", refName(r), err))
			continue
		case o.Force:
			fmt.Fprintln(o.f.IO.Out, forcedDeleteMessage(r, res))
			if !res.Deleted {
				pending = append(pending, r)
			}
		case res.Deleted:
			fmt.Fprintf(o.f.IO.Out, "%s deleted\n", refName(r))
		default:
			fmt.Fprintf(o.f.IO.Out, "%s terminating (%s)\n", refName(r), o.why(ctx, c, r))
			pending = append(pending, r)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if o.Wait {
		return waitGone(ctx, o.f, c, pending, o.Timeout)
	}
	return nil
}

// forcedDeleteMessage says what a forced delete did and what it left
// behind, so that nothing is left without the user knowing.
func forcedDeleteMessage(r manifests.ObjectRef, res api.DeleteResponse) string {
	names := func(refs []manifests.ObjectRef) string {
		var n []string
		for _, u := range refs {
			n = append(n, u.Name)
		}
		return strings.Join(n, ", ")
	}
	switch {
	case r.Kind == manifests.KindDeployment && res.Leftover != nil:
		l := res.Leftover
		vm := "the VM of its launch under way"
		if l.VMID != "" {
			vm = "VM " + l.VMID
		}
		var d manifests.Deployment
		creds := "its credentials"
		if json.Unmarshal(res.Object, &d) == nil && d.Spec.Credentials != "" {
			creds = "credentials " + d.Spec.Credentials
		}
		return fmt.Sprintf("%s deleted without waiting for its VM: %s may still be running. It is recorded on %s: the orphan sweep terminates it once it can reach the account (after the grace period), and the credentials are kept until it has (see `anycloud describe creds %s`).",
			refName(r), vm, creds, strings.TrimPrefix(creds, "credentials "))
	case r.Kind == manifests.KindDeployment:
		return fmt.Sprintf("%s deleted (it had no VM)", refName(r))
	case r.Kind == manifests.KindCredentials && !res.Deleted:
		return fmt.Sprintf("%s terminating: in use by %s; kept, since nothing else can terminate their VMs, until they are deleted (new deployments cannot use them)", refName(r), names(res.Users))
	case len(res.Users) > 0:
		return fmt.Sprintf("%s deleted; %s keep the values their running VMs have, and their next VM creation (resubmit, recovery) waits until a bundle of that name exists again; a resubmit keeps the running VM meanwhile", refName(r), names(res.Users))
	}
	return refName(r) + " deleted"
}

// why says what holds a terminating object.
func (o *DeleteOptions) why(ctx context.Context, c *api.Client, r manifests.ObjectRef) string {
	if r.Kind == manifests.KindDeployment {
		return "its VM is being terminated"
	}
	obj, err := c.Get(ctx, r.Kind, r.Name)
	if err != nil {
		return "held by finalizers"
	}
	var users []manifests.ObjectRef
	switch x := obj.(type) {
	case *manifests.SecretBundle:
		users = x.Status.UsedBy
	case *manifests.Credentials:
		users = x.Status.UsedBy
	}
	names := make([]string, len(users))
	for i, u := range users {
		names[i] = u.Name
	}
	return "in use by " + strings.Join(names, ", ") + "; it goes when they do"
}

// waitGone polls until every object is gone.
func waitGone(ctx context.Context, f *Factory, c *api.Client, refs []manifests.ObjectRef, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for len(refs) > 0 {
		var left []manifests.ObjectRef
		for _, r := range refs {
			if _, err := c.Get(ctx, r.Kind, r.Name); errors.Is(err, state.ErrNotFound) {
				fmt.Fprintf(f.IO.Out, "%s gone\n", refName(r))
			} else if err != nil {
				return err
			} else {
				left = append(left, r)
			}
		}
		refs = left
		if len(refs) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s; still terminating: %v", timeout, refs)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return nil
}
