package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/seal"
	"github.com/anycloud/anycloud/state"
)

// NewCmdSecrets builds `anycloud secrets` and its verbs.
func NewCmdSecrets(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "secrets",
		Aliases: []string{"secret"},
		Short:   "Manage secret bundles: values are write-only",
		Long: `Secret bundles hold named, write-only values. They are sealed at rest,
delivered into each new VM as environment variables, and never printed,
logged or returned: list shows key names only.`,
		Args: exactArgs(0, "a verb: new, list, delete or seal"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return usageErrorf("secrets: want a verb: new, list, delete or seal\nsee 'anycloud secrets --help'")
		},
	}
	cmd.AddCommand(NewCmdSecretsNew(f, nil), NewCmdSecretsList(f, nil), NewCmdSecretsDelete(f, nil), NewCmdSecretsSeal(f, nil))
	return cmd
}

// SecretValueOptions gather KEY=VALUE arguments, --from-env and
// --from-file, shared by `secrets new` and `secrets seal`.
type SecretValueOptions struct {
	Pairs    []string
	FromEnv  []string
	FromFile []string
}

func (o *SecretValueOptions) bind(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&o.FromEnv, "from-env", nil, "KEY: take the value of environment variable KEY (repeatable)")
	cmd.Flags().StringArrayVar(&o.FromFile, "from-file", nil, "KEY=PATH: take the value from a file, less one trailing newline (repeatable)")
}

// Validate checks the shapes of the arguments; it reads nothing.
func (o *SecretValueOptions) Validate() error {
	if len(o.Pairs)+len(o.FromEnv)+len(o.FromFile) == 0 {
		return usageErrorf("want at least one KEY=VALUE, --from-env KEY or --from-file KEY=PATH")
	}
	// No message here echoes an argument: a key that is not a name is
	// usually a value typed without its KEY= (or with the '=' in the
	// wrong place), and would land in the terminal and its scrollback.
	for i, p := range o.Pairs {
		k, _, ok := strings.Cut(p, "=")
		if !ok {
			return usageErrorf("argument %d after the bundle name is not KEY=VALUE (the key is missing or there is no '='); it is not shown, as it may be a value", i+1)
		}
		if !manifests.ValidEnvKey(k) {
			return usageErrorf("argument %d after the bundle name: the part before '=' is not a valid key (letters, digits and '_', not starting with a digit); it is not shown, as it may be a value", i+1)
		}
	}
	for i, k := range o.FromEnv {
		if !manifests.ValidEnvKey(k) {
			return usageErrorf("--from-env number %d is not a valid variable name (letters, digits and '_', not starting with a digit); it is not shown, as it may be a value", i+1)
		}
	}
	for i, p := range o.FromFile {
		k, path, ok := strings.Cut(p, "=")
		if !ok || path == "" || !manifests.ValidEnvKey(k) {
			return usageErrorf("--from-file number %d is not KEY=PATH with a valid key (letters, digits and '_', not starting with a digit); it is not shown, as it may be a value", i+1)
		}
	}
	return nil
}

