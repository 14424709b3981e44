// Package reconcile holds the control loop's decisions, with no I/O.
//
// The vocabulary: an Input is a Deployment (desired state and what was
// recorded), the VMs a provider reports for it (observed state) and the
// time; Decide turns it into a Plan: what to launch, what to terminate,
// the status to record and the events to emit. The controller carries
// plans out. Because Decide is pure, every case — first launch, adoption
// after a crash, preemption, resubmit, spec change, deletion — is a row in
// a table test.
package reconcile

import (
	"fmt"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
)

// Input is what Decide looks at.
type Input struct {
	// Deployment is read, never changed.
	Deployment *manifests.Deployment
	// Observed are the provider's VMs carrying this deployment's uid, of
	// any attempt, including stopped and terminated ones.
	Observed []provider.VM
	Now      time.Time
	// NeedsBootstrap says the provider starts the workload in a step
	// after launch (provider.Bootstrapper).
	NeedsBootstrap bool
	// BootTimeout is how long a VM may run without its workload started
	// before it is replaced (default DefaultBootTimeout).
	BootTimeout time.Duration
	// Warning is an event of the cloud's about one of the deployment's
	// VMs that it will take the VM back soon (a spot interruption warning,
	// a rebalance recommendation, a scheduled change), or nil.
	Warning *Warning
	// MissingBundles names the deployment's bundles that do not exist
	// now. A replacement cannot be given its secrets without them, so a
	// resubmit or a spec change keeps the running VM until they exist.
	MissingBundles []string
}

// Plan is what to do.
type Plan struct {
	// Launch, when set, asks for a VM now.
	Launch *Launch
	// Terminate lists VMs to end.
	Terminate []provider.VM
	// Status is the deployment's status after the plan. When Launch is
	// set, it must be recorded before the launch: it carries the attempt
	// whose token the launch uses.
	Status manifests.DeploymentStatus
	Events []Event
	// Bootstrap asks for the workload to be started on the running VM in
	// Status.VM, with freshly resolved env.
	Bootstrap bool
	// RemoveFinalizer: the deployment is deleting and its VMs are gone.
	RemoveFinalizer bool
	// RequeueAfter asks to look again later (a VM still starting, a
	// backed-off recovery).
	RequeueAfter time.Duration
	// Lost says why a VM is being replaced without our asking
	// (LostPreempted, LostBootTimeout), for the recoveries metric.
	Lost string
	// RecoveredAfter, when set, is how long the deployment went from a
	// VM found lost to its replacement Ready: this plan records it Ready.
	RecoveredAfter time.Duration
}

// Why a VM is replaced without being asked to.
const (
	LostPreempted   = "preempted"
	LostBootTimeout = "boot_timeout"
	LostWarned      = "warned"
)

// Warning is the cloud telling that it will take a VM back.
type Warning struct {
	VMID string
	Kind string // one of the Warning kinds
	// Detail is the cloud's own words, for the event.
	Detail string
}

// Warning kinds.
const (
	// WarningInterruption: EC2 takes a spot instance back in two minutes.
	WarningInterruption = "interruption"
	// WarningRebalance: the instance is at elevated risk of interruption;
	// acted on only with spec.spot.onRebalance: replace.
	WarningRebalance = "rebalance"
	// WarningScheduled: a scheduled change (retirement, maintenance).
	WarningScheduled = "scheduled"
)

// Launch is a VM to create.
type Launch struct {
	Attempt int
	// Recovery: the previous VM was taken away without our asking.
	Recovery bool
}

// Event is something to record against the deployment.
type Event struct {
	Type    string // Normal or Warning
	Reason  string
	Message string
}

// Reasons used in conditions and events.
const (
	ReasonLaunching             = "Launching"
	ReasonBootstrapping         = "Bootstrapping"
	ReasonBootstrapped          = "Bootstrapped"
	ReasonBootstrapFailed       = "BootstrapFailed"
	ReasonBootstrapTimeout      = "BootstrapTimeout"
	ReasonInterruptionWarning   = "InterruptionWarning"
	ReasonCapacityFallback      = "CapacityFallback"
	ReasonDrained               = "Drained"
	ReasonTakenBack             = "TakenBack"
	ReasonLaunched              = "Launched"
	ReasonRunning               = "Running"
	ReasonAdopted               = "Adopted"
	ReasonPreempted             = "Preempted"
	ReasonRecovering            = "Recovering"
	ReasonRecovered             = "Recovered"
	ReasonRecoveryBackOff       = "RecoveryBackOff"
	ReasonReplacing             = "Replacing"
	ReasonTerminating           = "Terminating"
	ReasonTerminated            = "Terminated"
	ReasonDeleting              = "Deleting"
	ReasonSecretBundleNotFound  = "SecretBundleNotFound"
	ReasonCredentialsNotFound   = "CredentialsNotFound"
	ReasonLaunchFailed          = "LaunchFailed"
	ReasonOrphanTerminated      = "OrphanTerminated"
	ReasonProviderUnavailable   = "ProviderUnavailable"
	ReasonInvalidLaunchRequest  = "InvalidLaunchRequest"
	ReasonCredentialsUnreadable = "CredentialsUnreadable"
)

