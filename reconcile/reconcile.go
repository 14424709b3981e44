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
	"strings"
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
}

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
	// FastDeath is how soon after launch a VM's death counts towards
	// recovery back-off.
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

// Decide returns the plan for one deployment.
func Decide(in Input) Plan {
	d := in.Deployment
	p := Plan{Status: manifests.DeepCopy(d).Status}
	st := &p.Status
	gen := d.Metadata.Generation

	if d.Metadata.DeletionTimestamp != nil {
		recorded := false
		for _, vm := range in.Observed {
			if st.VM != nil && vm.ID == st.VM.ID {
				recorded = true
			}
			if vm.State != provider.StateTerminated {
				p.Terminate = append(p.Terminate, vm)
			}
		}
		// A VM the status records but the listing does not show (a
		// listing older than the launch) is terminated all the same:
		// termination is idempotent, a leak is not.
		if st.VM != nil && !recorded {
			p.Terminate = append(p.Terminate, provider.VM{ID: st.VM.ID, UID: d.Metadata.UID, Deployment: d.Metadata.Name, Attempt: st.VM.Attempt})
		}
		st.Phase = manifests.PhaseTerminating
		setReady(st, manifests.ConditionFalse, ReasonDeleting, "the deployment is being deleted", gen, in.Now)
		setReconciling(st, ReasonDeleting, "terminating the VM", in.Now)
		if len(p.Terminate) == 0 {
			p.RemoveFinalizer = true
			if st.VM != nil {
				p.Events = append(p.Events, Event{"Normal", ReasonTerminated, fmt.Sprintf("VM %s is gone", st.VM.ID)})
			}
			st.VM = nil
		} else {
			for _, vm := range p.Terminate {
				p.Events = append(p.Events, Event{"Normal", ReasonTerminating, fmt.Sprintf("terminating VM %s", vm.ID)})
			}
		}
		return p
	}

	target := st.Attempt
	// The current attempt's VM: a live one before a dead one, the one
	// recorded in status before any other. A cloud that ignores the launch
	// token (an emulator, a retry after a dropped response) can make two.
	var cur *provider.VM
	for i := range in.Observed {
		vm := &in.Observed[i]
		if vm.Attempt == target && (cur == nil || preferVM(*vm, *cur, st.VM)) {
			cur = vm
		}
	}
	// VMs of other attempts are leftovers (a replaced VM, a dead
	// container), and so are duplicates of this one: end them.
	for _, vm := range in.Observed {
		leftover := vm.Attempt != target || vm.ID != cur.ID
		if leftover && vm.State != provider.StateTerminated {
			p.Terminate = append(p.Terminate, vm)
		}
	}

	stale := target > 0 && (st.AttemptGeneration != gen || st.AttemptRestartedAt != RestartMarker(d))
	switch {
	case target == 0:
		startAttempt(&p, d, 1, false, in.Now)

	case stale && len(in.MissingBundles) > 0 && cur != nil && cur.State.Alive():
		// A resubmit must not tear down what it cannot replace: the new
		// VM would fail fast for want of its secrets, and the working one
		// would be gone. Keep it, say why, and replace it when the bundles
		// appear (the bundle watch queues the deployment then).
		why := "the spec changed"
		if st.AttemptRestartedAt != RestartMarker(d) {
			why = "resubmitted"
		}
		msg := fmt.Sprintf("%s, but secret bundle(s) %s not found: VM %s keeps running until a replacement can be given them", why, strings.Join(in.MissingBundles, ", "), cur.ID)
		if prev := manifests.FindCondition(st.Conditions, manifests.ConditionReady); prev == nil || prev.Reason != ReasonSecretBundleNotFound || prev.Message != msg {
			p.Events = append(p.Events, Event{"Warning", ReasonSecretBundleNotFound, msg})
		}
		if cur.State == provider.StateRunning {
			st.Phase = manifests.PhaseRunning
		}
		setReady(st, manifests.ConditionFalse, ReasonSecretBundleNotFound, msg, gen, in.Now)
		st.Conditions = manifests.RemoveCondition(st.Conditions, manifests.ConditionReconciling)

	case stale:
		why := "the spec changed"
		if st.AttemptRestartedAt != RestartMarker(d) {
			why = "resubmitted"
		}
		if cur != nil && cur.State != provider.StateTerminated {
			p.Terminate = append(p.Terminate, *cur)
			p.Events = append(p.Events, Event{"Normal", ReasonReplacing, fmt.Sprintf("replacing VM %s: %s", cur.ID, why)})
		}
		st.FastRecoveries, st.NextLaunchAt = 0, nil
		startAttempt(&p, d, target+1, false, in.Now)

	case isStalled(st):
		// A launch for this generation and marker cannot succeed; wait
		// for the user to change the spec or resubmit.

	case cur != nil && cur.State == provider.StateRunning && in.NeedsBootstrap && (st.VM == nil || st.VM.ID != cur.ID || !st.VM.Bootstrapped) &&
		bootTimedOut(*cur, st, in):
		// The VM never took its workload: replace it rather than wait
		// forever for one that will not come up.
		timeout := bootTimeout(in)
		p.Terminate = append(p.Terminate, *cur)
		p.Events = append(p.Events, Event{"Warning", ReasonBootstrapTimeout,
			fmt.Sprintf("VM %s did not accept the workload within %s of its launch; replacing it", cur.ID, timeout)})
		startAttempt(&p, d, target+1, false, in.Now)
		setReady(st, manifests.ConditionFalse, ReasonBootstrapTimeout,
			fmt.Sprintf("VM %s did not accept the workload within %s; launching attempt %d", cur.ID, timeout, target+1), gen, in.Now)

	case cur != nil && cur.State == provider.StateRunning && in.NeedsBootstrap && (st.VM == nil || st.VM.ID != cur.ID || !st.VM.Bootstrapped):
		retrying := st.VM != nil && st.VM.ID == cur.ID && readyReason(st) == ReasonBootstrapFailed
		st.VM = vmStatus(*cur, st.VM, d)
		if st.Phase != manifests.PhaseRecovering {
			st.Phase = manifests.PhaseLaunching
		}
		// While the bootstrap of this VM is retried, its last failure
		// stays the reason: rewriting it each try would churn the store
		// and move the condition's transition time.
		if !retrying {
			setReady(st, manifests.ConditionFalse, ReasonBootstrapping, fmt.Sprintf("VM %s is running; starting the workload", cur.ID), gen, in.Now)
		}
		setReconciling(st, ReasonBootstrapping, "starting the workload over SSH", in.Now)
		p.Bootstrap = true

	case cur != nil && cur.State == provider.StateRunning:
		adopted := st.VM == nil || st.VM.ID != cur.ID
		st.VM = vmStatus(*cur, st.VM, d)
		if adopted {
			p.Events = append(p.Events, Event{"Normal", ReasonAdopted, fmt.Sprintf("found VM %s of attempt %d running; adopted it", cur.ID, cur.Attempt)})
		}
		if st.Phase == manifests.PhaseRecovering {
			p.Events = append(p.Events, Event{"Normal", ReasonRecovered, fmt.Sprintf("replacement VM %s is running", cur.ID)})
		}
		if !cur.LaunchedAt.IsZero() && in.Now.Sub(cur.LaunchedAt) >= FastDeath {
			st.FastRecoveries = 0
		}
		st.Phase = manifests.PhaseRunning
		st.NextLaunchAt = nil
		setReady(st, manifests.ConditionTrue, ReasonRunning, fmt.Sprintf("VM %s is running", cur.ID), gen, in.Now)
		st.Conditions = manifests.RemoveCondition(st.Conditions, manifests.ConditionReconciling)
		st.ObservedGeneration = gen

	case cur != nil && cur.State.Alive() && (st.VM == nil || st.VM.ID != cur.ID):
		// A VM of this attempt exists but its launch never completed
		// (the control plane died mid-launch; a container created but not
		// started). Launch again with the same attempt: the token makes
		// it return this VM, finishing what was begun.
		p.Launch = &Launch{Attempt: target, Recovery: st.Phase == manifests.PhaseRecovering}
		setReconciling(st, ReasonLaunching, fmt.Sprintf("finishing the launch of attempt %d", target), in.Now)

	case cur != nil && cur.State.Alive():
		st.VM = vmStatus(*cur, st.VM, d)
		if st.Phase != manifests.PhaseRecovering {
			st.Phase = manifests.PhaseLaunching
		}
		setReady(st, manifests.ConditionFalse, ReasonLaunching, fmt.Sprintf("VM %s is starting", cur.ID), gen, in.Now)
		setReconciling(st, ReasonLaunching, "waiting for the VM to run", in.Now)
		p.RequeueAfter = PendingPoll

	case cur != nil || (st.VM != nil && st.VM.Attempt == target):
		// The VM of the current attempt stopped or vanished without our
		// asking: a preemption. Recover with a new attempt.
		id, reason := "", "it no longer exists"
		launchedAt := time.Time{}
		if cur != nil {
			id, launchedAt = cur.ID, cur.LaunchedAt
			if cur.Reason != "" {
				reason = cur.Reason
			} else {
				reason = string(cur.State)
			}
			if cur.State != provider.StateTerminated {
				p.Terminate = append(p.Terminate, *cur)
			}
		} else {
			id, launchedAt = st.VM.ID, st.VM.LaunchedAt
		}
		p.Events = append(p.Events, Event{"Warning", ReasonPreempted, fmt.Sprintf("VM %s was taken away: %s", id, reason)})
		st.Recoveries++
		if !launchedAt.IsZero() && in.Now.Sub(launchedAt) < FastDeath {
			st.FastRecoveries++
		} else {
			st.FastRecoveries = 0
		}
		st.VM = nil
		if delay := recoveryDelay(st.FastRecoveries); delay > 0 {
			at := in.Now.Add(delay).UTC()
			st.Attempt = target + 1
			st.NextLaunchAt = &at
			st.Phase = manifests.PhaseRecovering
			msg := fmt.Sprintf("VM died %d times soon after launch; next attempt in %s", st.FastRecoveries, delay)
			setReady(st, manifests.ConditionFalse, ReasonRecoveryBackOff, msg, gen, in.Now)
			setReconciling(st, ReasonRecoveryBackOff, msg, in.Now)
			p.Events = append(p.Events, Event{"Warning", ReasonRecoveryBackOff, msg})
			p.RequeueAfter = delay
			return p
		}
		p.Events = append(p.Events, Event{"Normal", ReasonRecovering, fmt.Sprintf("launching attempt %d with freshly resolved secrets", target+1)})
		startAttempt(&p, d, target+1, true, in.Now)

	default:
		// The attempt is recorded but no VM is seen: the launch did not
		// finish (or has not shown up yet). Launch again with the same
		// attempt, hence the same idempotency token.
		if st.NextLaunchAt != nil && in.Now.Before(*st.NextLaunchAt) {
			p.RequeueAfter = st.NextLaunchAt.Sub(in.Now)
			return p
		}
		st.NextLaunchAt = nil
		p.Launch = &Launch{Attempt: target, Recovery: st.Phase == manifests.PhaseRecovering}
		if st.Phase != manifests.PhaseRecovering {
			st.Phase = manifests.PhaseLaunching
		}
		setReconciling(st, ReasonLaunching, fmt.Sprintf("launching attempt %d", target), in.Now)
	}
	return p
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
