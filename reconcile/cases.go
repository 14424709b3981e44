package reconcile

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
)

// decision is Decide at work: its input, the plan being made, and what
// every case needs.
type decision struct {
	in     Input
	d      *manifests.Deployment
	p      Plan
	st     *manifests.DeploymentStatus // &p.Status
	gen    int64
	target int          // the current attempt
	cur    *provider.VM // its VM, if any is seen
}

func (x *decision) event(typ, reason, msg string) {
	x.p.Events = append(x.p.Events, Event{typ, reason, msg})
}

// deleting terminates every VM of a deployment being deleted, and lets
// it go once none is left.
func (x *decision) deleting() {
	st, p := x.st, &x.p
	recorded := false
	for _, vm := range x.in.Observed {
		if st.VM != nil && vm.ID == st.VM.ID {
			recorded = true
		}
		if vm.State != provider.StateTerminated {
			p.Terminate = append(p.Terminate, vm)
		}
	}
	// A VM the status records but the listing does not show (a listing
	// older than the launch) is terminated all the same: termination is
	// idempotent, a leak is not.
	if st.VM != nil && !recorded {
		p.Terminate = append(p.Terminate, provider.VM{ID: st.VM.ID, UID: x.d.Metadata.UID, Deployment: x.d.Metadata.Name, Attempt: st.VM.Attempt})
	}
	if dr := st.Draining; dr != nil && !slices.ContainsFunc(x.in.Observed, func(vm provider.VM) bool { return vm.ID == dr.ID }) {
		p.Terminate = append(p.Terminate, provider.VM{ID: dr.ID, UID: x.d.Metadata.UID, Deployment: x.d.Metadata.Name, Attempt: dr.Attempt})
	}
	st.Phase = manifests.PhaseTerminating
	setReady(st, manifests.ConditionFalse, ReasonDeleting, "the deployment is being deleted", x.gen, x.in.Now)
	setReconciling(st, ReasonDeleting, "terminating the VM", x.in.Now)
	if len(p.Terminate) == 0 {
		p.RemoveFinalizer = true
		st.Draining = nil
		if st.VM != nil {
			x.event("Normal", ReasonTerminated, fmt.Sprintf("VM %s is gone", st.VM.ID))
		}
		st.VM = nil
		return
	}
	for _, vm := range p.Terminate {
		x.event("Normal", ReasonTerminating, fmt.Sprintf("terminating VM %s", vm.ID))
	}
}

// currentVM is the current attempt's VM: a live one before a dead one,
// the one recorded in status before any other. A cloud that ignores the
// launch token (an emulator, a retry after a dropped response) can make
// two.
func (x *decision) currentVM() *provider.VM {
	var cur *provider.VM
	for i := range x.in.Observed {
		vm := &x.in.Observed[i]
		if vm.Attempt == x.target && (cur == nil || preferVM(*vm, *cur, x.st.VM)) {
			cur = vm
		}
	}
	return cur
}

// endLeftovers terminates VMs of other attempts (a replaced VM, a dead
// container) and duplicates of the current one — but not a VM draining
// while its replacement starts.
func (x *decision) endLeftovers() {
	for _, vm := range x.in.Observed {
		leftover := vm.Attempt != x.target || vm.ID != x.cur.ID
		draining := x.st.Draining != nil && vm.ID == x.st.Draining.ID
		if leftover && !draining && vm.State != provider.StateTerminated {
			x.p.Terminate = append(x.p.Terminate, vm)
		}
	}
}

// followDraining forgets a draining VM that the cloud has taken back, as
// it warned: its replacement carries on.
func (x *decision) followDraining() {
	dr := x.st.Draining
	if dr == nil {
		return
	}
	for _, vm := range x.in.Observed {
		if vm.ID == dr.ID && vm.State.Alive() {
			return
		}
	}
	x.event("Normal", ReasonTakenBack, fmt.Sprintf("VM %s was taken back, as warned; its replacement carries on", dr.ID))
	x.st.Draining = nil
}

