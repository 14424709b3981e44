// Package provider is the seam between the controller and clouds.
//
// The vocabulary: a Provider launches, lists and terminates VMs; a VM is
// what it reports about one of them, in domain terms (no SDK types above
// this package); a LaunchRequest is everything a launch needs, secrets
// already resolved. Every VM carries the deployment's uid and the attempt
// that made it, as tags or labels, so that a restarted control plane
// matches VMs to deployments without any local record.
//
// Errors are classified in one place per implementation into the
// sentinels below, tested with errors.Is.
//
// Implementations: provider/local (the machine's Docker engine: a "VM" is a
// container) and provider/aws (EC2).
package provider

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/anycloud/anycloud/manifests"
)

// Provider manages the VMs of one account and region (or one Docker
// engine). Implementations are safe for concurrent use.
type Provider interface {
	// Key names the (credentials, region) scope; the controller lists each
	// scope once per resync and shares the answer between deployments.
	Key() string
	// Launch creates a VM. It is idempotent for a LaunchRequest.Token: a
	// retry with the same token returns the VM the first call made.
	Launch(ctx context.Context, req LaunchRequest) (VM, error)
	// List returns every VM anycloud manages in this scope, in as few
	// calls as the cloud allows, including recently terminated ones.
	List(ctx context.Context) ([]VM, error)
	// Terminate ends a VM. A VM that is already gone is success.
	Terminate(ctx context.Context, id string) error
}

// Logger is implemented by providers that can stream a VM's workload log.
type Logger interface {
	Logs(ctx context.Context, vm VM, follow bool, w io.Writer) error
}

// Bootstrapper is implemented by providers whose VMs need their workload
// started once the VM runs (aws: over SSH). The controller calls Bootstrap
// with freshly resolved env when it sees the VM running, and the VM is
// Ready only after it succeeds. It must be safe to repeat: a control plane
// that dies before recording success calls it again.
type Bootstrapper interface {
	Bootstrap(ctx context.Context, vm VM, req LaunchRequest) error
}

// SSHAccess is implemented by providers whose VMs accept SSH with the
// deployment's key, for `anycloud ssh`.
type SSHAccess interface {
	SSHInfo(ctx context.Context, vm VM) (SSHInfo, error)
}

// SSHInfo is how to reach a VM: no secret is in it (the key is a path on
// this machine).
type SSHInfo struct {
	Addr    string `json:"addr"` // host:port
	User    string `json:"user"`
	KeyPath string `json:"keyPath"`
	// HostKey is the pinned host key in authorized_keys format.
	HostKey string `json:"hostKey"`
}

// Releaser is implemented by providers that keep something per deployment
// beyond its VMs (aws: its SSH keys); Release is called once the
// deployment's deletion has terminated its last VM.
type Releaser interface {
	Release(ctx context.Context, uid string) error
}

// Describer is implemented by providers that can look at a few VMs by id
// more cheaply than a full listing (aws: one filtered DescribeInstances
// for many ids). The controller uses it to follow VMs that are starting,
// stopping or being bootstrapped more closely than the resync does. VMs
// that no longer exist are simply absent from the answer.
type Describer interface {
	Describe(ctx context.Context, ids []string) ([]VM, error)
}

// Interrupter is implemented by providers that hear the cloud's own
// events about their VMs (aws: EventBridge rules feeding an SQS queue):
// warnings that a VM will be taken back, and state changes, seconds after
// they happen rather than at the next resync.
type Interrupter interface {
	// Interruptions makes sure the plumbing exists and calls handle for
	// each event until ctx ends. It returns ErrInterruptionsOff at once
	// when the scope listens to none.
	Interruptions(ctx context.Context, handle func(Interruption)) error
	// RemoveInterruptions deletes what Interruptions made, when the
	// scope's credentials are gone. What it did not make is left.
	RemoveInterruptions(ctx context.Context) error
}

// ErrInterruptionsOff: the scope listens to no interruption events.
var ErrInterruptionsOff = errors.New("interruption events are off")

// Interruption is one event of the cloud's about a VM.
type Interruption struct {
	Kind InterruptionKind
	VMID string
	// State is the VM's new state, for a state change.
	State State
	// Detail is the cloud's own words, for people.
	Detail string
	At     time.Time
}

