package manifests

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func validDeployment() *Deployment {
	return &Deployment{
		TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindDeployment},
		Metadata: ObjectMeta{Name: "train", Labels: map[string]string{"team": "ml", "anycloud.dev/app": "train"}},
		Spec: DeploymentSpec{
			Image:       "ghcr.io/me/train:latest",
			Command:     []string{"python", "train.py"},
			Credentials: "my-aws",
			VMType:      "g6e.xlarge",
			Spot:        SpotSpec{Enabled: true},
			Env:         map[string]string{"EPOCHS": "3", "_under": "x"},
			Secrets:     []string{"hf", "wandb"},
		},
	}
}

func validBundle() *SecretBundle {
	return &SecretBundle{
		TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindSecretBundle},
		Metadata: ObjectMeta{Name: "hf"},
		Spec: SecretBundleSpec{
			FromEnv:    []string{"HF_TOKEN"},
			Sealed:     map[string]string{"WANDB_API_KEY": "sealed"},
			StringData: map[string]string{"X": "y"},
		},
	}
}

func validCredentials() *Credentials {
	return &Credentials{
		TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindCredentials},
		Metadata: ObjectMeta{Name: "my-aws"},
		Spec: CredentialsSpec{
			Provider: ProviderAWS,
			AWS:      &AWSCredentials{Region: "us-east-1", Profile: "default"},
		},
	}
}

