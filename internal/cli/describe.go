package cli

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// DescribeOptions are the options of `anycloud describe`.
type DescribeOptions struct {
	f    *Factory
	Kind manifests.Kind
	Name string
}

// NewCmdDescribe builds `anycloud describe`.
func NewCmdDescribe(f *Factory, runF func(*DescribeOptions) error) *cobra.Command {
	o := &DescribeOptions{f: f}
	cmd := &cobra.Command{
		Use:   "describe KIND NAME",
		Short: "Show an object in detail: spec, status, conditions, VM and events",
		Example: `  anycloud describe deployment train
  anycloud describe sb hf`,
		Args: exactArgs(2, "KIND NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := manifests.ParseKind(args[0])
			if err != nil {
				return usage(err)
			}
			o.Kind, o.Name = k, args[1]
			if runF != nil {
				return runF(o)
			}
			return o.Run(cmd.Context())
		},
	}
	return cmd
}

// Run prints the description.
func (o *DescribeOptions) Run(ctx context.Context) error {
	c, err := o.f.Client(ctx)
	if err != nil {
		return err
	}
	obj, err := c.Get(ctx, o.Kind, o.Name)
	if err != nil {
		return err
	}
	events, err := c.Events(ctx, o.Kind, o.Name)
	if err != nil {
		return err
	}
	describe(o.f.IO.Out, o.f.now(), obj, events)
	return nil
}