// InterruptionKind says what an Interruption announces.
type InterruptionKind string

// Interruption kinds.
const (
	// InterruptionWarning: a spot VM is taken back in about two minutes.
	InterruptionWarning InterruptionKind = "interruption_warning"
	// RebalanceRecommendation: a spot VM is at elevated risk.
	RebalanceRecommendation InterruptionKind = "rebalance_recommendation"
	// ScheduledChange: maintenance or retirement is scheduled.
	ScheduledChange InterruptionKind = "scheduled_change"
	// StateChange: the VM changed state (State says to what).
	StateChange InterruptionKind = "state_change"
)

// Notifier is implemented by providers that learn of changes (a container
// that died) faster than a resync would; notify is called on each.
type Notifier interface {
	Notify(ctx context.Context, notify func()) error
}

// LaunchRequest is one VM to create.
type LaunchRequest struct {
	Deployment string
	UID        string
	Attempt    int
	// Token makes the launch idempotent; unique per (UID, Attempt).
	Token   string
	Image   string
	Command []string
	// Env is the resolved environment, secrets included. Implementations
	// deliver it to the workload and never log it.
	Env    map[string]string
	VMType string
	Spot   bool
	// OnDemandFallback launches on-demand once spot capacity is out in
	// every zone tried.
	OnDemandFallback bool
	// AWS is the deployment's aws settings as its manifest gives them,
	// or nil; only the aws provider reads them.
	AWS *manifests.DeploymentAWS
	// GitHub is the signed-in GitHub token (`anycloud login`), read at
	// every VM creation as secrets are; nil when not logged in.
	// Implementations send it only to its registries and git host, and
	// never log it or put it in user-data.
	GitHub *GitHubAuth
	// Source is code to check out for the workload; nil for none.
	Source *Source
	// IAMRole is what the VM is launched with: "" or none for no role,
	// managed for a role and instance profile of the deployment's own
	// (made before the launch, removed by Release), or the ARN of an
	// instance profile of the user's.
	IAMRole string
	// PolicyARNs are attached to the managed role.
	PolicyARNs []string
	// Buckets are synced on the VM before the workload starts.
	Buckets []Bucket
}

// Bucket is one bucket prefix to sync on a VM.
type Bucket struct {
	URI            string
	Bucket, Prefix string
	// Path is the directory in the workload's container.
	Path      string
	ReadWrite bool
	// Interval is how often a read-write bucket is copied back.
	Interval time.Duration
	// OtherAccount: the bucket is read with Session, minted from other
	// credentials, not with the VM's role.
	OtherAccount bool
	// Session holds the minted credentials of a bucket in another
	// account; implementations deliver them like secrets (never in
	// user-data, never logged).
	Session *SessionCredentials
}

// SessionCredentials are short-lived credentials minted for one VM,
// with where to use them.
type SessionCredentials struct {
	AccessKeyID, SecretAccessKey, SessionToken string
	Expires                                    time.Time
	// Region and Endpoint (an override, such as an emulator's; "" for
	// the cloud's own) of the account they are for.
	Region, Endpoint string
}

// String never shows the keys.
func (c SessionCredentials) String() string {
	return "provider.SessionCredentials{Expires: " + c.Expires.UTC().Format(time.RFC3339) + ", keys: redacted}"
}

// GoString never shows the keys.
func (c SessionCredentials) GoString() string { return c.String() }

// Keeper is a Releaser whose per-deployment resources are found in the
// cloud (aws: IAM roles by their path), so that those of deployments that
// are gone (a forced delete, a crash) are swept like orphan VMs.
type Keeper interface {
	Releaser
	// Kept lists the uids that have such resources in this scope.
	Kept(ctx context.Context) ([]string, error)
}

// Federator is implemented by providers that mint short-lived
// credentials limited to one bucket prefix (aws: STS
// GetFederationToken), for a VM that reads a bucket of their account.
type Federator interface {
	Federate(ctx context.Context, name string, b Bucket) (SessionCredentials, error)
}