// Tunables of recovery.
const (
	// FastDeath is how soon after launch a VM's crash counts towards
	// recovery back-off (provider.VM.Crashed; a VM taken away never
	// does).
	FastDeath = 30 * time.Second
	// FreeFastRecoveries are recovered at once; after them, back off.
	FreeFastRecoveries = 2
	// RecoveryBackOffBase doubles with each further fast death, up to
	// RecoveryBackOffMax.
	RecoveryBackOffBase = 5 * time.Second
	RecoveryBackOffMax  = 5 * time.Minute
	// PendingPoll is how often to look at a VM that is still starting.
	PendingPoll = 2 * time.Second
	// DefaultBootTimeout bounds how long a VM may take from launch until
	// its workload is started; then it is replaced.
	DefaultBootTimeout = 10 * time.Minute
)

// RestartMarker is the deployment's resubmit marker.
func RestartMarker(d *manifests.Deployment) string {
	return d.Metadata.Annotations[manifests.AnnotationRestartedAt]
}

// Decide returns the plan for one deployment. It finds the current
// attempt's VM, ends every other VM of the deployment, and hands the
// rest to the one case that applies, each a method of decision.
func Decide(in Input) Plan {
	x := &decision{in: in, d: in.Deployment, p: Plan{Status: manifests.DeepCopy(in.Deployment).Status}}
	x.st = &x.p.Status
	x.gen = x.d.Metadata.Generation
	if x.d.Metadata.DeletionTimestamp != nil {
		x.deleting()
		return x.p
	}
	x.target = x.st.Attempt
	x.cur = x.currentVM()
	x.followDraining()
	x.endLeftovers()

	cur, st := x.cur, x.st
	running := cur != nil && cur.State == provider.StateRunning
	unstarted := running && in.NeedsBootstrap && (st.VM == nil || st.VM.ID != cur.ID || !st.VM.Bootstrapped)
	stale := x.target > 0 && (st.AttemptGeneration != x.gen || st.AttemptRestartedAt != RestartMarker(x.d))
	switch {
	case x.target == 0:
		startAttempt(&x.p, x.d, 1, false, in.Now)
	case stale && len(in.MissingBundles) > 0 && cur != nil && cur.State.Alive():
		x.keepUntilBundlesExist()
	case stale:
		x.replace()
	case isStalled(st):
		// A launch for this generation and marker cannot succeed; wait
		// for the user to change the spec or resubmit.
	case x.warned():
		x.makeBeforeBreak()
	case unstarted && bootTimedOut(*cur, st, in):
		x.replaceUnbooted()
	case unstarted:
		x.startWorkload()
	case running:
		x.ready()
	case cur != nil && cur.State.Alive() && (st.VM == nil || st.VM.ID != cur.ID):
		x.finishLaunch()
	case cur != nil && cur.State.Alive():
		x.waitForVM()
	case cur != nil || (st.VM != nil && st.VM.Attempt == x.target):
		x.recover()
	default:
		x.relaunch()
	}
	return x.p
}

func bootTimeout(in Input) time.Duration {
	if in.BootTimeout > 0 {
		return in.BootTimeout
	}
	return DefaultBootTimeout
}

// bootTimedOut reports whether vm has run for longer than the boot
// timeout and the last try to start its workload failed. (A VM found
// after a long outage of the control plane is tried before it is judged.)
func bootTimedOut(vm provider.VM, st *manifests.DeploymentStatus, in Input) bool {
	tried := st.VM != nil && st.VM.ID == vm.ID && readyReason(st) == ReasonBootstrapFailed
	return tried && !vm.LaunchedAt.IsZero() && in.Now.Sub(vm.LaunchedAt) > bootTimeout(in)
}

func readyReason(st *manifests.DeploymentStatus) string {
	if c := manifests.FindCondition(st.Conditions, manifests.ConditionReady); c != nil {
		return c.Reason
	}
	return ""
}

// preferVM reports whether a should be the current attempt's VM rather than
// b: a live VM wins over a dead one, then the VM recorded in status.
func preferVM(a, b provider.VM, recorded *manifests.VMStatus) bool {
	if a.State.Alive() != b.State.Alive() {
		return a.State.Alive()
	}
	return recorded != nil && a.ID == recorded.ID && b.ID != recorded.ID
}