// describe writes a kubectl-describe style page.
func describe(w io.Writer, now time.Time, obj manifests.Object, events []state.Event) {
	m := obj.GetMeta()
	field := func(indent int, name, value string) {
		fmt.Fprintf(w, "%s%-*s %s\n", strings.Repeat("  ", indent), 22-2*indent, name+":", value)
	}
	field(0, "Name", m.Name)
	field(0, "Kind", string(obj.GetKind()))
	field(0, "UID", m.UID)
	field(0, "Generation", fmt.Sprint(m.Generation))
	field(0, "Created", fmt.Sprintf("%s (%s ago)", m.CreationTimestamp.Format(time.RFC3339), age(now, m.CreationTimestamp)))
	if m.DeletionTimestamp != nil {
		field(0, "Deleting since", m.DeletionTimestamp.Format(time.RFC3339))
	}
	if len(m.Finalizers) > 0 {
		field(0, "Finalizers", strings.Join(m.Finalizers, ", "))
	}
	field(0, "Labels", kv(m.Labels))
	field(0, "Annotations", kv(m.Annotations))

	switch o := obj.(type) {
	case *manifests.Deployment:
		s := o.Spec
		fmt.Fprintln(w, "Spec:")
		field(1, "Image", s.Image)
		if len(s.Command) > 0 {
			field(1, "Command", strings.Join(s.Command, " "))
		}
		field(1, "Credentials", s.Credentials)
		field(1, "VM type", orNone(s.VMType))
		field(1, "Spot", s.Spot.String())
		field(1, "Secrets", orNone(strings.Join(s.Secrets, ", ")))
		if len(s.Env) > 0 {
			fmt.Fprintln(w, "  Env:")
			for _, k := range slices.Sorted(maps.Keys(s.Env)) {
				fmt.Fprintf(w, "    %s=%s\n", k, s.Env[k])
			}
		}
		if s.AWS != nil {
			field(1, "AWS image", orNone(s.AWS.ImageID))
			field(1, "AWS region", orNone(s.AWS.Region))
			subnets := s.AWS.SubnetIDs
			if s.AWS.SubnetID != "" {
				subnets = append([]string{s.AWS.SubnetID}, subnets...)
			}
			if len(subnets) == 0 {
				subnets = []string{"<the default VPC's, one per zone>"}
			}
			field(1, "AWS subnets", strings.Join(subnets, ", "))
		}
		if s.AWS != nil || len(s.Buckets) > 0 {
			field(1, "IAM role", s.IAMRole())
		}
		if s.AWS != nil && len(s.AWS.PolicyARNs) > 0 {
			field(1, "Policy ARNs", strings.Join(s.AWS.PolicyARNs, ", "))
		}
		if len(s.Buckets) > 0 {
			fmt.Fprintln(w, "  Buckets:")
			for _, b := range s.Buckets {
				mode := b.Mode
				if mode == "" {
					mode = manifests.BucketReadOnly
				}
				line := fmt.Sprintf("    %s -> %s (%s", b.URI, b.Path, mode)
				if b.ReadWrite() {
					line += ", every " + b.Interval().String()
				}
				if b.Credentials != "" {
					line += ", credentials " + b.Credentials
				}
				fmt.Fprintln(w, line+")")
			}
		}
		st := o.Status
		fmt.Fprintln(w, "Status:")
		field(1, "Phase", phaseOf(o))
		field(1, "Observed generation", fmt.Sprint(st.ObservedGeneration))
		field(1, "Attempt", fmt.Sprint(st.Attempt))
		field(1, "Recoveries", fmt.Sprint(st.Recoveries))
		if vm := st.VM; vm != nil {
			fmt.Fprintln(w, "  VM:")
			field(2, "ID", vm.ID)
			field(2, "Market", orNone(vm.Market))
			field(2, "Address", orNone(vm.Address))
			field(2, "Launched", fmt.Sprintf("%s (%s ago)", vm.LaunchedAt.Format(time.RFC3339), age(now, vm.LaunchedAt)))
			field(2, "Attempt", fmt.Sprint(vm.Attempt))
			var bv []string
			for _, k := range slices.Sorted(maps.Keys(vm.BundleVersions)) {
				bv = append(bv, fmt.Sprintf("%s@%d", k, vm.BundleVersions[k]))
			}
			field(2, "Bundle versions", orNone(strings.Join(bv, ", ")))
		} else {
			field(1, "VM", "<none>")
		}
		if dr := st.Draining; dr != nil {
			fmt.Fprintln(w, "  Draining VM:")
			field(2, "ID", dr.ID)
			field(2, "Market", orNone(dr.Market))
			field(2, "Launched", fmt.Sprintf("%s (%s ago)", dr.LaunchedAt.Format(time.RFC3339), age(now, dr.LaunchedAt)))
			field(2, "Attempt", fmt.Sprint(dr.Attempt))
			field(2, "Until", "its replacement is Ready, or the cloud takes it back")
		}
		if iam := st.IAM; iam != nil {
			fmt.Fprintln(w, "  IAM:")
			if iam.Role != "" {
				field(2, "Role", iam.Role)
			}
			field(2, "Instance profile", iam.InstanceProfile)
			field(2, "Managed", fmt.Sprint(iam.Managed))
		}
		if len(st.Buckets) > 0 {
			fmt.Fprintln(w, "  Buckets:")
			for _, b := range st.Buckets {
				last := "never"
				if !b.LastSync.IsZero() {
					last = fmt.Sprintf("%s %s ago", orNone(b.Result), age(now, b.LastSync))
				}
				if b.Message != "" {
					last += ": " + b.Message
				}
				if b.CredentialsExpireAt != nil {
					last += fmt.Sprintf("; credentials expire in %s", b.CredentialsExpireAt.Sub(now).Round(time.Minute))
				}
				field(2, b.Path, b.URI+": last sync "+last)
			}
		}
		describeConditions(w, now, st.Conditions)
	case *manifests.SecretBundle:
		fmt.Fprintln(w, "Spec:")
		field(1, "From env", orNone(strings.Join(o.Spec.FromEnv, ", ")))
		fmt.Fprintln(w, "Status:")
		field(1, "Phase", orNone(o.Status.Phase))
		field(1, "Keys", orNone(strings.Join(o.Status.Keys, ", ")))
		field(1, "Updated", fmt.Sprintf("%s (%s ago)", o.Status.UpdatedAt.Format(time.RFC3339), age(now, o.Status.UpdatedAt)))
		field(1, "Used by", usedBy(o.Status.UsedBy))
	case *manifests.Credentials:
		fmt.Fprintln(w, "Spec:")
		field(1, "Provider", o.Spec.Provider)
		if a := o.Spec.AWS; a != nil {
			field(1, "Region", orNone(a.Region))
			field(1, "Profile", orNone(a.Profile))
			field(1, "Access key ID", orNone(a.AccessKeyID))
			field(1, "Endpoint URL", orNone(a.EndpointURL))
		}
		fmt.Fprintln(w, "Status:")
		field(1, "Phase", orNone(o.Status.Phase))
		field(1, "Secret fields", orNone(strings.Join(o.Status.SecretKeys, ", ")))
		field(1, "Used by", usedBy(o.Status.UsedBy))
		if len(o.Status.LeftoverVMs) > 0 {
			// Left behind by forced deletes: the orphan sweep ends them,
			// and the credentials stay until it has.
			var l []string
			for _, v := range o.Status.LeftoverVMs {
				vm := v.VMID
				if vm == "" {
					vm = "<launch under way>"
				}
				l = append(l, fmt.Sprintf("%s (deployment %s, uid %s, since %s)", vm, v.Deployment, v.UID, v.Since.Format(time.RFC3339)))
			}
			field(1, "Leftover VMs", strings.Join(l, "; "))
		}
	}

	fmt.Fprintln(w, "Events:")
	if len(events) == 0 {
		fmt.Fprintln(w, "  <none>")
		return
	}
	t := newTable(w, "  TYPE", "REASON", "AGE", "COUNT", "MESSAGE")
	for _, e := range events {
		a := age(now, e.LastSeen)
		if e.Count > 1 {
			a = fmt.Sprintf("%s (x%d over %s)", a, e.Count, age(now, e.FirstSeen))
		}
		t.row("  "+e.Type, e.Reason, a, fmt.Sprint(e.Count), e.Message)
	}
	t.flush()
}

func describeConditions(w io.Writer, now time.Time, conds []manifests.Condition) {
	fmt.Fprintln(w, "Conditions:")
	if len(conds) == 0 {
		fmt.Fprintln(w, "  <none>")
		return
	}
	t := newTable(w, "  TYPE", "STATUS", "REASON", "SINCE", "MESSAGE")
	for _, c := range conds {
		t.row("  "+c.Type, c.Status, orNone(c.Reason), age(now, c.LastTransitionTime), c.Message)
	}
	t.flush()
}

func usedBy(refs []manifests.ObjectRef) string {
	if len(refs) == 0 {
		return "<none>"
	}
	s := make([]string, len(refs))
	for i, r := range refs {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}

func kv(m map[string]string) string {
	if len(m) == 0 {
		return "<none>"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ", ")
}
