package manifests

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// APIVersion is the only apiVersion anycloud serves.
const APIVersion = "anycloud.dev/v1"

// Kind names a type of object.
type Kind string

// The kinds anycloud knows.
const (
	KindDeployment   Kind = "Deployment"
	KindSecretBundle Kind = "SecretBundle"
	KindCredentials  Kind = "Credentials"
)

// Kinds lists every kind in the order apply writes them: what is referenced
// before what references it.
var Kinds = []Kind{KindCredentials, KindSecretBundle, KindDeployment}

// Well-known finalizers and annotations.
const (
	// FinalizerInUse holds a SecretBundle or Credentials object that was
	// deleted declaratively while deployments still name it.
	FinalizerInUse = "anycloud.dev/in-use"
	// FinalizerVM holds a Deployment until its VM is terminated.
	FinalizerVM = "anycloud.dev/vm"
	// AnnotationRestartedAt is bumped by `anycloud resubmit`: the controller
	// replaces the VM when it differs from the one the VM was made for.
	AnnotationRestartedAt = "anycloud.dev/restartedAt"
	// AnnotationApplySet names the apply set an object was applied from:
	// `apply --prune` deletes the objects of its set that the source no
	// longer holds.
	AnnotationApplySet = "anycloud.dev/apply-set"
	// AnnotationPrune set to PruneDisabled keeps an object from ever being
	// pruned.
	AnnotationPrune = "anycloud.dev/prune"
	PruneDisabled   = "disabled"
	// AnnotationCreatedBy records the verb that wrote an object imperatively
	// ("submit", "secrets-new", "credentials-new").
	AnnotationCreatedBy = "anycloud.dev/created-by"
)

// LocalCredentials is the name of the built-in credentials that select the
// machine's Docker engine. It always exists.
const LocalCredentials = "local"

// TypeMeta says what an object is.
type TypeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       Kind   `json:"kind"`
}