func recoveryDelay(fast int) time.Duration {
	if fast <= FreeFastRecoveries {
		return 0
	}
	d := RecoveryBackOffBase << (fast - FreeFastRecoveries - 1)
	if d > RecoveryBackOffMax || d <= 0 {
		return RecoveryBackOffMax
	}
	return d
}

// startAttempt plans a launch of a new attempt, recording what it is for.
func startAttempt(p *Plan, d *manifests.Deployment, attempt int, recovery bool, now time.Time) {
	st := &p.Status
	st.Attempt = attempt
	st.AttemptGeneration = d.Metadata.Generation
	st.AttemptRestartedAt = RestartMarker(d)
	st.VM = nil
	st.Conditions = manifests.RemoveCondition(st.Conditions, manifests.ConditionStalled)
	if recovery {
		st.Phase = manifests.PhaseRecovering
	} else {
		st.Phase = manifests.PhaseLaunching
	}
	setReady(st, manifests.ConditionFalse, ReasonLaunching, fmt.Sprintf("launching attempt %d", attempt), d.Metadata.Generation, now)
	setReconciling(st, ReasonLaunching, fmt.Sprintf("launching attempt %d", attempt), now)
	p.Launch = &Launch{Attempt: attempt, Recovery: recovery}
}

func isStalled(st *manifests.DeploymentStatus) bool {
	c := manifests.FindCondition(st.Conditions, manifests.ConditionStalled)
	return c != nil && c.Status == manifests.ConditionTrue
}

// vmStatus describes an observed VM, keeping what only the launch knew
// (bundle versions) when it is the same VM.
func vmStatus(vm provider.VM, prev *manifests.VMStatus, d *manifests.Deployment) *manifests.VMStatus {
	out := &manifests.VMStatus{
		ID: vm.ID, Market: vm.Market, Address: vm.Address, LaunchedAt: vm.LaunchedAt.UTC(), Attempt: vm.Attempt,
		RestartedAt: d.Status.AttemptRestartedAt, Generation: d.Status.AttemptGeneration,
	}
	if prev != nil && prev.ID == vm.ID {
		out.BundleVersions = prev.BundleVersions
		out.Bootstrapped = prev.Bootstrapped
		if out.Address == "" {
			out.Address = prev.Address
		}
		if out.LaunchedAt.IsZero() {
			out.LaunchedAt = prev.LaunchedAt
		}
	}
	return out
}

// VMStatusFromLaunch describes a VM the controller has just launched.
func VMStatusFromLaunch(vm provider.VM, st *manifests.DeploymentStatus, bundles map[string]int64) *manifests.VMStatus {
	return &manifests.VMStatus{
		ID: vm.ID, Market: vm.Market, Address: vm.Address, LaunchedAt: vm.LaunchedAt.UTC(), Attempt: vm.Attempt,
		BundleVersions: bundles, RestartedAt: st.AttemptRestartedAt, Generation: st.AttemptGeneration,
	}
}

func setReady(st *manifests.DeploymentStatus, status, reason, msg string, gen int64, now time.Time) {
	st.Conditions = manifests.SetCondition(st.Conditions, manifests.Condition{
		Type: manifests.ConditionReady, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen,
	}, now)
}

func setReconciling(st *manifests.DeploymentStatus, reason, msg string, now time.Time) {
	st.Conditions = manifests.SetCondition(st.Conditions, manifests.Condition{
		Type: manifests.ConditionReconciling, Status: manifests.ConditionTrue, Reason: reason, Message: msg,
	}, now)
}

// SetReady records the Ready condition; the controller uses it for
// outcomes only it sees (a missing bundle, a failed launch).
func SetReady(st *manifests.DeploymentStatus, status, reason, msg string, gen int64, now time.Time) {
	setReady(st, status, reason, msg, gen, now)
}

// SetStalled records that the current attempt cannot succeed until the
// user changes something.
func SetStalled(st *manifests.DeploymentStatus, reason, msg string, gen int64, now time.Time) {
	st.Phase = manifests.PhaseFailed
	setReady(st, manifests.ConditionFalse, reason, msg, gen, now)
	st.Conditions = manifests.SetCondition(st.Conditions, manifests.Condition{
		Type: manifests.ConditionStalled, Status: manifests.ConditionTrue, Reason: reason, Message: msg, ObservedGeneration: gen,
	}, now)
	st.Conditions = manifests.RemoveCondition(st.Conditions, manifests.ConditionReconciling)
}
