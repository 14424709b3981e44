package cli

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/manifests"
)

// SubmitOptions are the options of `anycloud submit`.
type SubmitOptions struct {
	f           *Factory
	Image       string
	Command     []string
	Name        string
	Credentials string
	VMType      string
	Spot        bool
	Secrets     []string
	Env         []string
	Wait        bool
	Timeout     time.Duration
	// GitDir fills spec.source from the working tree there: its remote
	// and HEAD. AllowDirty lets a tree with changes through (the VM gets
	// HEAD without them).
	GitDir      string
	AllowDirty  bool
	SourcePath  string
	ExposeToken bool

	// source is what GitDir resolved to.
	source *manifests.DeploymentSource
}

// NewCmdSubmit builds `anycloud submit`.
func NewCmdSubmit(f *Factory, runF func(*SubmitOptions) error) *cobra.Command {
	o := &SubmitOptions{f: f}
	cmd := &cobra.Command{
		Use:   "submit IMAGE [--credentials NAME] [--vm-type T] [--spot] [--secret B]... [--env K=V]... [--name N] [--git DIR [--allow-dirty]] [-- CMD...]",
		Short: "Run an image on a VM: writes a Deployment, as if applied from a file",
		Long: `Write a Deployment from flags, exactly as if it had been applied from a
manifest. Secrets come from bundles (--secret, repeatable, merged in order);
--env values are plain and shown by status: a key that looks sensitive gets
an advisory to move it into a bundle.

--git DIR sets spec.source from the git working tree at DIR: the VM clones
its remote (as https) at exactly HEAD's commit and puts the checkout at
--source-path, the container's working directory. A tree with uncommitted
or untracked changes is refused unless --allow-dirty: the VM would not get
them.`,
		Example: `  anycloud submit ghcr.io/me/train:latest --credentials my-aws --vm-type g6e.xlarge --spot --secret hf -- python train.py
  anycloud submit ghcr.io/me/train:latest --credentials my-aws --git . -- python train.py
  anycloud submit anycloud-demo:latest --name demo --env GREETING=hello`,
		Args: minArgs(1, "IMAGE [-- CMD...]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Image = args[0]
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				if dash != 1 {
					return usageErrorf("submit: want IMAGE before --, got %d arguments", dash)
				}
				o.Command = args[1:]
			} else if len(args) > 1 {
				return usageErrorf("submit: put the command after --: anycloud submit IMAGE -- CMD...")
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
	cmd.Flags().StringVar(&o.Name, "name", "", "deployment name (default: from the image, with a random suffix)")
	cmd.Flags().StringVar(&o.Credentials, "credentials", manifests.LocalCredentials, "credentials to launch with")
	cmd.Flags().StringVar(&o.VMType, "vm-type", "", "instance type, e.g. g6e.xlarge")
	cmd.Flags().BoolVar(&o.Spot, "spot", false, "use spot capacity, recovered when taken back")
	cmd.Flags().StringArrayVar(&o.Secrets, "secret", nil, "secret bundle to deliver (repeatable, merged in order)")
	cmd.Flags().StringArrayVar(&o.Env, "env", nil, "K=V plain environment (repeatable; wins over bundle keys)")
	cmd.Flags().BoolVar(&o.Wait, "wait", false, "wait until the deployment is Ready")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 10*time.Minute, "how long --wait waits")
	cmd.Flags().StringVar(&o.GitDir, "git", "", "sync code: clone this working tree's remote at its HEAD commit on the VM")
	cmd.Flags().BoolVar(&o.AllowDirty, "allow-dirty", false, "with --git: submit even with uncommitted changes (the VM gets HEAD without them)")
	cmd.Flags().StringVar(&o.SourcePath, "source-path", manifests.DefaultSourcePath, "with --git: where the checkout is in the container (its working directory)")
	cmd.Flags().BoolVar(&o.ExposeToken, "expose-token", true, "with --git: give the container the GitHub token as GITHUB_TOKEN")
	return cmd
}

// Validate checks the options alone.
func (o *SubmitOptions) Validate() error {
	if o.GitDir == "" && (o.AllowDirty || !o.ExposeToken || o.SourcePath != manifests.DefaultSourcePath) {
		return usageErrorf("submit: --allow-dirty, --source-path and --expose-token go with --git DIR")
	}
	if strings.TrimSpace(o.Image) == "" {
		return usageErrorf("submit: IMAGE is required")
	}
	if o.Name != "" {
		if msg := manifests.ValidateName(o.Name); msg != "" {
			return usageErrorf("submit --name: %s", msg)
		}
	}
	for _, e := range o.Env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || !manifests.ValidEnvKey(k) {
			return usageErrorf("submit --env: want K=V with a valid variable name, got key %q", k)
		}
	}
	return nil
}

// Deployment builds the object the flags describe.
func (o *SubmitOptions) Deployment() *manifests.Deployment {
	name := o.Name
	if name == "" {
		name = nameFromImage(o.Image)
	}
	d := &manifests.Deployment{
		TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindDeployment},
		Metadata: manifests.ObjectMeta{Name: name, Annotations: map[string]string{manifests.AnnotationCreatedBy: "submit"}},
		Spec: manifests.DeploymentSpec{
			Image: o.Image, Command: o.Command, Credentials: o.Credentials,
			VMType: o.VMType, Spot: manifests.SpotSpec{Enabled: o.Spot}, Secrets: o.Secrets, Source: o.source,
		},
	}
	if len(o.Env) > 0 {
		d.Spec.Env = map[string]string{}
		for _, e := range o.Env {
			k, v, _ := strings.Cut(e, "=")
			d.Spec.Env[k] = v
		}
	}
	return d
}