// ObjectMeta is the metadata every object carries. Name is set by the user;
// the rest is maintained by the store.
type ObjectMeta struct {
	Name string `json:"name"`
	// UID is unique over time: an object deleted and created again under the
	// same name gets a new one.
	UID string `json:"uid,omitempty"`
	// ResourceVersion changes on every write; a write that names a stale one
	// is refused (optimistic concurrency).
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// Generation is bumped only when the spec changes.
	Generation        int64             `json:"generation,omitempty"`
	CreationTimestamp time.Time         `json:"creationTimestamp,omitzero"`
	DeletionTimestamp *time.Time        `json:"deletionTimestamp,omitempty"`
	Finalizers        []string          `json:"finalizers,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
}

// HasFinalizer reports whether f is among m's finalizers.
func (m *ObjectMeta) HasFinalizer(f string) bool {
	for _, x := range m.Finalizers {
		if x == f {
			return true
		}
	}
	return false
}

// AddFinalizer adds f once.
func (m *ObjectMeta) AddFinalizer(f string) {
	if !m.HasFinalizer(f) {
		m.Finalizers = append(m.Finalizers, f)
	}
}

// RemoveFinalizer removes f if present.
func (m *ObjectMeta) RemoveFinalizer(f string) {
	out := m.Finalizers[:0]
	for _, x := range m.Finalizers {
		if x != f {
			out = append(out, x)
		}
	}
	m.Finalizers = out
	if len(out) == 0 {
		m.Finalizers = nil
	}
}

// Object is what the store keeps: any of the kinds.
type Object interface {
	GetKind() Kind
	GetMeta() *ObjectMeta
	// SpecJSON is the canonical encoding of the spec; the store bumps
	// generation when it changes.
	SpecJSON() []byte
	// StatusJSON is the canonical encoding of the status.
	StatusJSON() []byte
}

// Condition types and statuses.
const (
	ConditionReady       = "Ready"
	ConditionReconciling = "Reconciling"
	ConditionStalled     = "Stalled"

	ConditionTrue    = "True"
	ConditionFalse   = "False"
	ConditionUnknown = "Unknown"
)

// Condition is one observation of an object's state, as in Kubernetes.
type Condition struct {
	Type   string `json:"type"`
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Message is for people. It never contains a secret value.
	Message string `json:"message,omitempty"`
	// LastTransitionTime changes only when status, reason or message do.
	LastTransitionTime time.Time `json:"lastTransitionTime,omitzero"`
	ObservedGeneration int64     `json:"observedGeneration,omitempty"`
}

// Deployment is a container workload that runs on one VM.
type Deployment struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta       `json:"metadata"`
	Spec     DeploymentSpec   `json:"spec"`
	Status   DeploymentStatus `json:"status,omitzero"`
}

// DeploymentSpec is what the user asks for.
type DeploymentSpec struct {
	// Image is the container image the VM runs.
	Image string `json:"image"`
	// Command overrides the image's entrypoint arguments.
	Command []string `json:"command,omitempty"`
	// Credentials names a Credentials object; "local" is the machine's
	// Docker engine.
	Credentials string `json:"credentials"`
	// VMType is the cloud instance type (for example g6e.xlarge). Defaults
	// to "local" for the local provider.
	VMType string `json:"vmType,omitempty"`
	// Spot asks for spot capacity, recovered automatically when taken back:
	// `spot: true`, or an object with options (SpotSpec).
	Spot SpotSpec `json:"spot,omitzero"`
	// Env is plain environment. A key here wins over the same key from a
	// bundle.
	Env map[string]string `json:"env,omitempty"`
	// Secrets names SecretBundles, merged in order into the environment
	// every time a VM is created.
	Secrets []string `json:"secrets,omitempty"`
	// AWS holds settings that only the aws provider reads.
	AWS *DeploymentAWS `json:"aws,omitempty"`
	// Source is code to check out on the VM and put into the container.
	Source *DeploymentSource `json:"source,omitempty"`
	// Buckets are object storage prefixes synced to and from directories
	// of the container by rclone on the VM, with the deployment's own IAM
	// role (spec.aws.iamRole): no long-lived key reaches the VM.
	Buckets []Bucket `json:"buckets,omitempty"`
}

// Bucket is one bucket prefix synced on the VM: copied to Path before the
// workload starts and, when ReadWrite, copied back every SyncInterval, at
// an interruption warning and when the deployment is deleted.
type Bucket struct {
	// URI is s3://BUCKET or s3://BUCKET/PREFIX.
	URI string `json:"uri"`
	// Path is the absolute directory in the container.
	Path string `json:"path"`
	// Mode is readOnly (the default: the container's mount is read-only
	// and nothing is written back) or readWrite.
	Mode string `json:"mode,omitempty"`
	// Credentials names another Credentials object, for a bucket in
	// another account: the VM gets session credentials minted from them
	// (STS GetFederationToken, 36 hours, scoped to this bucket and
	// prefix) at every VM creation. Empty uses the deployment's role.
	Credentials string `json:"credentials,omitempty"`
	// SyncInterval is how often a readWrite bucket is copied back (a Go
	// duration, default 5m).
	SyncInterval string `json:"syncInterval,omitempty"`
}

// Bucket modes.
const (
	BucketReadOnly  = "readOnly"
	BucketReadWrite = "readWrite"
)

// DefaultSyncInterval is how often a readWrite bucket is copied back.
const DefaultSyncInterval = 5 * time.Minute

// ReadWrite reports whether the bucket is copied back.
func (b Bucket) ReadWrite() bool { return b.Mode == BucketReadWrite }

// Interval is SyncInterval parsed, DefaultSyncInterval when unset or
// invalid (validation reports an invalid one).
func (b Bucket) Interval() time.Duration {
	d, err := time.ParseDuration(b.SyncInterval)
	if err != nil || d <= 0 {
		return DefaultSyncInterval
	}
	return d
}

// BucketAndPrefix splits an s3:// URI into its bucket and prefix (without
// a leading '/'; "" for the whole bucket).
func BucketAndPrefix(uri string) (bucket, prefix string, ok bool) {
	rest, found := strings.CutPrefix(uri, "s3://")
	if !found {
		return "", "", false
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	return bucket, prefix, bucket != ""
}

// IAM role settings of spec.aws.iamRole; anything else is an instance
// profile ARN.
const (
	IAMRoleManaged = "managed"
	IAMRoleNone    = "none"
)

// IAMRole is the deployment's spec.aws.iamRole with its default: managed
// when it has buckets, else none. (The default is not written into the
// spec, so that deployments stored before it existed keep their
// generation.)
func (s *DeploymentSpec) IAMRole() string {
	if s.AWS != nil && s.AWS.IAMRole != "" {
		return s.AWS.IAMRole
	}
	if len(s.Buckets) > 0 {
		return IAMRoleManaged
	}
	return IAMRoleNone
}

// DefaultSourcePath is where the checkout is in the container.
const DefaultSourcePath = "/workspace"

// DeploymentSource is a git repository checked out on the VM at exactly
// one commit, before the workload starts, and mounted into its container
// (which starts there). Every VM of the deployment, recoveries included,
// checks out the same commit. A repository under the GitHub that
// `anycloud login` signed in to is fetched with that token.
type DeploymentSource struct {
	// Git is the repository's https URL; it holds no credentials.
	Git string `json:"git"`
	// Commit is the full SHA (not a branch, which can move).
	Commit string `json:"commit"`
	// Path is where the checkout is in the container
	// (DefaultSourcePath when empty) and the container's working
	// directory.
	Path string `json:"path,omitempty"`
	// ExposeToken gives the container the GitHub token as GITHUB_TOKEN;
	// true unless set to false.
	ExposeToken *bool `json:"exposeToken,omitempty"`
}

// TokenExposed reports whether the container gets GITHUB_TOKEN.
func (s *DeploymentSource) TokenExposed() bool { return s.ExposeToken == nil || *s.ExposeToken }

// SpotSpec is a deployment's use of spot capacity. In a manifest it is
// `spot: true` (or false), or an object, which means true with options:
//
//	spot: {fallback: onDemand, onRebalance: replace}
type SpotSpec struct {
	// Enabled is the boolean form, and true for the object form.
	Enabled bool `json:"-"`
	// Fallback onDemand launches on-demand capacity once every zone tried
	// has no spot capacity; empty keeps trying spot.
	Fallback string `json:"fallback,omitempty"`
	// OnRebalance replace starts the replacement at EC2's rebalance
	// recommendation (an early sign of interruption), not only at the
	// two-minute interruption warning; empty or ignore waits.
	OnRebalance string `json:"onRebalance,omitempty"`
}

// Spot values.
const (
	SpotFallbackOnDemand = "onDemand"
	SpotRebalanceReplace = "replace"
	SpotRebalanceIgnore  = "ignore"
)

// IsZero reports no spot: `omitzero` leaves the field out.
func (s SpotSpec) IsZero() bool { return !s.Enabled && s.Fallback == "" && s.OnRebalance == "" }

// MarshalJSON writes the boolean form when there are no options.
func (s SpotSpec) MarshalJSON() ([]byte, error) {
	if s.Fallback == "" && s.OnRebalance == "" {
		return json.Marshal(s.Enabled)
	}
	type options SpotSpec
	return json.Marshal(options(s))
}

// UnmarshalJSON reads either form.
func (s *SpotSpec) UnmarshalJSON(b []byte) error {
	var on bool
	if err := json.Unmarshal(b, &on); err == nil {
		*s = SpotSpec{Enabled: on}
		return nil
	}
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' {
		return &json.UnmarshalTypeError{Value: jsonKind(t), Type: reflect.TypeOf(true)}
	}
	type options SpotSpec
	var o options
	if err := strictJSON(b, &o); err != nil {
		return err
	}
	*s = SpotSpec(o)
	s.Enabled = true
	return nil
}

// String is the setting for people: true, false, or true with options.
func (s SpotSpec) String() string {
	var opts []string
	if s.Fallback != "" {
		opts = append(opts, "fallback "+s.Fallback)
	}
	if s.OnRebalance != "" {
		opts = append(opts, "on rebalance "+s.OnRebalance)
	}
	if !s.Enabled || len(opts) == 0 {
		return strconv.FormatBool(s.Enabled)
	}
	return "true (" + strings.Join(opts, ", ") + ")"
}

// jsonKind names the kind of a JSON value, as encoding/json's errors do.
func jsonKind(b []byte) string {
	switch {
	case len(b) == 0:
		return "nothing"
	case b[0] == '"':
		return "string"
	case b[0] == '[':
		return "array"
	case b[0] == 'n':
		return "null"
	}
	return "number"
}

// DeploymentAWS holds aws-only settings of a Deployment.
type DeploymentAWS struct {
	// ImageID is the AMI; empty selects the provider's default.
	ImageID string `json:"imageId,omitempty"`
	// Region overrides the credentials' region.
	Region string `json:"region,omitempty"`
	// SubnetID places the instance; empty uses the default VPC.
	SubnetID string `json:"subnetId,omitempty"`
	// SubnetIDs are subnets (in different zones) to try in turn: a zone
	// out of capacity is skipped for a while and the next one tried. The
	// default is SubnetID, or else the default VPC's subnets.
	SubnetIDs []string `json:"subnetIds,omitempty"`
	// SecurityGroupIDs must let this machine reach port 22 (the SSH
	// bootstrap); empty uses the VPC's default group.
	SecurityGroupIDs []string `json:"securityGroupIds,omitempty"`
	// BootTimeout is how long a VM may take from launch until its
	// workload is started (a Go duration such as "15m"); past it the VM
	// is replaced. Default 10m.
	BootTimeout string `json:"bootTimeout,omitempty"`
	// MetadataHopLimit is the IMDSv2 response hop limit (1 to 64). The
	// default, 1, keeps the instance's role credentials from containers on
	// a bridge network; 2 lets them reach the metadata service.
	MetadataHopLimit int `json:"metadataHopLimit,omitempty"`
	// IAMRole is managed (a role and instance profile of the
	// deployment's own, least privilege on exactly its buckets; the
	// default with buckets), none (no role; the default without), or the
	// ARN of an existing instance profile to launch with.
	IAMRole string `json:"iamRole,omitempty"`
	// PolicyARNs are managed policies attached to the managed role.
	PolicyARNs []string `json:"policyArns,omitempty"`
}

// BootTimeoutDuration is BootTimeout parsed, or 0 when unset or invalid
// (validation reports an invalid one).
func (a *DeploymentAWS) BootTimeoutDuration() time.Duration {
	if a == nil || a.BootTimeout == "" {
		return 0
	}
	d, err := time.ParseDuration(a.BootTimeout)
	if err != nil || d <= 0 {
		return 0
	}
	return d
}

// Deployment phases, for people. Conditions are the contract.
const (
	PhasePending     = "Pending"
	PhaseLaunching   = "Launching"
	PhaseRunning     = "Running"
	PhaseRecovering  = "Recovering"
	PhaseFailed      = "Failed"
	PhaseTerminating = "Terminating"
	PhaseActive      = "Active"
)

// DeploymentStatus is what the control plane observed and did.
type DeploymentStatus struct {
	ObservedGeneration int64       `json:"observedGeneration,omitempty"`
	Phase              string      `json:"phase,omitempty"`
	Conditions         []Condition `json:"conditions,omitempty"`
	// VM is the current VM, if any.
	VM *VMStatus `json:"vm,omitempty"`
	// Attempt counts VM creations; each gets its own idempotency token.
	Attempt int `json:"attempt,omitempty"`
	// Recoveries counts VMs created because the previous one was taken
	// away without our asking.
	Recoveries int `json:"recoveries,omitempty"`
	// AttemptGeneration and AttemptRestartedAt are the spec generation and
	// resubmit marker the current attempt was made for; when either
	// differs from the object's, the VM is replaced.
	AttemptGeneration  int64  `json:"attemptGeneration,omitempty"`
	AttemptRestartedAt string `json:"attemptRestartedAt,omitempty"`
	// FastRecoveries counts consecutive recoveries of VMs that died soon
	// after launch; past a few, recovery backs off.
	FastRecoveries int `json:"fastRecoveries,omitempty"`
	// NextLaunchAt holds a backed-off recovery until then.
	NextLaunchAt *time.Time `json:"nextLaunchAt,omitempty"`
	// LostAt is when the VM being replaced was found lost (or warned of);
	// cleared when its replacement is Ready (the time between is a
	// recovery's).
	LostAt *time.Time `json:"lostAt,omitempty"`
	// Draining is a VM that EC2 warned it would take back, kept running
	// while its replacement (VM) starts: make before break. It is
	// terminated when the replacement is Ready, unless EC2 takes it first.
	Draining *VMStatus `json:"draining,omitempty"`
	// IAM is the role and instance profile the VMs are launched with.
	IAM *IAMStatus `json:"iam,omitempty"`
	// Buckets is each bucket's last sync, as the VM last reported it.
	Buckets []BucketStatus `json:"buckets,omitempty"`
}

// IAMStatus names the deployment's role and instance profile.
type IAMStatus struct {
	// Role is the managed role's name ("" with an instance profile of the
	// user's own).
	Role string `json:"role,omitempty"`
	// InstanceProfile is the ARN the VMs are launched with.
	InstanceProfile string `json:"instanceProfile"`
	// Managed: anycloud made the role and profile and removes them with
	// the deployment.
	Managed bool `json:"managed,omitempty"`
}

// BucketStatus is one bucket's sync on the current VM.
type BucketStatus struct {
	URI  string `json:"uri"`
	Path string `json:"path"`
	// LastSync is when the last sync ended; Result is ok or failed, with
	// Message saying why.
	LastSync time.Time `json:"lastSync,omitzero"`
	Result   string    `json:"result,omitempty"`
	Message  string    `json:"message,omitempty"`
	// CredentialsExpireAt is when the session credentials of a bucket in
	// another account expire; they are not refreshed while the VM runs.
	CredentialsExpireAt *time.Time `json:"credentialsExpireAt,omitempty"`
	// ExpiryWarned: the event an hour before that expiry was recorded.
	ExpiryWarned bool `json:"expiryWarned,omitempty"`
}

// Bucket sync results.
const (
	SyncOK     = "ok"
	SyncFailed = "failed"
)

// VMStatus describes one VM.
type VMStatus struct {
	ID         string    `json:"id"`
	Market     string    `json:"market,omitempty"` // spot | on-demand | local
	Address    string    `json:"address,omitempty"`
	LaunchedAt time.Time `json:"launchedAt,omitzero"`
	Attempt    int       `json:"attempt,omitempty"`
	// BundleVersions records the generation of each bundle whose values the
	// VM received.
	BundleVersions map[string]int64 `json:"bundleVersions,omitempty"`
	// RestartedAt is the resubmit marker the VM was created for.
	RestartedAt string `json:"restartedAt,omitempty"`
	// Generation is the spec generation the VM was created for.
	Generation int64 `json:"generation,omitempty"`
	// Scope is the provider scope (credentials and region) the VM lives
	// in: when the deployment's credentials or region change, the VM is
	// ended there and replaced in the new scope.
	Scope string `json:"scope,omitempty"`
	// Bootstrapped is true once the workload was started on the VM with
	// its resolved env, for providers that do that in a step after launch
	// (aws, over SSH). The local provider starts it at launch.
	Bootstrapped bool `json:"bootstrapped,omitempty"`
}

// SecretBundle is a named set of write-only secret values. The values
// themselves never appear in a stored or returned object: the store keeps
// them sealed beside it and reports only their key names.
type SecretBundle struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta         `json:"metadata"`
	Spec     SecretBundleSpec   `json:"spec"`
	Status   SecretBundleStatus `json:"status,omitzero"`
}

// SecretBundleSpec says where values come from. Only FromEnv survives into
// the store; Sealed and StringData are consumed at apply time.
type SecretBundleSpec struct {
	// FromEnv names variables read from the applying process's environment.
	FromEnv []string `json:"fromEnv,omitempty"`
	// Sealed holds values encrypted to the control plane by
	// `anycloud secrets seal`; safe to commit.
	Sealed map[string]string `json:"sealed,omitempty"`
	// StringData holds plaintext values; accepted, with a warning.
	StringData map[string]string `json:"stringData,omitempty"`
}

// SecretBundleStatus lists key names, never values.
type SecretBundleStatus struct {
	Phase     string    `json:"phase,omitempty"`
	Keys      []string  `json:"keys,omitempty"`
	UpdatedAt time.Time `json:"updatedAt,omitzero"`
	// UsedBy lists the deployments that name the bundle.
	UsedBy []ObjectRef `json:"usedBy,omitempty"`
}

// ObjectRef names one object.
type ObjectRef struct {
	Kind Kind   `json:"kind,omitempty"`
	Name string `json:"name"`
	UID  string `json:"uid,omitempty"`
}

func (r ObjectRef) String() string {
	if r.UID == "" {
		return r.Name
	}
	return fmt.Sprintf("%s (uid %s)", r.Name, r.UID)
}

// Credentials says how to reach a cloud.
type Credentials struct {
	TypeMeta `json:",inline"`
	Metadata ObjectMeta        `json:"metadata"`
	Spec     CredentialsSpec   `json:"spec"`
	Status   CredentialsStatus `json:"status,omitzero"`
}

// Providers.
const (
	ProviderAWS   = "aws"
	ProviderLocal = "local"
)

// CredentialsSpec selects a provider and its settings.
type CredentialsSpec struct {
	Provider string          `json:"provider"`
	AWS      *AWSCredentials `json:"aws,omitempty"`
}

// AWSCredentials: a named profile, static keys, or (neither) the default
// AWS credential chain.
type AWSCredentials struct {
	Region      string `json:"region,omitempty"`
	Profile     string `json:"profile,omitempty"`
	AccessKeyID string `json:"accessKeyId,omitempty"`
	// SecretAccessKeyFromEnv names an environment variable of the applying
	// process that holds the secret access key. The key is stored sealed.
	SecretAccessKeyFromEnv string `json:"secretAccessKeyFromEnv,omitempty"`
	// EndpointURL points the EC2 client at an emulator or a private
	// endpoint.
	EndpointURL string `json:"endpointURL,omitempty"`
	// Interruptions is how anycloud learns of EC2's events about its
	// instances (spot interruption warnings, rebalance recommendations,
	// state changes, scheduled changes) before the next resync: auto (the
	// default) makes an SQS queue and EventBridge rules for this account
	// and region, off listens to none (the resync alone notices).
	Interruptions string `json:"interruptions,omitempty"`
	// InterruptionQueue names an existing SQS queue that EventBridge
	// already feeds with those events: anycloud consumes it and makes
	// nothing.
	InterruptionQueue string `json:"interruptionQueue,omitempty"`
}

// Interruptions modes.
const (
	InterruptionsAuto = "auto"
	InterruptionsOff  = "off"
)

// CredentialsStatus tells whether secret material is stored, never what.
type CredentialsStatus struct {
	Phase string `json:"phase,omitempty"`
	// SecretKeys lists the names of stored secret fields.
	SecretKeys []string    `json:"secretKeys,omitempty"`
	UsedBy     []ObjectRef `json:"usedBy,omitempty"`
	// LeftoverVMs lists the VMs of deployments deleted with --force before
	// their VM was terminated. The orphan sweep terminates them; until it
	// has, the credentials are kept, because they are the only way to
	// reach those VMs.
	LeftoverVMs []LeftoverVM `json:"leftoverVMs,omitempty"`
}

// LeftoverVM is a VM that a forced delete left behind: its deployment is
// gone, the VM may still run.
type LeftoverVM struct {
	Deployment string `json:"deployment"`
	UID        string `json:"uid"`
	// VMID is empty when a launch was under way and no VM was recorded.
	VMID string `json:"vmID,omitempty"`
	// Region is the deployment's region override, if any.
	Region string `json:"region,omitempty"`
	// Scope is the provider scope the VM was recorded in, if known.
	Scope string    `json:"scope,omitempty"`
	Since time.Time `json:"since"`
}

// Kind, meta and canonical encodings for each type.

func (d *Deployment) GetKind() Kind          { return KindDeployment }
func (d *Deployment) GetMeta() *ObjectMeta   { return &d.Metadata }
func (d *Deployment) SpecJSON() []byte       { return mustJSON(d.Spec) }
func (d *Deployment) StatusJSON() []byte     { return mustJSON(d.Status) }
func (b *SecretBundle) GetKind() Kind        { return KindSecretBundle }
func (b *SecretBundle) GetMeta() *ObjectMeta { return &b.Metadata }
func (b *SecretBundle) SpecJSON() []byte     { return mustJSON(b.Spec) }
func (b *SecretBundle) StatusJSON() []byte   { return mustJSON(b.Status) }
func (c *Credentials) GetKind() Kind         { return KindCredentials }
func (c *Credentials) GetMeta() *ObjectMeta  { return &c.Metadata }
func (c *Credentials) SpecJSON() []byte      { return mustJSON(c.Spec) }
func (c *Credentials) StatusJSON() []byte    { return mustJSON(c.Status) }
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// The types above hold only strings, numbers, maps and slices.
		panic(fmt.Sprintf("manifests: encode: %v", err))
	}
	return b
}

// New returns an empty object of kind k with its TypeMeta set.
func New(k Kind) (Object, error) {
	tm := TypeMeta{APIVersion: APIVersion, Kind: k}
	switch k {
	case KindDeployment:
		return &Deployment{TypeMeta: tm}, nil
	case KindSecretBundle:
		return &SecretBundle{TypeMeta: tm}, nil
	case KindCredentials:
		return &Credentials{TypeMeta: tm}, nil
	}
	return nil, fmt.Errorf("unknown kind %q", k)
}

// Unmarshal decodes one stored or transmitted object of kind k. It is not
// strict: use Decode for user input.
func Unmarshal(k Kind, data []byte) (Object, error) {
	o, err := New(k)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, o); err != nil {
		return nil, fmt.Errorf("decode %s: %w", k, err)
	}
	return o, nil
}

// DeepCopy returns a copy of o that shares nothing with it. Objects read
// from the store or a cache are copied before they are changed. It walks
// the value with reflection (the controller copies objects several times
// a reconcile; a JSON round trip cost more than the reconcile itself).
func DeepCopy[T Object](o T) T {
	v := reflect.ValueOf(o)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return o
	}
	return deepCopy(v).Interface().(T)
}

// deepCopy copies v, following pointers, slices and maps. Structs are
// copied field by field; a struct with unexported fields (time.Time) is
// a value and copied as one.
func deepCopy(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return reflect.Zero(v.Type())
		}
		out := reflect.New(v.Type().Elem())
		out.Elem().Set(deepCopy(v.Elem()))
		return out
	case reflect.Slice:
		if v.IsNil() {
			return reflect.Zero(v.Type())
		}
		out := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := range v.Len() {
			out.Index(i).Set(deepCopy(v.Index(i)))
		}
		return out
	case reflect.Map:
		if v.IsNil() {
			return reflect.Zero(v.Type())
		}
		out := reflect.MakeMapWithSize(v.Type(), v.Len())
		for it := v.MapRange(); it.Next(); {
			out.SetMapIndex(it.Key(), deepCopy(it.Value()))
		}
		return out
	case reflect.Struct:
		t := v.Type()
		out := reflect.New(t).Elem()
		for i := range t.NumField() {
			if !t.Field(i).IsExported() {
				out.Set(v) // a value type with private state (time.Time)
				return out
			}
		}
		for i := range t.NumField() {
			out.Field(i).Set(deepCopy(v.Field(i)))
		}
		return out
	case reflect.Interface:
		if v.IsNil() {
			return reflect.Zero(v.Type())
		}
		out := reflect.New(v.Type()).Elem()
		out.Set(deepCopy(v.Elem()))
		return out
	}
	return v
}

// Ref returns the reference to o.
func Ref(o Object) ObjectRef {
	m := o.GetMeta()
	return ObjectRef{Kind: o.GetKind(), Name: m.Name, UID: m.UID}
}

// References lists the objects that d names, each once, in order: its
// credentials, then its bundles, then the credentials of its buckets in
// other accounts.
func (d *Deployment) References() []ObjectRef {
	refs := make([]ObjectRef, 0, 1+len(d.Spec.Secrets))
	if d.Spec.Credentials != "" {
		refs = append(refs, ObjectRef{Kind: KindCredentials, Name: d.Spec.Credentials})
	}
	for _, s := range d.Spec.Secrets {
		refs = append(refs, ObjectRef{Kind: KindSecretBundle, Name: s})
	}
	for _, b := range d.Spec.Buckets {
		r := ObjectRef{Kind: KindCredentials, Name: b.Credentials}
		if b.Credentials != "" && !slices.Contains(refs, r) {
			refs = append(refs, r)
		}
	}
	return refs
}

// Terminal reports whether d no longer uses what it names: its deletion has
// finished terminating its VM (no VM finalizer left).
func (d *Deployment) Terminal() bool {
	return d.Metadata.DeletionTimestamp != nil && !d.Metadata.HasFinalizer(FinalizerVM)
}

// FindCondition returns the condition of type t, or nil.
func FindCondition(conds []Condition, t string) *Condition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

// SetCondition sets c in conds, keeping LastTransitionTime when status,
// reason and message are unchanged.
func SetCondition(conds []Condition, c Condition, now time.Time) []Condition {
	if old := FindCondition(conds, c.Type); old != nil {
		if old.Status == c.Status && old.Reason == c.Reason && old.Message == c.Message {
			c.LastTransitionTime = old.LastTransitionTime
		} else {
			c.LastTransitionTime = now
		}
		*old = c
		return conds
	}
	c.LastTransitionTime = now
	return append(conds, c)
}

// RemoveCondition drops the condition of type t.
func RemoveCondition(conds []Condition, t string) []Condition {
	out := conds[:0]
	for _, c := range conds {
		if c.Type != t {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// NewUID is a random (version 4) UUID: the uid of a new object, and
// anything else that needs an id of that form.
func NewUID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand since Go 1.24)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
