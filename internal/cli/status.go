package cli

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/manifests"
)

// StatusOptions are the options of `anycloud status`.
type StatusOptions struct {
	f      *Factory
	Name   string
	Output string
}

// NewCmdStatus builds `anycloud status`.
func NewCmdStatus(f *Factory, runF func(*StatusOptions) error) *cobra.Command {
	o := &StatusOptions{f: f}
	cmd := &cobra.Command{
		Use:   "status [NAME]",
		Short: "Show the deployments table: phase, VM, recoveries, env and secret bundles",
		Long: `Show every deployment (or one) with its phase, readiness, VM, recoveries,
plain env and the bundles it uses. Secret values are never shown.`,
		Args: rangeArgs(0, 1, "[NAME]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				o.Name = args[0]
			}
			if o.Output != "" && o.Output != outputJSON {
				return usageErrorf("status: -o supports only json")
			}
			if runF != nil {
				return runF(o)
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: json")
	return cmd
}

// Run prints the table.
func (o *StatusOptions) Run(ctx context.Context) error {
	c, err := o.f.Client(ctx)
	if err != nil {
		return err
	}
	var objs []manifests.Object
	if o.Name != "" {
		d, err := c.Get(ctx, manifests.KindDeployment, o.Name)
		if err != nil {
			return err
		}
		objs = []manifests.Object{d}
	} else if objs, err = c.List(ctx, manifests.KindDeployment); err != nil {
		return err
	}
	if o.Output == outputJSON {
		return printObjects(o.f.IO.Out, outputJSON, objs, o.Name != "")
	}
	now := o.f.now()
	defer o.printControlPlane(ctx, c, now)
	defer o.printSources(ctx, c, now)
	if len(objs) == 0 {
		fmt.Fprintln(o.f.IO.ErrOut, "No deployments. Apply one: anycloud apply -f examples/quickstart")
		return nil
	}
	t := newTable(o.f.IO.Out, "NAME", "PHASE", "READY", "VM", "MARKET", "ADDRESS", "RECOVERIES", "ENV", "SECRETS", "AGE")
	for _, obj := range objs {
		d := obj.(*manifests.Deployment)
		market, addr := "<none>", "<none>"
		if vm := d.Status.VM; vm != nil {
			market, addr = orNone(vm.Market), orNone(vm.Address)
		}
		var env []string
		for _, k := range slices.Sorted(maps.Keys(d.Spec.Env)) {
			env = append(env, k+"="+d.Spec.Env[k])
		}
		t.row(d.Metadata.Name, phaseOf(d), readiness(d), vmID(d), market, addr, fmt.Sprint(d.Status.Recoveries),
			orNone(strings.Join(env, ",")), orNone(strings.Join(d.Spec.Secrets, ",")), age(now, d.Metadata.CreationTimestamp))
	}
	t.flush()
	return nil
}

// printSources shows the directories the control plane applies itself
// (controller --watch-dir), if any.
func (o *StatusOptions) printSources(ctx context.Context, c *api.Client, now time.Time) {
	if o.Name != "" {
		return
	}
	srcs, err := c.Sources(ctx)
	if err != nil || len(srcs) == 0 {
		return
	}
	fmt.Fprintln(o.f.IO.Out)
	t := newTable(o.f.IO.Out, "WATCHED DIR", "APPLY SET", "READY", "OBJECTS", "LAST APPLIED", "MESSAGE")
	for _, s := range srcs {
		last := "never"
		if !s.LastApplied.IsZero() {
			last = age(now, s.LastApplied) + " ago"
		}
		t.row(s.Dir, s.ApplySet, fmt.Sprint(s.Ready), fmt.Sprint(s.Objects), last, strings.ReplaceAll(s.Message, "\n", " "))
	}
	t.flush()
}

// printControlPlane shows, on a shared store, the store, the leader and
// the replicas.
func (o *StatusOptions) printControlPlane(ctx context.Context, c *api.Client, now time.Time) {
	if o.Name != "" {
		return
	}
	st, err := c.ControlPlane(ctx)
	if err != nil || st.Store != "etcd" {
		return
	}
	fmt.Fprintln(o.f.IO.Out)
	fmt.Fprintf(o.f.IO.Out, "Store: etcd %s (prefix %s); leader: %s\n", strings.Join(st.Endpoints, ","), st.Prefix, orNone(st.Leader))
	t := newTable(o.f.IO.Out, "REPLICA", "ROLE", "API", "ANSWERED")
	for _, r := range st.Replicas {
		role, answered := "follower", ""
		if r.Leader {
			role = "leader"
		}
		if r.Name == st.Self {
			answered = "*"
			if !st.LeadingSince.IsZero() {
				role += " for " + age(now, st.LeadingSince)
			}
		}
		t.row(r.Name, role, r.API, answered)
	}
	t.flush()
}
