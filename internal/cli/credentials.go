package cli

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// NewCmdCredentials builds `anycloud credentials` and its verbs.
func NewCmdCredentials(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "credentials",
		Aliases: []string{"creds"},
		Short:   "Manage cloud credentials",
		Long: `Credentials say how to reach a cloud. "local" always exists and selects this
machine's Docker engine. AWS credentials use a named profile, static keys
(the secret key is stored sealed) or, with neither, the default AWS chain.`,
		Args: exactArgs(0, "a verb: new, list or delete"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return usageErrorf("credentials: want a verb: new, list or delete\nsee 'anycloud credentials --help'")
		},
	}
	cmd.AddCommand(NewCmdCredentialsNew(f, nil), NewCmdCredentialsList(f), NewCmdCredentialsDelete(f, nil))
	return cmd
}

// CredentialsNewOptions are the options of `anycloud credentials new`.
type CredentialsNewOptions struct {
	f           *Factory
	Name        string
	Provider    string
	Profile     string
	AccessKeyID string
	Region      string
	EndpointURL string
	// SecretFromStdin reads the secret access key from standard input
	// instead of AWS_SECRET_ACCESS_KEY.
	SecretFromStdin bool
	// Interruptions and InterruptionQueue say how EC2's events are heard
	// (manifests.AWSCredentials).
	Interruptions     string
	InterruptionQueue string
}

// NewCmdCredentialsNew builds `anycloud credentials new`.
func NewCmdCredentialsNew(f *Factory, runF func(*CredentialsNewOptions) error) *cobra.Command {
	o := &CredentialsNewOptions{f: f}
	cmd := &cobra.Command{
		Use:   "new NAME --provider aws [--profile P | --access-key-id ID] [--region R] [--endpoint-url URL]",
		Short: "Create or overwrite credentials",
		Long: `Create or overwrite credentials. With --access-key-id, the secret access key
is read from the environment variable AWS_SECRET_ACCESS_KEY, or from standard
input with --secret-access-key-stdin: never from a flag, which would land in
your shell history. It is stored sealed and never shown.`,
		Example: `  anycloud credentials new my-aws --provider aws --profile default --region us-east-1
  AWS_SECRET_ACCESS_KEY=... anycloud credentials new ci --provider aws --access-key-id AKIA... --region eu-west-1
  anycloud credentials new moto --provider aws --region us-east-1 --endpoint-url http://127.0.0.1:5000`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			if err := o.Validate(); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&o.Provider, "provider", "", "aws or local")
	cmd.Flags().StringVar(&o.Profile, "profile", "", "AWS named profile")
	cmd.Flags().StringVar(&o.AccessKeyID, "access-key-id", "", "AWS access key ID (secret key from AWS_SECRET_ACCESS_KEY or stdin)")
	cmd.Flags().StringVar(&o.Region, "region", "", "AWS region")
	cmd.Flags().StringVar(&o.EndpointURL, "endpoint-url", "", "EC2 endpoint, for emulators and private endpoints")
	cmd.Flags().BoolVar(&o.SecretFromStdin, "secret-access-key-stdin", false, "read the secret access key from standard input")
	cmd.Flags().StringVar(&o.Interruptions, "interruptions", "", "auto (default: make an SQS queue and EventBridge rules for EC2's interruption and state-change events) or off")
	cmd.Flags().StringVar(&o.InterruptionQueue, "interruption-queue", "", "consume this existing SQS queue of EC2 events instead of making one")
	return cmd
}

// Validate checks the options alone.
func (o *CredentialsNewOptions) Validate() error {
	switch o.Provider {
	case manifests.ProviderAWS:
	case manifests.ProviderLocal:
		if o.Profile != "" || o.AccessKeyID != "" || o.Region != "" || o.EndpointURL != "" || o.Interruptions != "" || o.InterruptionQueue != "" {
			return usageErrorf("credentials new: --profile, --access-key-id, --region, --endpoint-url and the interruption flags are for --provider aws")
		}
	case "":
		return usageErrorf("credentials new: --provider is required (aws or local)")
	default:
		return usageErrorf("credentials new: unknown provider %q (aws or local)", o.Provider)
	}
	if o.SecretFromStdin && o.AccessKeyID == "" {
		return usageErrorf("credentials new: --secret-access-key-stdin goes with --access-key-id")
	}
	return nil
}