// BucketSyncer is implemented by providers that sync buckets on their
// VMs: FlushBuckets copies the read-write ones back now (before the VM
// ends); BucketStatus reads each bucket's last sync.
type BucketSyncer interface {
	FlushBuckets(ctx context.Context, vm VM, buckets []Bucket) error
	BucketStatus(ctx context.Context, vm VM, buckets []Bucket) ([]BucketSync, error)
}

// BucketSync is one bucket's last sync on a VM.
type BucketSync struct {
	Path string
	At   time.Time
	OK   bool
	// Message is rclone's last words on a failure.
	Message string
}

// GitHubAuth is a GitHub token and where it may be sent: image pulls from
// Registries (host[:port]) and git under GitURL (scheme://host[:port]).
type GitHubAuth struct {
	Token      string
	User       string
	Registries []string
	GitURL     string
}

// String never shows the token.
func (g GitHubAuth) String() string {
	return "provider.GitHubAuth{User: " + g.User + ", Token: redacted}"
}

// GoString never shows the token.
func (g GitHubAuth) GoString() string { return g.String() }

// Source is a git repository at one commit, put at Path in the
// workload's container (its working directory).
type Source struct {
	Git    string
	Commit string
	Path   string
}

// Token returns the idempotency token for (uid, attempt).
func Token(uid string, attempt int) string { return fmt.Sprintf("%s-%d", uid, attempt) }

// State is a VM's lifecycle state, in provider-neutral terms.
type State string

// States. Pending and Running are alive; Stopped and Terminated are not.
const (
	StatePending    State = "pending"
	StateRunning    State = "running"
	StateStopping   State = "stopping"
	StateStopped    State = "stopped"
	StateTerminated State = "terminated"
)

// Alive reports whether the VM is, or is becoming, usable.
func (s State) Alive() bool { return s == StatePending || s == StateRunning }

// VM is one VM as a provider sees it.
type VM struct {
	ID         string
	Deployment string
	UID        string
	Attempt    int
	State      State
	// Reason explains a state that is not Running, e.g. EC2's state
	// reason or a container's exit code.
	Reason string
	// Crashed says the VM ended from within — its workload exited or ran
	// out of memory, the instance shut itself down or failed to start —
	// rather than being taken away (a spot preemption, a kill from
	// outside). Only crashes soon after launch count towards recovery
	// back-off: a crash loop is slowed down, a run of preemptions is
	// recovered at once every time.
	Crashed    bool
	Market     string // spot, on-demand or local
	Address    string
	LaunchedAt time.Time
	// Tried says, for a VM just launched, where it could not be placed
	// first and why ("us-east-1a spot: InsufficientInstanceCapacity; …").
	Tried string
	// InstanceProfile is the ARN of the VM's instance profile, if any;
	// Role the managed role in it, for a VM just launched.
	InstanceProfile string
	Role            string
}

// Sentinel errors.
var (
	// ErrNotFound: the VM (or image) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrThrottled: the cloud asked us to slow down.
	ErrThrottled = errors.New("throttled")
	// ErrCapacity: no capacity for the VM type (or spot market) now.
	ErrCapacity = errors.New("insufficient capacity")
	// ErrUnavailable: the provider cannot be reached.
	ErrUnavailable = errors.New("provider unavailable")
	// ErrInvalid: the request can never succeed as it is (bad image,
	// unknown VM type); retrying does not help.
	ErrInvalid = errors.New("invalid launch request")
	// ErrAttemptSpent: the attempt's idempotency token already made a VM
	// that is gone (EC2's IdempotentInstanceTerminated); only a new
	// attempt, with a new token, can launch.
	ErrAttemptSpent = errors.New("attempt already spent")
)

// Reason maps an error to a condition reason for people.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrThrottled):
		return "Throttled"
	case errors.Is(err, ErrCapacity):
		return "InsufficientCapacity"
	case errors.Is(err, ErrUnavailable):
		return "ProviderUnavailable"
	case errors.Is(err, ErrInvalid):
		return "InvalidLaunchRequest"
	case errors.Is(err, ErrAttemptSpent):
		return "AttemptSpent"
	case errors.Is(err, ErrNotFound):
		return "NotFound"
	}
	return "LaunchFailed"
}
