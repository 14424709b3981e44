package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// GetOptions are the options of `anycloud get`.
type GetOptions struct {
	f      *Factory
	Kind   manifests.Kind
	Name   string
	Output string
	Watch  bool
}

// NewCmdGet builds `anycloud get`.
func NewCmdGet(f *Factory, runF func(*GetOptions) error) *cobra.Command {
	o := &GetOptions{f: f}
	cmd := &cobra.Command{
		Use:   "get deployments|secretbundles|credentials [NAME] [-o wide|json|yaml|name|jsonpath=T] [-w]",
		Short: "List objects, or show one",
		Long: `List objects of a kind, or show one by name. Kinds may be singular, plural
or short: deployment/deployments/deploy, secretbundle/secretbundles/sb,
credentials/creds. Secret values are never shown: bundles list key names.`,
		Example: `  anycloud get deploy
  anycloud get deploy train -o yaml
  anycloud get sb
  anycloud get deploy -w`,
		Args: rangeArgs(1, 2, "KIND [NAME]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := manifests.ParseKind(args[0])
			if err != nil {
				return usage(err)
			}
			o.Kind = k
			if len(args) == 2 {
				o.Name = args[1]
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
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: wide, json, yaml, name or jsonpath=TEMPLATE (e.g. jsonpath={.status.vm.id})")
	cmd.Flags().BoolVarP(&o.Watch, "watch", "w", false, "after listing, watch for changes")
	return cmd
}

// Validate checks the options alone.
func (o *GetOptions) Validate() error { return validateOutput(o.Output) }

// Run lists, gets or watches.
func (o *GetOptions) Run(ctx context.Context) error {
	c, err := o.f.Client(ctx)
	if err != nil {
		return err
	}
	out := o.f.IO.Out
	if o.Watch {
		headers := true
		return c.Watch(ctx, o.Kind, func(ev state.WatchEvent) error {
			if o.Name != "" && ev.Object.GetMeta().Name != o.Name {
				return nil
			}
			switch {
			case strings.HasPrefix(o.Output, outputJSONPath):
				if err := printObjects(out, o.Output, []manifests.Object{ev.Object}, true); err != nil {
					return err
				}
			case o.Output == outputJSON:
				b, _ := json.Marshal(ev)
				fmt.Fprintln(out, string(b))
			case o.Output == outputYAML, o.Output == outputName:
				if err := printObjects(out, o.Output, []manifests.Object{ev.Object}, true); err != nil {
					return err
				}
				if o.Output == outputYAML {
					fmt.Fprintln(out, "---")
				}
			default:
				printTable(out, o.f.now(), o.Kind, []manifests.Object{ev.Object}, o.Output == outputWide, headers)
				headers = false
			}
			return nil
		})
	}
	var objs []manifests.Object
	if o.Name != "" {
		obj, err := c.Get(ctx, o.Kind, o.Name)
		if err != nil {
			return err
		}
		objs = []manifests.Object{obj}
	} else if objs, err = c.List(ctx, o.Kind); err != nil {
		return err
	}
	switch o.Output {
	case outputTable, outputWide:
		if len(objs) == 0 {
			fmt.Fprintf(o.f.IO.ErrOut, "No %s found.\n", manifests.Plural(o.Kind))
			return nil
		}
		printTable(out, o.f.now(), o.Kind, objs, o.Output == outputWide, true)
		return nil
	}
	return printObjects(out, o.Output, objs, o.Name != "")
}