// object builds the Credentials object the flags describe.
func (o *CredentialsNewOptions) object() *manifests.Credentials {
	c := &manifests.Credentials{
		TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindCredentials},
		Metadata: manifests.ObjectMeta{Name: o.Name, Annotations: map[string]string{manifests.AnnotationCreatedBy: "credentials-new"}},
		Spec:     manifests.CredentialsSpec{Provider: o.Provider},
	}
	if o.Provider == manifests.ProviderAWS {
		c.Spec.AWS = &manifests.AWSCredentials{Region: o.Region, Profile: o.Profile, AccessKeyID: o.AccessKeyID, EndpointURL: o.EndpointURL,
			Interruptions: o.Interruptions, InterruptionQueue: o.InterruptionQueue}
	}
	return c
}

// Run writes the credentials.
func (o *CredentialsNewOptions) Run(ctx context.Context) error {
	obj := o.object()
	var secrets map[string]string
	if o.AccessKeyID != "" {
		var secret string
		if o.SecretFromStdin {
			var err error
			if secret, err = stdinLine(o.f.IO.In); err != nil {
				return fmt.Errorf("read the secret access key from stdin: %w", err)
			}
		} else {
			secret = o.f.IO.Getenv("AWS_SECRET_ACCESS_KEY")
		}
		if secret == "" {
			return usageErrorf("credentials new: --access-key-id needs the secret access key in AWS_SECRET_ACCESS_KEY or on stdin with --secret-access-key-stdin")
		}
		if msg := manifests.CheckSecretValue(secret); msg != "" {
			return fmt.Errorf("credentials %s: the secret access key: %s", o.Name, msg)
		}
		secrets = map[string]string{"secretAccessKey": secret}
	}
	for _, e := range manifests.Validate(obj) {
		return usageErrorf("credentials new: %s", e.Error())
	}
	raw, _ := json.Marshal(obj)
	c, err := o.f.Client(ctx)
	if err != nil {
		return err
	}
	resp, err := c.Apply(ctx, api.ApplyRequest{Items: []api.ApplyItem{{Object: raw, Secrets: secrets}}})
	if err != nil {
		return err
	}
	printApplyResponse(o.f, resp, false)
	return nil
}

// NewCmdCredentialsList builds `anycloud credentials list`.
func NewCmdCredentialsList(f *Factory) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List credentials; secret keys are never shown",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			g := &GetOptions{f: f, Kind: manifests.KindCredentials, Output: output}
			if err := g.Validate(); err != nil {
				return err
			}
			return g.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: wide, json, yaml, name or jsonpath=TEMPLATE (e.g. jsonpath={.status.vm.id})")
	return cmd
}

// CredentialsDeleteOptions are the options of `anycloud credentials delete`.
type CredentialsDeleteOptions struct {
	f     *Factory
	Name  string
	Force bool
}

// NewCmdCredentialsDelete builds `anycloud credentials delete`.
func NewCmdCredentialsDelete(f *Factory, runF func(*CredentialsDeleteOptions) error) *cobra.Command {
	o := &CredentialsDeleteOptions{f: f}
	cmd := &cobra.Command{
		Use:   "delete NAME [--force]",
		Short: "Delete credentials; refused (exit status 3) while deployments use them",
		Long: `Delete credentials. While deployments that are not terminal use them, the
delete is refused (exit status 3), listing them. --force marks them for
deletion instead: they stay, Terminating, only as long as those deployments
exist (nothing else could terminate their VMs), and new deployments cannot
use them. Credentials that are the only way to reach VMs left behind by
'delete deploy --force' are kept until the orphan sweep has terminated
them; --force forgets those VMs.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			if runF != nil {
				return runF(o)
			}
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			res, err := c.DeleteWithResult(cmd.Context(), manifests.KindCredentials, o.Name, state.DeleteOptions{Force: o.Force})
			if err != nil {
				return err
			}
			fmt.Fprintln(f.IO.Out, forcedDeleteMessage(manifests.ObjectRef{Kind: manifests.KindCredentials, Name: o.Name}, res))
			return nil
		},
	}
	cmd.Flags().BoolVar(&o.Force, "force", false, "delete even while deployments use them")
	return cmd
}
