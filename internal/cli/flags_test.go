package cli

// Flag and argument parsing of the verbs, through their runF seams: what
// a command line becomes, and which command lines are bad usage (exit 2),
// without a control plane.

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/spf13/cobra"

	"github.com/anycloud/anycloud/manifests"
)

// parse runs cmd with args and returns its error.
func parse(cmd *cobra.Command, args ...string) error {
	cmd.SetArgs(args)
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	return cmd.Execute()
}

// ignoreFactory leaves the options' Factory out of comparisons.
var ignoreFactory = cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".f" }, cmp.Ignore())

func TestSubmitParsesItsFlagsAndTheCommandAfterDashes(t *testing.T) {
	var got *SubmitOptions
	cmd := NewCmdSubmit(&Factory{}, func(o *SubmitOptions) error { got = o; return nil })
	err := parse(cmd, "ghcr.io/me/train:1", "--name", "train", "--credentials", "aws", "--vm-type", "g6e.xlarge", "--spot",
		"--secret", "hf", "--secret", "wandb", "--env", "EPOCHS=3", "--wait", "--timeout", "2m", "--", "python", "train.py", "--lr", "0.1")
	if err != nil {
		t.Fatal(err)
	}
	want := &SubmitOptions{
		Image: "ghcr.io/me/train:1", Name: "train", Credentials: "aws", VMType: "g6e.xlarge", Spot: true,
		Secrets: []string{"hf", "wandb"}, Env: []string{"EPOCHS=3"}, Wait: true, Timeout: 2 * time.Minute,
		Command:    []string{"python", "train.py", "--lr", "0.1"},
		SourcePath: "/workspace", ExposeToken: true, // the defaults of --git's flags
	}
	if diff := cmp.Diff(want, got, ignoreFactory, cmpopts.IgnoreUnexported(SubmitOptions{})); diff != "" {
		t.Errorf("submit options (-want +got):\n%s", diff)
	}
}

func TestApplyAndDiffParseTheirSources(t *testing.T) {
	var a *ApplyOptions
	if err := parse(NewCmdApply(&Factory{}, func(o *ApplyOptions) error { a = o; return nil }),
		"-f", "apps", "-f", "base.yaml", "-R", "--prune", "--apply-set", "prod", "--dry-run", "--timeout", "90s"); err != nil {
		t.Fatal(err)
	}
	want := &ApplyOptions{Files: []string{"apps", "base.yaml"}, Recursive: true, Prune: true, ApplySet: "prod", DryRun: true, Timeout: 90 * time.Second}
	if diff := cmp.Diff(want, a, ignoreFactory, cmpopts.IgnoreUnexported(ApplyOptions{})); diff != "" {
		t.Errorf("apply options (-want +got):\n%s", diff)
	}
	var d *DiffOptions
	if err := parse(NewCmdDiff(&Factory{}, func(o *DiffOptions) error { d = o; return nil }), "-f", "-", "--prune", "--apply-set", "ci", "--allow-empty"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&DiffOptions{Files: []string{"-"}, Prune: true, ApplySet: "ci", AllowEmpty: true}, d, ignoreFactory, cmpopts.IgnoreUnexported(DiffOptions{})); diff != "" {
		t.Errorf("diff options (-want +got):\n%s", diff)
	}
}

func TestKindsAreTakenAsKubectlNamesThem(t *testing.T) {
	for _, tc := range []struct {
		args []string
		kind manifests.Kind
		name string
	}{
		{[]string{"deploy", "train"}, manifests.KindDeployment, "train"},
		{[]string{"deployments"}, manifests.KindDeployment, ""},
		{[]string{"sb", "hf"}, manifests.KindSecretBundle, "hf"},
		{[]string{"creds"}, manifests.KindCredentials, ""},
	} {
		var got *GetOptions
		if err := parse(NewCmdGet(&Factory{}, func(o *GetOptions) error { got = o; return nil }), append(tc.args, "-o", "json")...); err != nil {
			t.Fatalf("get %v: %v", tc.args, err)
		}
		if got.Kind != tc.kind || got.Name != tc.name || got.Output != "json" {
			t.Errorf("get %v: kind %s name %q output %q", tc.args, got.Kind, got.Name, got.Output)
		}
	}
	var del *DeleteOptions
	if err := parse(NewCmdDelete(&Factory{}, func(o *DeleteOptions) error { del = o; return nil }), "sb", "hf", "--force", "--wait"); err != nil {
		t.Fatal(err)
	}
	if del.Kind != manifests.KindSecretBundle || del.Name != "hf" || !del.Force || !del.Wait {
		t.Errorf("delete options %+v", del)
	}
	var desc *DescribeOptions
	if err := parse(NewCmdDescribe(&Factory{}, func(o *DescribeOptions) error { desc = o; return nil }), "deployment", "train"); err != nil {
		t.Fatal(err)
	}
	if desc.Kind != manifests.KindDeployment || desc.Name != "train" {
		t.Errorf("describe options %+v", desc)
	}
}