// Values reads the values. A key given twice is an error; no message ever
// includes a value.
func (o *SecretValueOptions) Values(getenv func(string) string) (map[string]string, error) {
	out := map[string]string{}
	add := func(k, v, from string) error {
		if _, dup := out[k]; dup {
			return usageErrorf("key %s is given more than once", k)
		}
		if v == "" {
			return fmt.Errorf("key %s: the value from %s is empty", k, from)
		}
		// Checked before anything is sent: JSON would turn invalid UTF-8
		// into U+FFFD, and a NUL byte cannot be delivered as env.
		if msg := manifests.CheckSecretValue(v); msg != "" {
			return fmt.Errorf("key %s (from %s): %s", k, from, msg)
		}
		out[k] = v
		return nil
	}
	for _, p := range o.Pairs {
		k, v, _ := strings.Cut(p, "=")
		if err := add(k, v, "the command line"); err != nil {
			return nil, err
		}
	}
	for _, k := range o.FromEnv {
		if err := add(k, getenv(k), "environment variable "+k); err != nil {
			return nil, err
		}
	}
	for _, p := range o.FromFile {
		k, path, _ := strings.Cut(p, "=")
		b, err := readLimited(path, manifests.MaxValueBytes+2) // +2: a trailing newline
		if err != nil {
			return nil, fmt.Errorf("--from-file %s: %w", k, err)
		}
		// One trailing newline is the file's, not the value's (editors and
		// `echo` add it), as kubectl's --from-env-file reads it.
		v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if err := add(k, v, "file "+path); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readLimited reads a file, or its first limit+1 bytes when it is larger:
// enough to tell that it is too large without holding all of it.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit+1))
}

// SecretsNewOptions are the options of `anycloud secrets new`.
type SecretsNewOptions struct {
	f      *Factory
	Name   string
	Values SecretValueOptions
}

// NewCmdSecretsNew builds `anycloud secrets new`.
func NewCmdSecretsNew(f *Factory, runF func(*SecretsNewOptions) error) *cobra.Command {
	o := &SecretsNewOptions{f: f}
	cmd := &cobra.Command{
		Use:   "new NAME KEY=VALUE... [--from-env KEY] [--from-file KEY=PATH]",
		Short: "Create a bundle, or overwrite all of its values",
		Long: `Create a secret bundle, or replace all of an existing bundle's values.
Running VMs keep the values they were given; the next VM creation (resubmit,
recovery) picks up the new ones. Prefer --from-env or --from-file over
KEY=VALUE, which lands in your shell history.`,
		Example: `  anycloud secrets new hf --from-env HF_TOKEN
  anycloud secrets new db --from-file PASSWORD=./db-password.txt`,
		Args: minArgs(1, "NAME [KEY=VALUE...]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name, o.Values.Pairs = args[0], args[1:]
			if err := o.Validate(); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return o.Run(cmd.Context())
		},
	}
	o.Values.bind(cmd)
	return cmd
}

// Validate checks the options alone.
func (o *SecretsNewOptions) Validate() error {
	if msg := manifests.ValidateName(o.Name); msg != "" {
		return usageErrorf("bundle name: %s", msg)
	}
	return o.Values.Validate()
}

// Run writes the bundle.
func (o *SecretsNewOptions) Run(ctx context.Context) error {
	values, err := o.Values.Values(o.f.IO.Getenv)
	if err != nil {
		return err
	}
	b := &manifests.SecretBundle{
		TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindSecretBundle},
		Metadata: manifests.ObjectMeta{Name: o.Name, Annotations: map[string]string{manifests.AnnotationCreatedBy: "secrets-new"}},
	}
	raw, _ := json.Marshal(b)
	c, err := o.f.Client(ctx)
	if err != nil {
		return err
	}
	resp, err := c.Apply(ctx, api.ApplyRequest{Items: []api.ApplyItem{{Object: raw, Secrets: values}}})
	if err != nil {
		return err
	}
	r := resp.Results[0]
	fmt.Fprintf(o.f.IO.Out, "secretbundle/%s %s (keys: %s)\n", o.Name, r.Action, strings.Join(slices.Sorted(maps.Keys(values)), ", "))
	printWarnings(o.f, resp)
	if r.Action == state.ActionConfigured {
		fmt.Fprintln(o.f.IO.ErrOut, "Running VMs keep their values; `anycloud resubmit NAME` replaces a deployment's VM with the new ones.")
	}
	return nil
}

// SecretsListOptions are the options of `anycloud secrets list`.
type SecretsListOptions struct {
	f      *Factory
	Output string
}

// NewCmdSecretsList builds `anycloud secrets list`.
func NewCmdSecretsList(f *Factory, runF func(*SecretsListOptions) error) *cobra.Command {
	o := &SecretsListOptions{f: f}
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List bundles: names, key names, users and timestamps; never values",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validateOutput(o.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			g := &GetOptions{f: f, Kind: manifests.KindSecretBundle, Output: o.Output}
			return g.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: wide, json, yaml, name or jsonpath=TEMPLATE (e.g. jsonpath={.status.vm.id})")
	return cmd
}

// SecretsDeleteOptions are the options of `anycloud secrets delete`.
type SecretsDeleteOptions struct {
	f     *Factory
	Name  string
	Force bool
}