// warned reports whether the cloud warned that it will take back the
// current VM, and that warning calls for a replacement now: one not
// already started (a duplicate or late event changes nothing).
func (x *decision) warned() bool {
	w, cur := x.in.Warning, x.cur
	if w == nil || cur == nil || cur.ID != w.VMID || !cur.State.Alive() || x.st.Draining != nil {
		return false
	}
	return w.Kind != WarningRebalance || x.d.Spec.Spot.OnRebalance == manifests.SpotRebalanceReplace
}

// makeBeforeBreak starts the replacement of a VM the cloud will take back
// while that VM keeps running (draining): the workload moves without a
// gap when the replacement is ready in time, and the secrets it gets are
// resolved now.
func (x *decision) makeBeforeBreak() {
	st, cur, w := x.st, x.cur, x.in.Warning
	what := map[string]string{
		WarningInterruption: "a spot interruption warning",
		WarningRebalance:    "a rebalance recommendation",
		WarningScheduled:    "a scheduled change",
	}[w.Kind]
	msg := fmt.Sprintf("%s for VM %s: launching its replacement now; %s keeps running until the replacement is Ready or EC2 takes it back", what, cur.ID, cur.ID)
	if w.Detail != "" {
		msg += " (" + w.Detail + ")"
	}
	x.event("Warning", ReasonInterruptionWarning, msg)
	st.Draining = vmStatus(*cur, st.VM, x.d)
	st.Recoveries++
	lost := x.in.Now.UTC()
	st.LostAt = &lost
	x.p.Lost = LostWarned
	startAttempt(&x.p, x.d, x.target+1, true, x.in.Now)
}

// why is what made the current attempt stale.
func (x *decision) why() string {
	if x.st.AttemptRestartedAt != RestartMarker(x.d) {
		return "resubmitted"
	}
	return "the spec changed"
}

// keepUntilBundlesExist: a resubmit must not tear down what it cannot
// replace. The new VM would fail fast for want of its secrets, and the
// working one would be gone. Keep it, say why, and replace it when the
// bundles appear (the bundle watch queues the deployment then).
func (x *decision) keepUntilBundlesExist() {
	st, cur := x.st, x.cur
	msg := fmt.Sprintf("%s, but secret bundle(s) %s not found: VM %s keeps running until a replacement can be given them", x.why(), strings.Join(x.in.MissingBundles, ", "), cur.ID)
	if prev := manifests.FindCondition(st.Conditions, manifests.ConditionReady); prev == nil || prev.Reason != ReasonSecretBundleNotFound || prev.Message != msg {
		x.event("Warning", ReasonSecretBundleNotFound, msg)
	}
	if cur.State == provider.StateRunning {
		st.Phase = manifests.PhaseRunning
	}
	setReady(st, manifests.ConditionFalse, ReasonSecretBundleNotFound, msg, x.gen, x.in.Now)
	st.Conditions = manifests.RemoveCondition(st.Conditions, manifests.ConditionReconciling)
}

// replace ends the VM of a stale attempt (a spec change, a resubmit) and
// starts the next attempt.
func (x *decision) replace() {
	if cur := x.cur; cur != nil && cur.State != provider.StateTerminated {
		x.p.Terminate = append(x.p.Terminate, *cur)
		x.event("Normal", ReasonReplacing, fmt.Sprintf("replacing VM %s: %s", cur.ID, x.why()))
	}
	x.st.FastRecoveries, x.st.NextLaunchAt = 0, nil
	startAttempt(&x.p, x.d, x.target+1, false, x.in.Now)
}