func TestBadUsageIsExitStatus2(t *testing.T) {
	nop := func(cmd *cobra.Command) *cobra.Command { return cmd }
	for name, tc := range map[string]struct {
		cmd  *cobra.Command
		args []string
	}{
		"get of an unknown kind":       {nop(NewCmdGet(&Factory{}, func(*GetOptions) error { return nil })), []string{"pods"}},
		"describe without a name":      {nop(NewCmdDescribe(&Factory{}, func(*DescribeOptions) error { return nil })), []string{"deploy"}},
		"logs of two deployments":      {nop(NewCmdLogs(&Factory{}, func(*LogsOptions) error { return nil })), []string{"a", "b"}},
		"ssh with a command, no --":    {nop(NewCmdSSH(&Factory{}, func(*SSHOptions) error { return nil })), []string{"train", "ls"}},
		"resubmit without a name":      {nop(NewCmdResubmit(&Factory{}, func(*ResubmitOptions) error { return nil })), nil},
		"delete of an unknown kind":    {nop(NewCmdDelete(&Factory{}, func(*DeleteOptions) error { return nil })), []string{"pods", "x"}},
		"get with an unknown -o":       {nop(NewCmdGet(&Factory{}, func(*GetOptions) error { return nil })), []string{"deploy", "-o", "xml"}},
		"secrets new without values":   {nop(NewCmdSecretsNew(&Factory{}, func(*SecretsNewOptions) error { return nil })), []string{"hf"}},
		"status of two deployments":    {nop(NewCmdStatus(&Factory{}, func(*StatusOptions) error { return nil })), []string{"a", "b"}},
		"credentials delete, no name":  {nop(NewCmdCredentialsDelete(&Factory{}, func(*CredentialsDeleteOptions) error { return nil })), nil},
		"submit with an unknown flag":  {nop(NewCmdSubmit(&Factory{}, func(*SubmitOptions) error { return nil })), []string{"img", "--gpu"}},
		"diff without -f":              {nop(NewCmdDiff(&Factory{}, func(*DiffOptions) error { return nil })), nil},
		"prune of stdin without a set": {nop(NewCmdDiff(&Factory{}, func(*DiffOptions) error { return nil })), []string{"-f", "-", "--prune"}},
		"apply --wait --dry-run":       {nop(NewCmdApply(&Factory{}, func(*ApplyOptions) error { return nil })), []string{"-f", "x", "--wait", "--dry-run"}},
		"apply with a bad --timeout":   {nop(NewCmdApply(&Factory{}, func(*ApplyOptions) error { return nil })), []string{"-f", "x", "--timeout", "soon"}},
		"logs without a name":          {nop(NewCmdLogs(&Factory{}, func(*LogsOptions) error { return nil })), nil},
		"ssh with two names before --": {nop(NewCmdSSH(&Factory{}, func(*SSHOptions) error { return nil })), []string{"a", "b", "--", "ls"}},
	} {
		err := parse(tc.cmd, tc.args...)
		if code := ExitCode(err); code != 2 && !(err != nil && isFlagError(err)) {
			t.Errorf("%s: exit status %d (%v), want 2", name, code, err)
		}
	}
}

// isFlagError is cobra's own parse error of an unknown or malformed flag,
// which the root command turns into bad usage (its FlagErrorFunc).
func isFlagError(err error) bool {
	for _, s := range []string{"unknown flag", "invalid argument", "unknown shorthand"} {
		if bytes.Contains([]byte(err.Error()), []byte(s)) {
			return true
		}
	}
	return false
}