var nonName = regexp.MustCompile(`[^a-z0-9-]+`)

// nameFromImage makes "train-4kq2x" from "ghcr.io/me/train:latest".
func nameFromImage(image string) string {
	base := path.Base(image)
	base, _, _ = strings.Cut(base, "@")
	base, _, _ = strings.Cut(base, ":")
	base = strings.Trim(nonName.ReplaceAllString(strings.ToLower(base), "-"), "-")
	if base == "" {
		base = "job"
	}
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b [5]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return shorten(base, 57) + "-" + string(b[:])
}

// resolveSource reads the working tree of --git into o.source, refusing a
// dirty one unless --allow-dirty.
func (o *SubmitOptions) resolveSource(ctx context.Context) error {
	if o.GitDir == "" {
		return nil
	}
	repo, err := readRepo(ctx, o.GitDir)
	if err != nil {
		return err
	}
	if len(repo.Dirty) > 0 {
		shown := repo.Dirty[:min(len(repo.Dirty), maxDirtyShown)]
		more := ""
		if n := len(repo.Dirty) - len(shown); n > 0 {
			more = fmt.Sprintf(" and %d more", n)
		}
		if !o.AllowDirty {
			return fmt.Errorf("submit --git %s: the working tree has changes the VM would not get (%s%s): commit them, or pass --allow-dirty to submit %s without them", o.GitDir, strings.Join(shown, ", "), more, repo.Commit[:12])
		}
		fmt.Fprintf(o.f.IO.ErrOut, "warning: the VM gets commit %s without the working tree's changes (%s%s)\n", repo.Commit[:12], strings.Join(shown, ", "), more)
	}
	if !repo.Pushed {
		fmt.Fprintf(o.f.IO.ErrOut, "warning: commit %s is on no branch of %s that this clone knows of: push it, or the VM cannot fetch it\n", repo.Commit[:12], repo.Remote)
	}
	expose := o.ExposeToken
	o.source = &manifests.DeploymentSource{Git: repo.URL, Commit: repo.Commit, Path: o.SourcePath, ExposeToken: &expose}
	return nil
}

// Run writes the deployment.
func (o *SubmitOptions) Run(ctx context.Context) error {
	if err := o.resolveSource(ctx); err != nil {
		return err
	}
	d := o.Deployment()
	if errs := manifests.Validate(d); len(errs) > 0 {
		return usage(errs)
	}
	raw, _ := json.Marshal(d)
	c, err := o.f.Client(ctx)
	if err != nil {
		return err
	}
	resp, err := c.Apply(ctx, api.ApplyRequest{Items: []api.ApplyItem{{Object: raw}}})
	if err != nil {
		return err
	}
	printApplyResponse(o.f, resp, false)
	if o.Wait {
		return waitReady(ctx, o.f, c, []string{d.Metadata.Name}, o.Timeout)
	}
	return nil
}

// ResubmitOptions are the options of `anycloud resubmit`.
type ResubmitOptions struct {
	f       *Factory
	Name    string
	Wait    bool
	Timeout time.Duration
}

// NewCmdResubmit builds `anycloud resubmit`.
func NewCmdResubmit(f *Factory, runF func(*ResubmitOptions) error) *cobra.Command {
	o := &ResubmitOptions{f: f}
	cmd := &cobra.Command{
		Use:   "resubmit NAME",
		Short: "Replace a deployment's VM; the new one gets freshly resolved secrets",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			if runF != nil {
				return runF(o)
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().BoolVar(&o.Wait, "wait", false, "wait until the replacement is Ready")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 10*time.Minute, "how long --wait waits")
	return cmd
}

// Run asks for the replacement.
func (o *ResubmitOptions) Run(ctx context.Context) error {
	c, err := o.f.Client(ctx)
	if err != nil {
		return err
	}
	if _, err := c.Resubmit(ctx, o.Name); err != nil {
		return err
	}
	fmt.Fprintf(o.f.IO.Out, "deployment/%s resubmitted: its VM will be replaced\n", o.Name)
	if o.Wait {
		return waitResubmitted(ctx, o.f, c, o.Name, o.Timeout)
	}
	return nil
}

// waitResubmitted waits until the VM carries the new restart marker and
// the deployment is Ready.
func waitResubmitted(ctx context.Context, f *Factory, c *api.Client, name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		obj, err := c.Get(ctx, manifests.KindDeployment, name)
		if err != nil {
			return err
		}
		d := obj.(*manifests.Deployment)
		rc := manifests.FindCondition(d.Status.Conditions, manifests.ConditionReady)
		if d.Status.VM != nil && d.Status.VM.RestartedAt == d.Metadata.Annotations[manifests.AnnotationRestartedAt] &&
			rc != nil && rc.Status == manifests.ConditionTrue {
			fmt.Fprintf(f.IO.ErrOut, "deployment/%s: replacement %s ready\n", name, d.Status.VM.ID)
			return nil
		}
		if err := missingBundlesError(ctx, c, d); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("timed out after %s waiting for deployment %s's replacement VM", timeout, name)
}