// replaceUnbooted replaces a VM that never took its workload, rather
// than wait forever for one that will not come up.
func (x *decision) replaceUnbooted() {
	cur, timeout := x.cur, bootTimeout(x.in)
	x.p.Terminate = append(x.p.Terminate, *cur)
	x.p.Lost = LostBootTimeout
	x.event("Warning", ReasonBootstrapTimeout, fmt.Sprintf("VM %s did not accept the workload within %s of its launch; replacing it", cur.ID, timeout))
	startAttempt(&x.p, x.d, x.target+1, false, x.in.Now)
	setReady(x.st, manifests.ConditionFalse, ReasonBootstrapTimeout,
		fmt.Sprintf("VM %s did not accept the workload within %s; launching attempt %d", cur.ID, timeout, x.target+1), x.gen, x.in.Now)
}

// startWorkload asks for the workload to be started on a running VM
// (providers that do it after launch, over SSH).
func (x *decision) startWorkload() {
	st, cur := x.st, x.cur
	retrying := st.VM != nil && st.VM.ID == cur.ID && readyReason(st) == ReasonBootstrapFailed
	st.VM = vmStatus(*cur, st.VM, x.d)
	if st.Phase != manifests.PhaseRecovering {
		st.Phase = manifests.PhaseLaunching
	}
	// While the bootstrap of this VM is retried, its last failure stays
	// the reason: rewriting it each try would churn the store and move
	// the condition's transition time.
	if !retrying {
		setReady(st, manifests.ConditionFalse, ReasonBootstrapping, fmt.Sprintf("VM %s is running; starting the workload", cur.ID), x.gen, x.in.Now)
	}
	setReconciling(st, ReasonBootstrapping, "starting the workload over SSH", x.in.Now)
	x.p.Bootstrap = true
}

// ready records the current attempt's running VM: Ready.
func (x *decision) ready() {
	st, cur := x.st, x.cur
	adopted := st.VM == nil || st.VM.ID != cur.ID
	st.VM = vmStatus(*cur, st.VM, x.d)
	if adopted {
		x.event("Normal", ReasonAdopted, fmt.Sprintf("found VM %s of attempt %d running; adopted it", cur.ID, cur.Attempt))
	}
	if st.Phase == manifests.PhaseRecovering {
		x.event("Normal", ReasonRecovered, fmt.Sprintf("replacement VM %s is running", cur.ID))
		if st.LostAt != nil {
			x.p.RecoveredAfter = x.in.Now.Sub(*st.LostAt)
		}
	}
	st.LostAt = nil
	if !cur.LaunchedAt.IsZero() && x.in.Now.Sub(cur.LaunchedAt) >= FastDeath {
		st.FastRecoveries = 0
	}
	if dr := st.Draining; dr != nil {
		// Make before break: the replacement is Ready, the old VM goes.
		x.p.Terminate = append(x.p.Terminate, provider.VM{ID: dr.ID, UID: x.d.Metadata.UID, Deployment: x.d.Metadata.Name, Attempt: dr.Attempt})
		x.event("Normal", ReasonDrained, fmt.Sprintf("replacement VM %s is Ready; terminating VM %s", cur.ID, dr.ID))
		st.Draining = nil
	}
	st.Phase = manifests.PhaseRunning
	st.NextLaunchAt = nil
	setReady(st, manifests.ConditionTrue, ReasonRunning, fmt.Sprintf("VM %s is running", cur.ID), x.gen, x.in.Now)
	st.Conditions = manifests.RemoveCondition(st.Conditions, manifests.ConditionReconciling)
	st.ObservedGeneration = x.gen
}

// finishLaunch: a VM of this attempt exists but its launch never
// completed (the control plane died mid-launch; a container created but
// not started). Launch again with the same attempt: the token makes it
// return this VM, finishing what was begun.
func (x *decision) finishLaunch() {
	x.p.Launch = &Launch{Attempt: x.target, Recovery: x.st.Phase == manifests.PhaseRecovering}
	setReconciling(x.st, ReasonLaunching, fmt.Sprintf("finishing the launch of attempt %d", x.target), x.in.Now)
}