// NewCmdSecretsDelete builds `anycloud secrets delete`.
func NewCmdSecretsDelete(f *Factory, runF func(*SecretsDeleteOptions) error) *cobra.Command {
	o := &SecretsDeleteOptions{f: f}
	cmd := &cobra.Command{
		Use:   "delete NAME [--force]",
		Short: "Delete a bundle; refused (exit status 3) while deployments use it",
		Long: `Delete a secret bundle. While any deployment that is not terminal names it,
the delete is refused with the list of those deployments and exit status 3.
--force deletes anyway: running VMs keep their values, and their next VM
creation fails with SecretBundleNotFound until the bundle exists again.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			if runF != nil {
				return runF(o)
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().BoolVar(&o.Force, "force", false, "delete even while deployments use it")
	return cmd
}

// Run deletes the bundle.
func (o *SecretsDeleteOptions) Run(ctx context.Context) error {
	c, err := o.f.Client(ctx)
	if err != nil {
		return err
	}
	res, err := c.DeleteWithResult(ctx, manifests.KindSecretBundle, o.Name, state.DeleteOptions{Force: o.Force})
	if err != nil {
		return err
	}
	fmt.Fprintln(o.f.IO.Out, forcedDeleteMessage(manifests.ObjectRef{Kind: manifests.KindSecretBundle, Name: o.Name}, res))
	return nil
}

// SecretsSealOptions are the options of `anycloud secrets seal`.
type SecretsSealOptions struct {
	f         *Factory
	Name      string
	Values    SecretValueOptions
	PrintKey  bool
	PublicKey string
	KeyFile   string
}

// NewCmdSecretsSeal builds `anycloud secrets seal`.
func NewCmdSecretsSeal(f *Factory, runF func(*SecretsSealOptions) error) *cobra.Command {
	o := &SecretsSealOptions{f: f}
	cmd := &cobra.Command{
		Use:   "seal NAME KEY=VALUE... [--from-env KEY] [--from-file KEY=PATH] > bundle.yaml",
		Short: "Print a SecretBundle manifest whose values only this control plane can open",
		Long: `Print a SecretBundle manifest with spec.sealed values encrypted (nacl/box)
to the control plane's public key. Each value is bound to the bundle's name
and key, so it cannot be renamed or moved; the manifest is safe to commit.
On a machine without the control plane (CI), seal with --key or --key-file
holding the output of 'anycloud secrets seal --public-key'.`,
		Example: `  anycloud secrets seal wandb --from-env WANDB_API_KEY > wandb.yaml
  anycloud secrets seal --public-key > anycloud.pub
  anycloud secrets seal wandb --key-file anycloud.pub --from-env WANDB_API_KEY`,
		Args: func(cmd *cobra.Command, args []string) error {
			if o.PrintKey {
				return exactArgs(0, "no arguments with --public-key")(cmd, args)
			}
			return minArgs(1, "NAME [KEY=VALUE...]")(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if !o.PrintKey {
				o.Name, o.Values.Pairs = args[0], args[1:]
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
	o.Values.bind(cmd)
	cmd.Flags().BoolVar(&o.PrintKey, "public-key", false, "print the control plane's public sealing key and exit")
	cmd.Flags().StringVar(&o.PublicKey, "key", "", "seal to this public key instead of asking the control plane")
	cmd.Flags().StringVar(&o.KeyFile, "key-file", "", "seal to the public key in this file")
	return cmd
}

// Validate checks the options alone.
func (o *SecretsSealOptions) Validate() error {
	if o.PrintKey {
		return nil
	}
	if o.PublicKey != "" && o.KeyFile != "" {
		return usageErrorf("seal: use --key or --key-file, not both")
	}
	if msg := manifests.ValidateName(o.Name); msg != "" {
		return usageErrorf("bundle name: %s", msg)
	}
	return o.Values.Validate()
}

// Run prints the key or the sealed manifest.
func (o *SecretsSealOptions) Run(ctx context.Context) error {
	keyText := o.PublicKey
	if o.KeyFile != "" {
		b, err := os.ReadFile(o.KeyFile)
		if err != nil {
			return fmt.Errorf("--key-file: %w", err)
		}
		keyText = string(b)
	}
	if keyText == "" {
		c, err := o.f.Client(ctx)
		if err != nil {
			return err
		}
		if keyText, err = c.SealingKey(ctx); err != nil {
			return err
		}
	}
	if o.PrintKey {
		fmt.Fprintln(o.f.IO.Out, strings.TrimSpace(keyText))
		return nil
	}
	pub, err := seal.ParsePublicKey(keyText)
	if err != nil {
		return err
	}
	values, err := o.Values.Values(o.f.IO.Getenv)
	if err != nil {
		return err
	}
	b := &manifests.SecretBundle{
		TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindSecretBundle},
		Metadata: manifests.ObjectMeta{Name: o.Name},
		Spec:     manifests.SecretBundleSpec{Sealed: map[string]string{}},
	}
	for k, v := range values {
		s, err := seal.SealTo(pub, o.Name, k, []byte(v))
		if err != nil {
			return err
		}
		b.Spec.Sealed[k] = s
	}
	raw, err := json.Marshal(b)
	if err != nil {
		return err
	}
	y, err := yaml.JSONToYAML(raw)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.f.IO.Out, "# Sealed by `anycloud secrets seal`: only the control plane that owns the key can open it.\n%s", y)
	return nil
}