func TestValidate(t *testing.T) {
	dep := func(f func(*Deployment)) Object { d := validDeployment(); f(d); return d }
	bundle := func(f func(*SecretBundle)) Object { b := validBundle(); f(b); return b }
	creds := func(f func(*Credentials)) Object { c := validCredentials(); f(c); return c }
	tests := []struct {
		name string
		obj  Object
		want ErrorList
	}{
		{name: "valid deployment", obj: validDeployment()},
		{name: "valid bundle", obj: validBundle()},
		{name: "valid aws credentials with a profile", obj: validCredentials()},
		{
			name: "valid aws credentials with static keys and an emulator",
			obj: creds(func(c *Credentials) {
				c.Spec.AWS = &AWSCredentials{AccessKeyID: "AKIA", SecretAccessKeyFromEnv: "AWS_SECRET_ACCESS_KEY", EndpointURL: "http://localhost:5000"}
			}),
		},
		{
			name: "valid aws credentials from the default chain",
			obj:  creds(func(c *Credentials) { c.Spec.AWS = nil }),
		},
		{
			name: "valid local credentials",
			obj:  creds(func(c *Credentials) { c.Metadata.Name, c.Spec = "local", CredentialsSpec{Provider: ProviderLocal} }),
		},
		{
			name: "a name of 63 characters is allowed",
			obj:  dep(func(d *Deployment) { d.Metadata.Name = strings.Repeat("a", 63) }),
		},
		{
			name: "missing name",
			obj:  dep(func(d *Deployment) { d.Metadata.Name = "" }),
			want: ErrorList{{Field: "metadata.name", Msg: "required"}},
		},
		{
			name: "upper-case name",
			obj:  dep(func(d *Deployment) { d.Metadata.Name = "Train" }),
			want: ErrorList{{Field: "metadata.name", Msg: `"Train" must be lower-case letters, digits and '-', starting and ending with a letter or digit`}},
		},
		{
			name: "name ending in a dash",
			obj:  bundle(func(b *SecretBundle) { b.Metadata.Name = "hf-" }),
			want: ErrorList{{Field: "metadata.name", Msg: `"hf-" must be lower-case letters, digits and '-', starting and ending with a letter or digit`}},
		},
		{
			name: "name with a dot",
			obj:  creds(func(c *Credentials) { c.Metadata.Name = "my.aws" }),
			want: ErrorList{{Field: "metadata.name", Msg: `"my.aws" must be lower-case letters, digits and '-', starting and ending with a letter or digit`}},
		},
		{
			name: "name too long",
			obj:  dep(func(d *Deployment) { d.Metadata.Name = strings.Repeat("a", 64) }),
			want: ErrorList{{Field: "metadata.name", Msg: "must be at most 63 characters"}},
		},
		{
			name: "invalid label key",
			obj:  dep(func(d *Deployment) { d.Metadata.Labels = map[string]string{"bad key": "x"} }),
			want: ErrorList{{Field: "metadata.labels.bad key", Msg: "invalid label key"}},
		},
		{
			name: "missing image",
			obj:  dep(func(d *Deployment) { d.Spec.Image = "" }),
			want: ErrorList{{Field: "spec.image", Msg: "required"}},
		},
		{
			name: "blank image",
			obj:  dep(func(d *Deployment) { d.Spec.Image = "  " }),
			want: ErrorList{{Field: "spec.image", Msg: "required"}},
		},
		{
			name: "invalid credentials name",
			obj:  dep(func(d *Deployment) { d.Spec.Credentials = "My_AWS" }),
			want: ErrorList{{Field: "spec.credentials", Msg: `"My_AWS" must be lower-case letters, digits and '-', starting and ending with a letter or digit`}},
		},
		{
			name: "secrets entry listed twice",
			obj:  dep(func(d *Deployment) { d.Spec.Secrets = []string{"hf", "wandb", "hf"} }),
			want: ErrorList{{Field: "spec.secrets[2]", Msg: `bundle "hf" is listed twice`}},
		},
		{
			name: "invalid secrets entry",
			obj:  dep(func(d *Deployment) { d.Spec.Secrets = []string{"hf", ""} }),
			want: ErrorList{{Field: "spec.secrets[1]", Msg: "required"}},
		},
		{
			name: "invalid env keys, in key order",
			obj:  dep(func(d *Deployment) { d.Spec.Env = map[string]string{"OK": "1", "MY-KEY": "1", "1ST": "1"} }),
			want: ErrorList{
				{Field: "spec.env.1ST", Msg: `"1ST" is not a valid environment variable name`},
				{Field: "spec.env.MY-KEY", Msg: `"MY-KEY" is not a valid environment variable name`},
			},
		},
		{
			name: "every problem at once",
			obj: dep(func(d *Deployment) {
				d.Metadata.Name, d.Spec.Image, d.Spec.Secrets = "", "", []string{"a", "a"}
			}),
			want: ErrorList{
				{Field: "metadata.name", Msg: "required"},
				{Field: "spec.image", Msg: "required"},
				{Field: "spec.secrets[1]", Msg: `bundle "a" is listed twice`},
			},
		},
		{
			// As stored, or as made by `secrets new`, whose values travel
			// beside the object. Check refuses it in a file.
			name: "bundle with no keys in its spec",
			obj:  bundle(func(b *SecretBundle) { b.Spec = SecretBundleSpec{} }),
		},
		{
			name: "key in both fromEnv and stringData",
			obj:  bundle(func(b *SecretBundle) { b.Spec.StringData = map[string]string{"HF_TOKEN": "x"} }),
			want: ErrorList{{Field: "spec.stringData.HF_TOKEN", Msg: `key "HF_TOKEN" is also set in spec.fromEnv`}},
		},
		{
			name: "key in both sealed and stringData",
			obj:  bundle(func(b *SecretBundle) { b.Spec.StringData = map[string]string{"WANDB_API_KEY": "x"} }),
			want: ErrorList{{Field: "spec.stringData.WANDB_API_KEY", Msg: `key "WANDB_API_KEY" is also set in spec.sealed`}},
		},
		{
			name: "key twice in fromEnv",
			obj:  bundle(func(b *SecretBundle) { b.Spec.FromEnv = []string{"A", "A"} }),
			want: ErrorList{{Field: "spec.fromEnv", Msg: `key "A" is also set in spec.fromEnv`}},
		},
		{
			name: "invalid bundle keys",
			obj: bundle(func(b *SecretBundle) {
				b.Spec.FromEnv = []string{"HF-TOKEN"}
				b.Spec.Sealed = map[string]string{"a b": "x"}
			}),
			// A key that is not a name may be a value: neither the message
			// nor the field path carries it; Lookup (never printed) lets
			// Locate find its line.
			want: ErrorList{
				{Field: "spec.fromEnv", Lookup: "spec.fromEnv[0]", Msg: "a key is not a valid environment variable name (letters, digits and '_', not starting with a digit); it is not shown, as it may be a value"},
				{Field: "spec.sealed", Lookup: "spec.sealed.a b", Msg: "a key is not a valid environment variable name (letters, digits and '_', not starting with a digit); it is not shown, as it may be a value (is a ':' missing after the key?)"},
			},
		},
		{
			name: "credentials without a provider",
			obj:  creds(func(c *Credentials) { c.Spec = CredentialsSpec{} }),
			want: ErrorList{{Field: "spec.provider", Msg: "required (aws or local)"}},
		},
		{
			name: "credentials with an unknown provider",
			obj:  creds(func(c *Credentials) { c.Spec.Provider = "gcp" }),
			want: ErrorList{{Field: "spec.provider", Msg: `unknown provider "gcp" (aws or local)`}},
		},
		{
			name: "provider names are case-sensitive",
			obj:  creds(func(c *Credentials) { c.Spec.Provider = "AWS" }),
			want: ErrorList{{Field: "spec.provider", Msg: `unknown provider "AWS" (aws or local)`}},
		},
		{
			name: "aws with both profile and accessKeyId",
			obj: creds(func(c *Credentials) {
				c.Spec.AWS = &AWSCredentials{Profile: "default", AccessKeyID: "AKIA", SecretAccessKeyFromEnv: "AWS_SECRET_ACCESS_KEY"}
			}),
			want: ErrorList{{Field: "spec.aws.profile", Msg: "set either profile or accessKeyId, not both"}},
		},
		{
			name: "secretAccessKeyFromEnv without accessKeyId",
			obj:  creds(func(c *Credentials) { c.Spec.AWS = &AWSCredentials{SecretAccessKeyFromEnv: "AWS_SECRET_ACCESS_KEY"} }),
			want: ErrorList{{Field: "spec.aws.secretAccessKeyFromEnv", Msg: "needs spec.aws.accessKeyId"}},
		},
		{
			name: "credentials named local with provider aws",
			obj:  creds(func(c *Credentials) { c.Metadata.Name = "local" }),
			want: ErrorList{{Field: "metadata.name", Msg: `"local" is reserved for the local Docker provider`}},
		},
		{
			name: "endpointURL without a scheme",
			obj:  creds(func(c *Credentials) { c.Spec.AWS.EndpointURL = "localhost:5000" }),
			want: ErrorList{{Field: "spec.aws.endpointURL", Msg: "must be an http:// or https:// URL"}},
		},
		{
			name: "endpointURL with another scheme",
			obj:  creds(func(c *Credentials) { c.Spec.AWS.EndpointURL = "ftp://ec2.example.com" }),
			want: ErrorList{{Field: "spec.aws.endpointURL", Msg: "must be an http:// or https:// URL"}},
		},
		{
			name: "https endpointURL",
			obj:  creds(func(c *Credentials) { c.Spec.AWS.EndpointURL = "https://ec2.example.com" }),
		},
		{
			name: "aws settings with provider local",
			obj:  creds(func(c *Credentials) { c.Spec.Provider = ProviderLocal }),
			want: ErrorList{{Field: "spec.aws", Msg: "not allowed with provider local"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Validate(tt.obj)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDefaultDeploymentCredentialsIsLocal(t *testing.T) {
	d := validDeployment()
	d.Spec.Credentials = ""
	Default(d)
	if d.Spec.Credentials != LocalCredentials {
		t.Errorf("credentials = %q, want %q", d.Spec.Credentials, LocalCredentials)
	}
	if errs := Validate(d); len(errs) != 0 {
		t.Errorf("a defaulted deployment is invalid: %v", errs)
	}

	named := validDeployment()
	Default(named)
	if named.Spec.Credentials != "my-aws" {
		t.Errorf("Default replaced credentials %q with %q", "my-aws", named.Spec.Credentials)
	}
}

func TestDefaultGivesAWSCredentialsTheirSettings(t *testing.T) {
	c := validCredentials()
	c.Spec.AWS = nil
	Default(c)
	if diff := cmp.Diff(&AWSCredentials{}, c.Spec.AWS); diff != "" {
		t.Errorf("aws after Default (-want +got):\n%s", diff)
	}

	local := &Credentials{Metadata: ObjectMeta{Name: "local"}, Spec: CredentialsSpec{Provider: ProviderLocal}}
	Default(local)
	if local.Spec.AWS != nil {
		t.Errorf("Default gave local credentials aws settings %+v", local.Spec.AWS)
	}
}

func TestSensitiveEnvKeys(t *testing.T) {
	env := map[string]string{
		"HF_TOKEN":         "x",
		"DB_PASSWORD":      "x",
		"API_KEY":          "x",
		"EPOCHS":           "3",
		"wandb_secret":     "x",
		"AWS_CREDENTIALS":  "x",
		"MODEL_NAME":       "x",
		"LEARNING_RATE":    "x",
		"SSH_PRIVATE_PATH": "x",
	}
	want := []string{"API_KEY", "AWS_CREDENTIALS", "DB_PASSWORD", "HF_TOKEN", "SSH_PRIVATE_PATH", "wandb_secret"}
	if diff := cmp.Diff(want, SensitiveEnvKeys(env)); diff != "" {
		t.Errorf("SensitiveEnvKeys (-want +got):\n%s", diff)
	}
	if got := SensitiveEnvKeys(map[string]string{"EPOCHS": "3"}); got != nil {
		t.Errorf("SensitiveEnvKeys(EPOCHS) = %v, want none", got)
	}
}

func TestParseKindAcceptsKubectlNames(t *testing.T) {
	tests := []struct {
		in   string
		want Kind
	}{
		{"deployment", KindDeployment},
		{"deployments", KindDeployment},
		{"deploy", KindDeployment},
		{"Deployment", KindDeployment},
		{"DEPLOY", KindDeployment},
		{"secretbundle", KindSecretBundle},
		{"secretbundles", KindSecretBundle},
		{"SecretBundles", KindSecretBundle},
		{"sb", KindSecretBundle},
		{"SB", KindSecretBundle},
		{"credentials", KindCredentials},
		{"Credentials", KindCredentials},
		{"creds", KindCredentials},
		{"CREDS", KindCredentials},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseKind(tt.in)
			if err != nil || got != tt.want {
				t.Errorf("ParseKind(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseKindRejectsOtherNames(t *testing.T) {
	for _, in := range []string{"", "pod", "pods", "deploymentz", "dep", "bundle", "s b", "credentialz"} {
		t.Run(in, func(t *testing.T) {
			got, err := ParseKind(in)
			if err == nil {
				t.Fatalf("ParseKind(%q) = %q, want an error", in, got)
			}
			if !strings.Contains(err.Error(), `"`+in+`"`) {
				t.Errorf("error %q does not name %q", err, in)
			}
		})
	}
}

func TestPluralIsTheAPIPathName(t *testing.T) {
	for k, want := range map[Kind]string{
		KindDeployment:   "deployments",
		KindSecretBundle: "secretbundles",
		KindCredentials:  "credentials",
	} {
		if got := Plural(k); got != want {
			t.Errorf("Plural(%s) = %q, want %q", k, got, want)
		}
		// What Plural gives, ParseKind takes back.
		if back, err := ParseKind(Plural(k)); err != nil || back != k {
			t.Errorf("ParseKind(Plural(%s)) = %q, %v", k, back, err)
		}
	}
}

func TestSetConditionChangesTransitionTimeOnlyOnChange(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Hour)
	ready := Condition{Type: ConditionReady, Status: ConditionFalse, Reason: "Launching", Message: "waiting for the VM", ObservedGeneration: 1}
	stalled := Condition{Type: ConditionStalled, Status: ConditionTrue, Reason: "Bad", LastTransitionTime: t0}

	tests := []struct {
		name     string
		set      Condition
		wantTime time.Time
	}{
		{"nothing changed", ready, t0},
		{"only observedGeneration changed", func() Condition { c := ready; c.ObservedGeneration = 2; return c }(), t0},
		{"a new time in the input is ignored", func() Condition { c := ready; c.LastTransitionTime = t1.Add(time.Hour); return c }(), t0},
		{"status changed", func() Condition { c := ready; c.Status = ConditionTrue; return c }(), t1},
		{"reason changed", func() Condition { c := ready; c.Reason = "Running"; return c }(), t1},
		{"message changed", func() Condition { c := ready; c.Message = "other"; return c }(), t1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first := ready
			first.LastTransitionTime = t0
			conds := []Condition{stalled, first}
			got := SetCondition(conds, tt.set, t1)
			want := tt.set
			want.LastTransitionTime = tt.wantTime
			if diff := cmp.Diff([]Condition{stalled, want}, got); diff != "" {
				t.Errorf("conditions (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("new condition is appended with now", func(t *testing.T) {
		got := SetCondition([]Condition{stalled}, ready, t1)
		want := ready
		want.LastTransitionTime = t1
		if diff := cmp.Diff([]Condition{stalled, want}, got); diff != "" {
			t.Errorf("conditions (-want +got):\n%s", diff)
		}
	})
}

func TestRemoveConditionDropsOnlyThatType(t *testing.T) {
	conds := []Condition{{Type: ConditionReady}, {Type: ConditionStalled}, {Type: ConditionReconciling}}
	got := RemoveCondition(conds, ConditionStalled)
	if diff := cmp.Diff([]Condition{{Type: ConditionReady}, {Type: ConditionReconciling}}, got); diff != "" {
		t.Errorf("conditions (-want +got):\n%s", diff)
	}
	if got := RemoveCondition([]Condition{{Type: ConditionStalled}}, ConditionStalled); got != nil {
		t.Errorf("removing the last condition left %v, want nil", got)
	}
	if FindCondition(got, ConditionReady) == nil || FindCondition(got, ConditionStalled) != nil {
		t.Errorf("FindCondition disagrees with RemoveCondition on %v", got)
	}
}

func TestDeepCopySharesNothing(t *testing.T) {
	deleted := time.Date(2025, 1, 2, 0, 0, 0, 0, time.UTC)
	// full builds a Deployment with every map, slice and pointer set,
	// afresh each time, so that the original can be compared with what it
	// was without trusting DeepCopy.
	full := func() *Deployment {
		d := validDeployment()
		at := deleted
		d.Metadata.UID = "u1"
		d.Metadata.CreationTimestamp = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		d.Metadata.DeletionTimestamp = &at
		d.Metadata.Finalizers = []string{FinalizerVM}
		d.Metadata.Annotations = map[string]string{AnnotationCreatedBy: "submit"}
		d.Spec.AWS = &DeploymentAWS{ImageID: "ami-1", Region: "us-east-1"}
		d.Status = DeploymentStatus{
			ObservedGeneration: 1,
			Phase:              PhaseRunning,
			Conditions:         []Condition{{Type: ConditionReady, Status: ConditionTrue, LastTransitionTime: deleted}},
			VM:                 &VMStatus{ID: "i-1", Market: "spot", BundleVersions: map[string]int64{"hf": 1}},
			Attempt:            1,
		}
		return d
	}
	orig := full()
	cp := DeepCopy(orig)
	if diff := cmp.Diff(orig, cp); diff != "" {
		t.Fatalf("copy differs from the original (-orig +copy):\n%s", diff)
	}

	// Change everything reachable through the copy.
	cp.Metadata.Labels["team"] = "changed"
	cp.Metadata.Annotations[AnnotationCreatedBy] = "changed"
	cp.Metadata.Finalizers[0] = "changed"
	*cp.Metadata.DeletionTimestamp = deleted.Add(time.Hour)
	cp.Spec.Command[0] = "changed"
	cp.Spec.Env["EPOCHS"] = "changed"
	cp.Spec.Secrets[0] = "changed"
	cp.Spec.AWS.ImageID = "changed"
	cp.Status.Conditions[0].Status = ConditionFalse
	cp.Status.VM.ID = "changed"
	cp.Status.VM.BundleVersions["hf"] = 2

	if diff := cmp.Diff(full(), orig); diff != "" {
		t.Errorf("changing the copy changed the original (-before +after):\n%s", diff)
	}

	bundle := validBundle()
	bundleCopy := DeepCopy(bundle)
	bundleCopy.Spec.FromEnv[0] = "changed"
	bundleCopy.Spec.Sealed["WANDB_API_KEY"] = "changed"
	if diff := cmp.Diff(validBundle(), bundle); diff != "" {
		t.Errorf("changing the bundle copy changed the original (-want +got):\n%s", diff)
	}

	creds := validCredentials()
	credsCopy := DeepCopy(creds)
	credsCopy.Spec.AWS.Profile = "changed"
	if diff := cmp.Diff(validCredentials(), creds); diff != "" {
		t.Errorf("changing the credentials copy changed the original (-want +got):\n%s", diff)
	}
}

func TestUnmarshalRoundTripsEveryKind(t *testing.T) {
	for _, o := range []Object{validDeployment(), validBundle(), validCredentials()} {
		t.Run(string(o.GetKind()), func(t *testing.T) {
			data := mustJSON(o)
			got, err := Unmarshal(o.GetKind(), data)
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if diff := cmp.Diff(o, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := Unmarshal("Pod", []byte(`{}`)); err == nil {
		t.Error("Unmarshal of an unknown kind succeeded")
	}
}

func TestFinalizers(t *testing.T) {
	var m ObjectMeta
	m.AddFinalizer(FinalizerVM)
	m.AddFinalizer(FinalizerVM)
	m.AddFinalizer(FinalizerInUse)
	if diff := cmp.Diff([]string{FinalizerVM, FinalizerInUse}, m.Finalizers); diff != "" {
		t.Errorf("after adding (-want +got):\n%s", diff)
	}
	m.RemoveFinalizer(FinalizerVM)
	if m.HasFinalizer(FinalizerVM) || !m.HasFinalizer(FinalizerInUse) {
		t.Errorf("after removing %s: %v", FinalizerVM, m.Finalizers)
	}
	m.RemoveFinalizer(FinalizerInUse)
	if m.Finalizers != nil {
		t.Errorf("after removing the last: %v, want nil", m.Finalizers)
	}
}

func TestDeploymentReferencesCredentialsThenBundles(t *testing.T) {
	d := validDeployment()
	want := []ObjectRef{
		{Kind: KindCredentials, Name: "my-aws"},
		{Kind: KindSecretBundle, Name: "hf"},
		{Kind: KindSecretBundle, Name: "wandb"},
	}
	if diff := cmp.Diff(want, d.References()); diff != "" {
		t.Errorf("References (-want +got):\n%s", diff)
	}
}

func TestDeploymentIsTerminalOnlyOnceDeletedWithoutItsVM(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name       string
		deleted    bool
		finalizers []string
		want       bool
	}{
		{"live", false, nil, false},
		{"live with a VM", false, []string{FinalizerVM}, false},
		{"deleting, VM still there", true, []string{FinalizerVM}, false},
		{"deleted, VM gone", true, nil, true},
		{"deleted, other finalizer", true, []string{FinalizerInUse}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := validDeployment()
			d.Metadata.Finalizers = tt.finalizers
			if tt.deleted {
				d.Metadata.DeletionTimestamp = &now
			}
			if got := d.Terminal(); got != tt.want {
				t.Errorf("Terminal() = %v, want %v", got, tt.want)
			}
		})
	}
}