// waitForVM: the current VM is starting; look again soon.
func (x *decision) waitForVM() {
	st, cur := x.st, x.cur
	st.VM = vmStatus(*cur, st.VM, x.d)
	if st.Phase != manifests.PhaseRecovering {
		st.Phase = manifests.PhaseLaunching
	}
	setReady(st, manifests.ConditionFalse, ReasonLaunching, fmt.Sprintf("VM %s is starting", cur.ID), x.gen, x.in.Now)
	setReconciling(st, ReasonLaunching, "waiting for the VM to run", x.in.Now)
	x.p.RequeueAfter = PendingPoll
}

// recover: the VM of the current attempt stopped or vanished without our
// asking, a preemption. Recover with a new attempt, backed off when VMs
// keep dying soon after launch.
func (x *decision) recover() {
	st, cur := x.st, x.cur
	id, reason := "", "it no longer exists"
	launchedAt, crashed := time.Time{}, false
	if cur != nil {
		id, launchedAt, crashed = cur.ID, cur.LaunchedAt, cur.Crashed
		if cur.Reason != "" {
			reason = cur.Reason
		} else {
			reason = string(cur.State)
		}
		if cur.State != provider.StateTerminated {
			x.p.Terminate = append(x.p.Terminate, *cur)
		}
	} else {
		id, launchedAt = st.VM.ID, st.VM.LaunchedAt
	}
	if crashed {
		x.event("Warning", ReasonPreempted, fmt.Sprintf("VM %s ended on its own: %s", id, reason))
	} else {
		x.event("Warning", ReasonPreempted, fmt.Sprintf("VM %s was taken away: %s", id, reason))
	}
	x.p.Lost = LostPreempted
	lost := x.in.Now.UTC()
	st.LostAt = &lost
	st.Recoveries++
	// Only a crash soon after launch counts towards back-off: a crash
	// loop is slowed, while a VM taken away (however soon) is replaced
	// at once, which is the point of recovery. A VM that lived past
	// FastDeath ends a crash loop, whatever ended it.
	switch soon := !launchedAt.IsZero() && x.in.Now.Sub(launchedAt) < FastDeath; {
	case !soon:
		st.FastRecoveries = 0
	case crashed:
		st.FastRecoveries++
	}
	st.VM = nil
	if delay := recoveryDelay(st.FastRecoveries); delay > 0 {
		at := x.in.Now.Add(delay).UTC()
		st.Attempt = x.target + 1
		st.NextLaunchAt = &at
		st.Phase = manifests.PhaseRecovering
		msg := fmt.Sprintf("VM crashed %d times soon after launch; next attempt in %s", st.FastRecoveries, delay)
		setReady(st, manifests.ConditionFalse, ReasonRecoveryBackOff, msg, x.gen, x.in.Now)
		setReconciling(st, ReasonRecoveryBackOff, msg, x.in.Now)
		x.event("Warning", ReasonRecoveryBackOff, msg)
		x.p.RequeueAfter = delay
		return
	}
	x.event("Normal", ReasonRecovering, fmt.Sprintf("launching attempt %d with freshly resolved secrets", x.target+1))
	startAttempt(&x.p, x.d, x.target+1, true, x.in.Now)
}

// relaunch: the attempt is recorded but no VM is seen, so the launch did
// not finish (or has not shown up yet). Launch again with the same
// attempt, hence the same idempotency token — once a recovery back-off,
// if any, has passed.
func (x *decision) relaunch() {
	st := x.st
	if st.NextLaunchAt != nil && x.in.Now.Before(*st.NextLaunchAt) {
		x.p.RequeueAfter = st.NextLaunchAt.Sub(x.in.Now)
		return
	}
	st.NextLaunchAt = nil
	x.p.Launch = &Launch{Attempt: x.target, Recovery: st.Phase == manifests.PhaseRecovering}
	if st.Phase != manifests.PhaseRecovering {
		st.Phase = manifests.PhaseLaunching
	}
	setReconciling(st, ReasonLaunching, fmt.Sprintf("launching attempt %d", x.target), x.in.Now)
}
