package reconcile_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/reconcile"
)

// The clock every test reads: Decide takes the time as input.
var (
	now     = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	earlier = now.Add(-time.Hour)        // when recorded conditions last changed
	longAgo = now.Add(-time.Hour)        // a VM launched long before FastDeath
	recent  = now.Add(-10 * time.Second) // a VM launched within FastDeath
)

const (
	uid       = "8d1c6a3e-uid"
	resubmit1 = "2025-03-01T11:00:00Z"
	resubmit2 = "2025-03-01T11:59:00Z"
)

// dep returns a Deployment of generation 1 that holds the VM finalizer and
// has no status yet, changed by mods in order.
func dep(mods ...func(*manifests.Deployment)) *manifests.Deployment {
	d := &manifests.Deployment{
		TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindDeployment},
		Metadata: manifests.ObjectMeta{
			Name:              "train",
			UID:               uid,
			ResourceVersion:   "7",
			Generation:        1,
			CreationTimestamp: now.Add(-2 * time.Hour),
			Finalizers:        []string{manifests.FinalizerVM},
			Labels:            map[string]string{"team": "ml"},
		},
		Spec: manifests.DeploymentSpec{
			Image:       "ghcr.io/me/train:latest",
			Command:     []string{"python", "train.py"},
			Credentials: "my-aws",
			VMType:      "g6e.xlarge",
			Spot:        manifests.SpotSpec{Enabled: true},
			Env:         map[string]string{"EPOCHS": "3"},
			Secrets:     []string{"hf"},
		},
	}
	for _, m := range mods {
		m(d)
	}
	return d
}

// generation sets the spec generation, as the store does on a spec change.
func generation(g int64) func(*manifests.Deployment) {
	return func(d *manifests.Deployment) { d.Metadata.Generation = g }
}

// restartedAt sets the resubmit marker, as `anycloud resubmit` does.
func restartedAt(marker string) func(*manifests.Deployment) {
	return func(d *manifests.Deployment) {
		if d.Metadata.Annotations == nil {
			d.Metadata.Annotations = map[string]string{}
		}
		d.Metadata.Annotations[manifests.AnnotationRestartedAt] = marker
	}
}

func deleting(d *manifests.Deployment) {
	at := now.Add(-time.Minute)
	d.Metadata.DeletionTimestamp = &at
}

// status changes the recorded status.
func status(f func(*manifests.DeploymentStatus)) func(*manifests.Deployment) {
	return func(d *manifests.Deployment) { f(&d.Status) }
}

// attempt records attempt n for the current generation and marker, as the
// controller writes it just before the launch.
func attempt(n int, phase string) func(*manifests.Deployment) {
	return func(d *manifests.Deployment) {
		st := &d.Status
		st.Attempt = n
		st.AttemptGeneration = d.Metadata.Generation
		st.AttemptRestartedAt = reconcile.RestartMarker(d)
		st.Phase = phase
		msg := fmt.Sprintf("launching attempt %d", n)
		st.Conditions = []manifests.Condition{
			{Type: manifests.ConditionReady, Status: manifests.ConditionFalse, Reason: reconcile.ReasonLaunching, Message: msg, LastTransitionTime: earlier, ObservedGeneration: d.Metadata.Generation},
			{Type: manifests.ConditionReconciling, Status: manifests.ConditionTrue, Reason: reconcile.ReasonLaunching, Message: msg, LastTransitionTime: earlier},
		}
	}
}

// launchedOn records v as the VM the controller has just launched for its
// attempt, not yet seen running.
func launchedOn(v provider.VM, phase string) func(*manifests.Deployment) {
	return func(d *manifests.Deployment) {
		attempt(v.Attempt, phase)(d)
		d.Status.VM = reconcile.VMStatusFromLaunch(v, &d.Status, map[string]int64{"hf": 4})
	}
}

// runningOn records v as the current attempt's VM, running and Ready: the
// status a converged deployment has.
func runningOn(v provider.VM) func(*manifests.Deployment) {
	return func(d *manifests.Deployment) {
		launchedOn(v, manifests.PhaseRunning)(d)
		st := &d.Status
		st.ObservedGeneration = d.Metadata.Generation
		st.Conditions = []manifests.Condition{{
			Type: manifests.ConditionReady, Status: manifests.ConditionTrue, Reason: reconcile.ReasonRunning,
			Message: fmt.Sprintf("VM %s is running", v.ID), LastTransitionTime: earlier, ObservedGeneration: d.Metadata.Generation,
		}}
	}
}

// bootstrapFailed records a failed try to start the workload on the
// status's VM, as the controller does when SSH is refused.
func bootstrapFailed(d *manifests.Deployment) {
	reconcile.SetReady(&d.Status, manifests.ConditionFalse, reconcile.ReasonBootstrapFailed,
		"start the workload on VM "+d.Status.VM.ID+": connection refused", d.Metadata.Generation, earlier)
}

// stalled records that the current attempt cannot succeed, as the controller
// does after a launch the provider calls invalid.
func stalled(d *manifests.Deployment) {
	reconcile.SetStalled(&d.Status, reconcile.ReasonInvalidLaunchRequest, "unknown VM type g6e.xlarge", d.Metadata.Generation, earlier)
}

// vm is one VM of the deployment as a provider lists it, launched long ago.
func vm(id string, attempt int, state provider.State) provider.VM {
	return provider.VM{
		ID: id, Deployment: "train", UID: uid, Attempt: attempt, State: state,
		Market: "spot", Address: "203.0.113.10", LaunchedAt: longAgo,
	}
}

// launchedAt changes when v was launched.
func launchedAt(v provider.VM, at time.Time) provider.VM { v.LaunchedAt = at; return v }

// because gives v a state reason.
func because(v provider.VM, reason string) provider.VM { v.Reason = reason; return v }

// crash marks v as ended from within (provider.VM.Crashed).
func crash(v provider.VM) provider.VM { v.Crashed = true; return v }

// outcome is what a row asserts about a Plan: the actions in full, the
// status by its key fields.
type outcome struct {
	Launch             *reconcile.Launch
	Terminate          []string // VM ids
	Attempt            int
	AttemptGeneration  int64
	AttemptRestartedAt string
	Phase              string
	Recoveries         int
	FastRecoveries     int
	NextLaunchAt       *time.Time
	VM                 string // id of status.VM, "" for none
	Ready              string // "Status Reason"
	Reconciling        bool   // present (and so True)
	Stalled            bool   // present (and so True)
	ObservedGeneration int64
	Events             []string // "Type Reason"
	RemoveFinalizer    bool
	RequeueAfter       time.Duration
	Draining           string // id of status.draining
}

func summarize(t *testing.T, p reconcile.Plan) outcome {
	t.Helper()
	st := p.Status
	o := outcome{
		Launch:             p.Launch,
		Attempt:            st.Attempt,
		AttemptGeneration:  st.AttemptGeneration,
		AttemptRestartedAt: st.AttemptRestartedAt,
		Phase:              st.Phase,
		Recoveries:         st.Recoveries,
		FastRecoveries:     st.FastRecoveries,
		NextLaunchAt:       st.NextLaunchAt,
		ObservedGeneration: st.ObservedGeneration,
		RemoveFinalizer:    p.RemoveFinalizer,
		RequeueAfter:       p.RequeueAfter,
	}
	for _, v := range p.Terminate {
		o.Terminate = append(o.Terminate, v.ID)
	}
	if st.VM != nil {
		o.VM = st.VM.ID
	}
	if st.Draining != nil {
		o.Draining = st.Draining.ID
	}
	if c := manifests.FindCondition(st.Conditions, manifests.ConditionReady); c != nil {
		o.Ready = c.Status + " " + c.Reason
	}
	if c := manifests.FindCondition(st.Conditions, manifests.ConditionReconciling); c != nil {
		if c.Status != manifests.ConditionTrue {
			t.Errorf("Reconciling is present with status %q; it is present only when True", c.Status)
		}
		o.Reconciling = true
	}
	if c := manifests.FindCondition(st.Conditions, manifests.ConditionStalled); c != nil {
		if c.Status != manifests.ConditionTrue {
			t.Errorf("Stalled is present with status %q; it is present only when True", c.Status)
		}
		o.Stalled = true
	}
	for _, e := range p.Events {
		o.Events = append(o.Events, e.Type+" "+e.Reason)
	}
	return o
}

func timeAt(t time.Time) *time.Time { return &t }

func TestDecide(t *testing.T) {
	tests := []struct {
		name     string
		d        *manifests.Deployment
		observed []provider.VM
		missing  []string  // bundles that do not exist
		now      time.Time // zero: now
		want     outcome
		// messages: for an event reason, text its message must contain.
		messages map[string]string
		// check makes assertions the outcome does not cover.
		check func(t *testing.T, in reconcile.Input, p reconcile.Plan)
		// bootstrap: the provider starts workloads over SSH (aws).
		bootstrap   bool
		bootTimeout time.Duration
		warning     *reconcile.Warning
	}{
		{
			name:     "an interruption warning launches the replacement while the VM drains",
			d:        dep(runningOn(vm("i-1", 1, provider.StateRunning))),
			observed: []provider.VM{vm("i-1", 1, provider.StateRunning)},
			warning:  &reconcile.Warning{VMID: "i-1", Kind: reconcile.WarningInterruption},
			want: outcome{
				Launch:  &reconcile.Launch{Attempt: 2, Recovery: true},
				Attempt: 2, AttemptGeneration: 1, Recoveries: 1, Draining: "i-1",
				Phase: manifests.PhaseRecovering, Ready: "False Launching", Reconciling: true, ObservedGeneration: 1,
				Events: []string{"Warning InterruptionWarning"},
			},
			messages: map[string]string{reconcile.ReasonInterruptionWarning: "keeps running until the replacement is Ready"},
		},
		{
			name: "a duplicate warning while the replacement starts changes nothing",
			d: dep(launchedOn(vm("i-2", 2, provider.StatePending), manifests.PhaseRecovering), status(func(st *manifests.DeploymentStatus) {
				st.Draining = &manifests.VMStatus{ID: "i-1", Attempt: 1}
				st.Recoveries = 1
			})),
			observed: []provider.VM{vm("i-1", 1, provider.StateRunning), vm("i-2", 2, provider.StatePending)},
			warning:  &reconcile.Warning{VMID: "i-1", Kind: reconcile.WarningInterruption},
			want: outcome{
				Attempt: 2, AttemptGeneration: 1, Recoveries: 1, VM: "i-2", Draining: "i-1",
				Phase: manifests.PhaseRecovering, Ready: "False Launching", Reconciling: true,
				RequeueAfter: reconcile.PendingPoll,
			},
		},
		{
			name: "the replacement Ready terminates the draining VM",
			d: dep(launchedOn(vm("i-2", 2, provider.StatePending), manifests.PhaseRecovering), status(func(st *manifests.DeploymentStatus) {
				st.Draining = &manifests.VMStatus{ID: "i-1", Attempt: 1}
				st.Recoveries = 1
			})),
			observed: []provider.VM{vm("i-1", 1, provider.StateRunning), vm("i-2", 2, provider.StateRunning)},
			want: outcome{
				Terminate: []string{"i-1"},
				Attempt:   2, AttemptGeneration: 1, Recoveries: 1, VM: "i-2",
				Phase: manifests.PhaseRunning, Ready: "True Running", ObservedGeneration: 1,
				Events: []string{"Normal Recovered", "Normal Drained"},
			},
		},
		{
			name: "a draining VM taken back before its replacement is ready is let go",
			d: dep(launchedOn(vm("i-2", 2, provider.StatePending), manifests.PhaseRecovering), status(func(st *manifests.DeploymentStatus) {
				st.Draining = &manifests.VMStatus{ID: "i-1", Attempt: 1}
				st.Recoveries = 1
			})),
			observed: []provider.VM{because(vm("i-1", 1, provider.StateTerminated), "Server.SpotInstanceTermination"), vm("i-2", 2, provider.StatePending)},
			want: outcome{
				Attempt: 2, AttemptGeneration: 1, Recoveries: 1, VM: "i-2",
				Phase: manifests.PhaseRecovering, Ready: "False Launching", Reconciling: true,
				RequeueAfter: reconcile.PendingPoll,
				Events:       []string{"Normal TakenBack"},
			},
		},
		{
			name:     "a rebalance recommendation is ignored unless the spec says replace",
			d:        dep(runningOn(vm("i-1", 1, provider.StateRunning))),
			observed: []provider.VM{vm("i-1", 1, provider.StateRunning)},
			warning:  &reconcile.Warning{VMID: "i-1", Kind: reconcile.WarningRebalance},
			want: outcome{
				Attempt: 1, AttemptGeneration: 1, VM: "i-1",
				Phase: manifests.PhaseRunning, Ready: "True Running", ObservedGeneration: 1,
			},
		},
		{
			name: "a rebalance recommendation replaces with onRebalance: replace",
			d: dep(runningOn(vm("i-1", 1, provider.StateRunning)), func(d *manifests.Deployment) {
				d.Spec.Spot.OnRebalance = manifests.SpotRebalanceReplace
			}),
			observed: []provider.VM{vm("i-1", 1, provider.StateRunning)},
			warning:  &reconcile.Warning{VMID: "i-1", Kind: reconcile.WarningRebalance},
			want: outcome{
				Launch:  &reconcile.Launch{Attempt: 2, Recovery: true},
				Attempt: 2, AttemptGeneration: 1, Recoveries: 1, Draining: "i-1",
				Phase: manifests.PhaseRecovering, Ready: "False Launching", Reconciling: true, ObservedGeneration: 1,
				Events: []string{"Warning InterruptionWarning"},
			},
		},
		{
			name:     "a warning about a VM that is not the current one is ignored",
			d:        dep(runningOn(vm("i-2", 2, provider.StateRunning))),
			observed: []provider.VM{vm("i-2", 2, provider.StateRunning)},
			warning:  &reconcile.Warning{VMID: "i-1", Kind: reconcile.WarningInterruption},
			want: outcome{
				Attempt: 2, AttemptGeneration: 1, VM: "i-2",
				Phase: manifests.PhaseRunning, Ready: "True Running", ObservedGeneration: 1,
			},
		},
		{
			name: "deleting terminates a draining VM with the current one",
			d: dep(deleting, launchedOn(vm("i-2", 2, provider.StateRunning), manifests.PhaseRecovering), status(func(st *manifests.DeploymentStatus) {
				st.Draining = &manifests.VMStatus{ID: "i-1", Attempt: 1}
			})),
			observed: []provider.VM{vm("i-2", 2, provider.StateRunning)},
			want: outcome{
				Terminate: []string{"i-2", "i-1"},
				Attempt:   2, AttemptGeneration: 1, VM: "i-2", Draining: "i-1",
				Phase: manifests.PhaseTerminating, Ready: "False Deleting", Reconciling: true,
				Events: []string{"Normal Terminating", "Normal Terminating"},
			},
		},
		{
			name:      "running VM of a bootstrapping provider gets its workload started",
			d:         dep(launchedOn(vm("i-1", 1, provider.StateRunning), manifests.PhaseLaunching)),
			observed:  []provider.VM{vm("i-1", 1, provider.StateRunning)},
			bootstrap: true,
			want: outcome{
				Attempt: 1, AttemptGeneration: 1, VM: "i-1",
				Phase: manifests.PhaseLaunching, Ready: "False Bootstrapping", Reconciling: true,
			},
			check: func(t *testing.T, _ reconcile.Input, p reconcile.Plan) {
				if !p.Bootstrap {
					t.Error("no bootstrap planned")
				}
			},
		},
		{
			name:      "a failed bootstrap being retried keeps its reason and transition time",
			d:         dep(launchedOn(vm("i-1", 1, provider.StateRunning), manifests.PhaseLaunching), bootstrapFailed),
			observed:  []provider.VM{launchedAt(vm("i-1", 1, provider.StateRunning), recent)},
			bootstrap: true,
			want: outcome{
				Attempt: 1, AttemptGeneration: 1, VM: "i-1",
				Phase: manifests.PhaseLaunching, Ready: "False BootstrapFailed", Reconciling: true,
			},
			check: func(t *testing.T, in reconcile.Input, p reconcile.Plan) {
				if !p.Bootstrap {
					t.Error("no bootstrap planned")
				}
				ready := manifests.FindCondition(p.Status.Conditions, manifests.ConditionReady)
				if !ready.LastTransitionTime.Equal(earlier) || ready.Message != "start the workload on VM i-1: connection refused" {
					t.Errorf("Ready rewritten while retrying: %+v", ready)
				}
			},
		},
		{
			name:      "a VM that never takes its workload within the boot timeout is replaced",
			d:         dep(launchedOn(vm("i-1", 1, provider.StateRunning), manifests.PhaseLaunching), bootstrapFailed),
			observed:  []provider.VM{vm("i-1", 1, provider.StateRunning)}, // launched an hour ago
			bootstrap: true,
			want: outcome{
				Launch:    &reconcile.Launch{Attempt: 2},
				Terminate: []string{"i-1"},
				Attempt:   2, AttemptGeneration: 1,
				Phase: manifests.PhaseLaunching, Ready: "False BootstrapTimeout", Reconciling: true,
				Events: []string{"Warning BootstrapTimeout"},
			},
			messages: map[string]string{reconcile.ReasonBootstrapTimeout: "VM i-1 did not accept the workload within 10m0s"},
		},
		{
			name:        "a deployment's own boot timeout is waited out",
			d:           dep(launchedOn(vm("i-1", 1, provider.StateRunning), manifests.PhaseLaunching), bootstrapFailed),
			observed:    []provider.VM{vm("i-1", 1, provider.StateRunning)},
			bootstrap:   true,
			bootTimeout: 2 * time.Hour,
			want: outcome{
				Attempt: 1, AttemptGeneration: 1, VM: "i-1",
				Phase: manifests.PhaseLaunching, Ready: "False BootstrapFailed", Reconciling: true,
			},
		},
		{
			// A control plane back from a long outage tries the VM before
			// judging it: its age alone is no reason to replace it.
			name:      "an old VM not yet tried gets its workload started, not replaced",
			d:         dep(launchedOn(vm("i-1", 1, provider.StateRunning), manifests.PhaseLaunching)),
			observed:  []provider.VM{vm("i-1", 1, provider.StateRunning)},
			bootstrap: true,
			want: outcome{
				Attempt: 1, AttemptGeneration: 1, VM: "i-1",
				Phase: manifests.PhaseLaunching, Ready: "False Bootstrapping", Reconciling: true,
			},
		},
		{
			name: "new deployment launches attempt 1 and records what it is for",
			d:    dep(generation(3), restartedAt(resubmit1)),
			want: outcome{
				Launch:  &reconcile.Launch{Attempt: 1},
				Attempt: 1, AttemptGeneration: 3, AttemptRestartedAt: resubmit1,
				Phase: manifests.PhaseLaunching, Ready: "False Launching", Reconciling: true,
			},
			check: func(t *testing.T, _ reconcile.Input, p reconcile.Plan) {
				ready := manifests.FindCondition(p.Status.Conditions, manifests.ConditionReady)
				if !ready.LastTransitionTime.Equal(now) || ready.ObservedGeneration != 3 {
					t.Errorf("Ready = %+v, want lastTransitionTime %v and observedGeneration 3", ready, now)
				}
			},
		},
		{
			name: "attempt recorded but never launched is launched again with the same attempt",
			d:    dep(attempt(1, manifests.PhaseLaunching)),
			want: outcome{
				Launch:  &reconcile.Launch{Attempt: 1},
				Attempt: 1, AttemptGeneration: 1,
				Phase: manifests.PhaseLaunching, Ready: "False Launching", Reconciling: true,
			},
		},
		{
			name: "recovery attempt recorded but never launched is launched again as a recovery",
			d:    dep(attempt(3, manifests.PhaseRecovering), status(func(st *manifests.DeploymentStatus) { st.Recoveries = 2 })),
			observed: []provider.VM{
				vm("i-1", 1, provider.StateTerminated),
				vm("i-2", 2, provider.StateTerminated),
			},
			want: outcome{
				Launch:  &reconcile.Launch{Attempt: 3, Recovery: true},
				Attempt: 3, AttemptGeneration: 1, Recoveries: 2,
				Phase: manifests.PhaseRecovering, Ready: "False Launching", Reconciling: true,
			},
		},
		{
			name:     "running VM launched before a crash lost its status write is adopted",
			d:        dep(attempt(1, manifests.PhaseLaunching)),
			observed: []provider.VM{vm("i-1", 1, provider.StateRunning)},
			want: outcome{
				Attempt: 1, AttemptGeneration: 1, VM: "i-1",
				Phase: manifests.PhaseRunning, Ready: "True Running", ObservedGeneration: 1,
				Events: []string{"Normal Adopted"},
			},
			messages: map[string]string{reconcile.ReasonAdopted: "i-1"},
			check: func(t *testing.T, _ reconcile.Input, p reconcile.Plan) {
				want := &manifests.VMStatus{ID: "i-1", Market: "spot", Address: "203.0.113.10", LaunchedAt: longAgo, Attempt: 1, Generation: 1}
				if diff := cmp.Diff(want, p.Status.VM); diff != "" {
					t.Errorf("status.vm (-want +got):\n%s", diff)
				}
			},
		},
		{
			name:     "running VM matching the status is steady: no action, no event, status unchanged",
			d:        dep(runningOn(vm("i-1", 1, provider.StateRunning))),
			observed: []provider.VM{vm("i-1", 1, provider.StateRunning)},
			want: outcome{
				Attempt: 1, AttemptGeneration: 1, VM: "i-1",
				Phase: manifests.PhaseRunning, Ready: "True Running", ObservedGeneration: 1,
			},
			check: func(t *testing.T, in reconcile.Input, p reconcile.Plan) {
				if diff := cmp.Diff(in.Deployment.Status, p.Status); diff != "" {
					t.Errorf("an idle resync changed the status (-before +after):\n%s", diff)
				}
			},
		},
		{
			name:     "launched VM seen running becomes Ready and drops Reconciling",
			d:        dep(launchedOn(vm("i-1", 1, provider.StateRunning), manifests.PhaseLaunching)),
			observed: []provider.VM{vm("i-1", 1, provider.StateRunning)},
			want: outcome{
				Attempt: 1, AttemptGeneration: 1, VM: "i-1",
				Phase: manifests.PhaseRunning, Ready: "True Running", ObservedGeneration: 1,
			},
			check: func(t *testing.T, _ reconcile.Input, p reconcile.Plan) {
				if got := p.Status.VM.BundleVersions; !cmp.Equal(got, map[string]int64{"hf": 4}) {
					t.Errorf("status.vm.bundleVersions = %v, want those recorded at launch", got)
				}
			},
		},
		{
			name:     "pending VM is polled while it starts",
			d:        dep(launchedOn(vm("i-1", 1, provider.StatePending), manifests.PhaseLaunching)),
			observed: []provider.VM{vm("i-1", 1, provider.StatePending)},
			want: outcome{
				Attempt: 1, AttemptGeneration: 1, VM: "i-1",
				Phase: manifests.PhaseLaunching, Ready: "False Launching", Reconciling: true,
				RequeueAfter: reconcile.PendingPoll,
			},
		},
		{
			// The control plane died mid-launch (a container created but
			// never started): the same attempt is launched again, and its
			// token returns this VM and finishes the launch.
			name:     "pending VM of a crashed launch is launched again with the same attempt",
			d:        dep(attempt(1, manifests.PhaseLaunching)),
			observed: []provider.VM{vm("i-1", 1, provider.StatePending)},
			want: outcome{
				Launch:  &reconcile.Launch{Attempt: 1},
				Attempt: 1, AttemptGeneration: 1,
				Phase: manifests.PhaseLaunching, Ready: "False Launching", Reconciling: true,
			},
		},
		{
			name:     "stopped VM is preempted: terminated and recovered with a new attempt",
			d:        dep(runningOn(vm("i-1", 1, provider.StateRunning))),
			observed: []provider.VM{because(vm("i-1", 1, provider.StateStopped), "container exited with code 137")},
			want: outcome{
				Launch:    &reconcile.Launch{Attempt: 2, Recovery: true},
				Terminate: []string{"i-1"},
				Attempt:   2, AttemptGeneration: 1, Recoveries: 1,
				Phase: manifests.PhaseRecovering, Ready: "False Launching", Reconciling: true, ObservedGeneration: 1,
				Events: []string{"Warning Preempted", "Normal Recovering"},
			},
			messages: map[string]string{
				reconcile.ReasonPreempted:  "VM i-1 was taken away: container exited with code 137",
				reconcile.ReasonRecovering: "attempt 2",
			},
		},
		{
			name: "VM that vanished is preempted and recovered",
			d:    dep(runningOn(vm("i-1", 1, provider.StateRunning))),
			want: outcome{
				Launch:  &reconcile.Launch{Attempt: 2, Recovery: true},
				Attempt: 2, AttemptGeneration: 1, Recoveries: 1,
				Phase: manifests.PhaseRecovering, Ready: "False Launching", Reconciling: true, ObservedGeneration: 1,
				Events: []string{"Warning Preempted", "Normal Recovering"},
			},
			messages: map[string]string{reconcile.ReasonPreempted: "VM i-1 was taken away: it no longer exists"},
		},
		{
			name:     "terminated VM is preempted and recovered without terminating it again",
			d:        dep(runningOn(vm("i-1", 1, provider.StateRunning))),
			observed: []provider.VM{because(vm("i-1", 1, provider.StateTerminated), "Server.SpotInstanceTermination: Spot instance termination")},
			want: outcome{
				Launch:  &reconcile.Launch{Attempt: 2, Recovery: true},
				Attempt: 2, AttemptGeneration: 1, Recoveries: 1,
				Phase: manifests.PhaseRecovering, Ready: "False Launching", Reconciling: true, ObservedGeneration: 1,
				Events: []string{"Warning Preempted", "Normal Recovering"},
			},
			messages: map[string]string{reconcile.ReasonPreempted: "Server.SpotInstanceTermination"},
		},
		{
			name:     "preempted VM without a reason is described by its state",
			d:        dep(runningOn(vm("i-1", 1, provider.StateRunning))),
			observed: []provider.VM{vm("i-1", 1, provider.StateStopping)},
			want: outcome{
				Launch:    &reconcile.Launch{Attempt: 2, Recovery: true},
				Terminate: []string{"i-1"},
				Attempt:   2, AttemptGeneration: 1, Recoveries: 1,
				Phase: manifests.PhaseRecovering, Ready: "False Launching", Reconciling: true, ObservedGeneration: 1,
				Events: []string{"Warning Preempted", "Normal Recovering"},
			},
			messages: map[string]string{reconcile.ReasonPreempted: "VM i-1 was taken away: stopping"},
		},
		{
			name: "VM of a crashed launch that died before it was recorded is recovered",
			d:    dep(attempt(1, manifests.PhaseLaunching)),
			observed: []provider.VM{
				because(launchedAt(vm("i-1", 1, provider.StateTerminated), recent), "Server.SpotInstanceTermination"),
			},
			want: outcome{
				Launch:  &reconcile.Launch{Attempt: 2, Recovery: true},
				Attempt: 2, AttemptGeneration: 1, Recoveries: 1,
				Phase: manifests.PhaseRecovering, Ready: "False Launching", Reconciling: true,
				Events: []string{"Warning Preempted", "Normal Recovering"},
			},
		},
		{
			name: "replacement VM still starting keeps the Recovering phase",
			d: dep(
				launchedOn(vm("i-2", 2, provider.StatePending), manifests.PhaseRecovering),
				status(func(st *manifests.DeploymentStatus) { st.Recoveries = 1 }),
			),
			observed: []provider.VM{
				vm("i-1", 1, provider.StateTerminated),
				vm("i-2", 2, provider.StatePending),
			},
			want: outcome{
				Attempt: 2, AttemptGeneration: 1, Recoveries: 1, VM: "i-2",
				Phase: manifests.PhaseRecovering, Ready: "False Launching", Reconciling: true,
				RequeueAfter: reconcile.PendingPoll,
			},
		},
		{
			name: "replacement VM running after a preemption is Recovered",
			d: dep(
				launchedOn(vm("i-2", 2, provider.StateRunning), manifests.PhaseRecovering),
				status(func(st *manifests.DeploymentStatus) { st.Recoveries = 1 }),
			),
			observed: []provider.VM{
				vm("i-1", 1, provider.StateTerminated),
				vm("i-2", 2, provider.StateRunning),
			},
			want: outcome{
				Attempt: 2, AttemptGeneration: 1, Recoveries: 1, VM: "i-2",
				Phase: manifests.PhaseRunning, Ready: "True Running", ObservedGeneration: 1,
				Events: []string{"Normal Recovered"},
			},
			messages: map[string]string{reconcile.ReasonRecovered: "i-2"},
		},
		{
			name: "fast crash within the free recoveries is recovered at once and counted",
			d: dep(runningOn(launchedAt(vm("i-1", 1, provider.StateRunning), recent)),
				status(func(st *manifests.DeploymentStatus) { st.FastRecoveries = reconcile.FreeFastRecoveries - 1 })),
			observed: []provider.VM{crash(launchedAt(vm("i-1", 1, provider.StateStopped), recent))},
			want: outcome{
				Launch:    &reconcile.Launch{Attempt: 2, Recovery: true},
				Terminate: []string{"i-1"},
				Attempt:   2, AttemptGeneration: 1, Recoveries: 1, FastRecoveries: reconcile.FreeFastRecoveries,
				Phase: manifests.PhaseRecovering, Ready: "False Launching", Reconciling: true, ObservedGeneration: 1,
				Events: []string{"Warning Preempted", "Normal Recovering"},
			},
		},
		{
			name: "fast crash past the free recoveries backs off instead of launching",
			d: dep(runningOn(launchedAt(vm("i-1", 1, provider.StateRunning), recent)),
				status(func(st *manifests.DeploymentStatus) {
					st.Recoveries, st.FastRecoveries = 2, reconcile.FreeFastRecoveries
				})),
			observed: []provider.VM{because(crash(launchedAt(vm("i-1", 1, provider.StateStopped), recent)), "container exited with code 1")},
			want: outcome{
				Terminate: []string{"i-1"},
				Attempt:   2, AttemptGeneration: 1, Recoveries: 3, FastRecoveries: reconcile.FreeFastRecoveries + 1,
				NextLaunchAt: timeAt(now.Add(reconcile.RecoveryBackOffBase)),
				Phase:        manifests.PhaseRecovering, Ready: "False RecoveryBackOff", Reconciling: true, ObservedGeneration: 1,
				Events:       []string{"Warning Preempted", "Warning RecoveryBackOff"},
				RequeueAfter: reconcile.RecoveryBackOffBase,
			},
			messages: map[string]string{reconcile.ReasonRecoveryBackOff: "next attempt in 5s"},
		},
		{
			name: "each further fast crash doubles the back-off",
			d: dep(runningOn(launchedAt(vm("i-1", 1, provider.StateRunning), recent)),
				status(func(st *manifests.DeploymentStatus) { st.FastRecoveries = reconcile.FreeFastRecoveries + 1 })),
			observed: []provider.VM{crash(launchedAt(vm("i-1", 1, provider.StateStopped), recent))},
			want: outcome{
				Terminate: []string{"i-1"},
				Attempt:   2, AttemptGeneration: 1, Recoveries: 1, FastRecoveries: reconcile.FreeFastRecoveries + 2,
				NextLaunchAt: timeAt(now.Add(2 * reconcile.RecoveryBackOffBase)),
				Phase:        manifests.PhaseRecovering, Ready: "False RecoveryBackOff", Reconciling: true, ObservedGeneration: 1,
				Events:       []string{"Warning Preempted", "Warning RecoveryBackOff"},
				RequeueAfter: 2 * reconcile.RecoveryBackOffBase,
			},
		},
		{
			name: "a VM taken away soon after launch is replaced at once, past the free recoveries too",
			d: dep(runningOn(launchedAt(vm("i-1", 1, provider.StateRunning), recent)),
				status(func(st *manifests.DeploymentStatus) {
					st.Recoveries, st.FastRecoveries = 5, reconcile.FreeFastRecoveries
				})),
			observed: []provider.VM{because(launchedAt(vm("i-1", 1, provider.StateStopped), recent), "container exited with code 137")},
			want: outcome{
				Launch:    &reconcile.Launch{Attempt: 2, Recovery: true},
				Terminate: []string{"i-1"},
				Attempt:   2, AttemptGeneration: 1, Recoveries: 6, FastRecoveries: reconcile.FreeFastRecoveries,
				Phase: manifests.PhaseRecovering, Ready: "False Launching", Reconciling: true, ObservedGeneration: 1,
				Events: []string{"Warning Preempted", "Normal Recovering"},
			},
			messages: map[string]string{reconcile.ReasonPreempted: "VM i-1 was taken away: container exited with code 137"},
		},
		{
			name: "a crash long after launch starts the count again",
			d: dep(runningOn(launchedAt(vm("i-1", 1, provider.StateRunning), longAgo)),
				status(func(st *manifests.DeploymentStatus) { st.FastRecoveries = reconcile.FreeFastRecoveries + 3 })),
			observed: []provider.VM{crash(because(launchedAt(vm("i-1", 1, provider.StateStopped), longAgo), "container exited with code 1"))},
			want: outcome{
				Launch:    &reconcile.Launch{Attempt: 2, Recovery: true},
				Terminate: []string{"i-1"},
				Attempt:   2, AttemptGeneration: 1, Recoveries: 1,
				Phase: manifests.PhaseRecovering, Ready: "False Launching", Reconciling: true, ObservedGeneration: 1,
				Events: []string{"Warning Preempted", "Normal Recovering"},
			},
			messages: map[string]string{reconcile.ReasonPreempted: "VM i-1 ended on its own: container exited with code 1"},
		},
		{
			name: "back-off stops growing at its maximum however many fast crashes",
			d: dep(runningOn(launchedAt(vm("i-1", 1, provider.StateRunning), recent)),
				status(func(st *manifests.DeploymentStatus) { st.FastRecoveries = 200 })),
			observed: []provider.VM{crash(launchedAt(vm("i-1", 1, provider.StateStopped), recent))},
			want: outcome{
				Terminate: []string{"i-1"},
				Attempt:   2, AttemptGeneration: 1, Recoveries: 1, FastRecoveries: 201,
				NextLaunchAt: timeAt(now.Add(reconcile.RecoveryBackOffMax)),
				Phase:        manifests.PhaseRecovering, Ready: "False RecoveryBackOff", Reconciling: true, ObservedGeneration: 1,
				Events:       []string{"Warning Preempted", "Warning RecoveryBackOff"},
				RequeueAfter: reconcile.RecoveryBackOffMax,
			},
		},
		{
			name: "backed-off recovery waits until NextLaunchAt",
			d: dep(attempt(2, manifests.PhaseRecovering), status(func(st *manifests.DeploymentStatus) {
				st.Recoveries, st.FastRecoveries, st.NextLaunchAt = 3, 3, timeAt(now.Add(3*time.Second))
			})),
			observed: []provider.VM{vm("i-1", 1, provider.StateTerminated)},
			want: outcome{
				Attempt: 2, AttemptGeneration: 1, Recoveries: 3, FastRecoveries: 3,
				NextLaunchAt: timeAt(now.Add(3 * time.Second)),
				Phase:        manifests.PhaseRecovering, Ready: "False Launching", Reconciling: true,
				RequeueAfter: 3 * time.Second,
			},
		},
		{
			name: "backed-off recovery launches its attempt once NextLaunchAt has passed",
			d: dep(attempt(2, manifests.PhaseRecovering), status(func(st *manifests.DeploymentStatus) {
				st.Recoveries, st.FastRecoveries, st.NextLaunchAt = 3, 3, timeAt(now.Add(-time.Second))
			})),
			observed: []provider.VM{vm("i-1", 1, provider.StateTerminated)},
			want: outcome{
				Launch:  &reconcile.Launch{Attempt: 2, Recovery: true},
				Attempt: 2, AttemptGeneration: 1, Recoveries: 3, FastRecoveries: 3,
				Phase: manifests.PhaseRecovering, Ready: "False Launching", Reconciling: true,
			},
		},
		{
			name: "VM that lived longer than FastDeath resets the fast deaths when it dies",
			d: dep(runningOn(vm("i-1", 1, provider.StateRunning)),
				status(func(st *manifests.DeploymentStatus) { st.FastRecoveries = 5 })),
			observed: []provider.VM{vm("i-1", 1, provider.StateStopped)},
			want: outcome{
				Launch:    &reconcile.Launch{Attempt: 2, Recovery: true},
				Terminate: []string{"i-1"},
				Attempt:   2, AttemptGeneration: 1, Recoveries: 1,
				Phase: manifests.PhaseRecovering, Ready: "False Launching", Reconciling: true, ObservedGeneration: 1,
				Events: []string{"Warning Preempted", "Normal Recovering"},
			},
		},
		{
			name: "VM running longer than FastDeath resets the fast deaths",
			d: dep(runningOn(vm("i-1", 1, provider.StateRunning)),
				status(func(st *manifests.DeploymentStatus) { st.FastRecoveries = 3 })),
			observed: []provider.VM{vm("i-1", 1, provider.StateRunning)},
			want: outcome{
				Attempt: 1, AttemptGeneration: 1, VM: "i-1",
				Phase: manifests.PhaseRunning, Ready: "True Running", ObservedGeneration: 1,
			},
		},
		{
			name: "resubmit replaces the VM with a new attempt that is not a recovery",
			d: dep(restartedAt(resubmit1), runningOn(vm("i-1", 1, provider.StateRunning)),
				status(func(st *manifests.DeploymentStatus) { st.Recoveries = 4 }), restartedAt(resubmit2)),
			observed: []provider.VM{vm("i-1", 1, provider.StateRunning)},
			want: outcome{
				Launch:    &reconcile.Launch{Attempt: 2},
				Terminate: []string{"i-1"},
				Attempt:   2, AttemptGeneration: 1, AttemptRestartedAt: resubmit2, Recoveries: 4,
				Phase: manifests.PhaseLaunching, Ready: "False Launching", Reconciling: true, ObservedGeneration: 1,
				Events: []string{"Normal Replacing"},
			},
			messages: map[string]string{reconcile.ReasonReplacing: "replacing VM i-1: resubmitted"},
		},
		{
			name:     "resubmit whose bundle is missing keeps the running VM",
			d:        dep(restartedAt(resubmit1), runningOn(vm("i-1", 1, provider.StateRunning)), restartedAt(resubmit2)),
			observed: []provider.VM{vm("i-1", 1, provider.StateRunning)},
			missing:  []string{"hf"},
			want: outcome{
				Attempt: 1, AttemptGeneration: 1, AttemptRestartedAt: resubmit1, VM: "i-1",
				Phase: manifests.PhaseRunning, Ready: "False SecretBundleNotFound", ObservedGeneration: 1,
				Events: []string{"Warning SecretBundleNotFound"},
			},
			messages: map[string]string{reconcile.ReasonSecretBundleNotFound: "resubmitted, but secret bundle(s) hf not found: VM i-1 keeps running"},
		},
		{
			name: "resubmit whose bundle is still missing says so once",
			d: dep(restartedAt(resubmit1), runningOn(vm("i-1", 1, provider.StateRunning)), restartedAt(resubmit2), func(d *manifests.Deployment) {
				reconcile.SetReady(&d.Status, manifests.ConditionFalse, reconcile.ReasonSecretBundleNotFound,
					"resubmitted, but secret bundle(s) hf not found: VM i-1 keeps running until a replacement can be given them", 1, earlier)
			}),
			observed: []provider.VM{vm("i-1", 1, provider.StateRunning)},
			missing:  []string{"hf"},
			want: outcome{
				Attempt: 1, AttemptGeneration: 1, AttemptRestartedAt: resubmit1, VM: "i-1",
				Phase: manifests.PhaseRunning, Ready: "False SecretBundleNotFound", ObservedGeneration: 1,
			},
		},
		{
			name:     "spec change whose new bundle is missing keeps the running VM",
			d:        dep(runningOn(vm("i-1", 1, provider.StateRunning)), generation(2)),
			observed: []provider.VM{vm("i-1", 1, provider.StateRunning)},
			missing:  []string{"hf"},
			want: outcome{
				Attempt: 1, AttemptGeneration: 1, VM: "i-1",
				Phase: manifests.PhaseRunning, Ready: "False SecretBundleNotFound", ObservedGeneration: 1,
				Events: []string{"Warning SecretBundleNotFound"},
			},
			messages: map[string]string{reconcile.ReasonSecretBundleNotFound: "the spec changed"},
		},
		{
			name:     "resubmit with a missing bundle and no live VM starts the attempt (the launch then waits)",
			d:        dep(restartedAt(resubmit1), runningOn(vm("i-1", 1, provider.StateRunning)), restartedAt(resubmit2)),
			observed: []provider.VM{vm("i-1", 1, provider.StateTerminated)},
			missing:  []string{"hf"},
			want: outcome{
				Launch:  &reconcile.Launch{Attempt: 2},
				Attempt: 2, AttemptGeneration: 1, AttemptRestartedAt: resubmit2,
				Phase: manifests.PhaseLaunching, Ready: "False Launching", Reconciling: true, ObservedGeneration: 1,
			},
		},
		{
			name:     "first resubmit of a deployment applied without a marker replaces the VM",
			d:        dep(runningOn(vm("i-1", 1, provider.StateRunning)), restartedAt(resubmit1)),
			observed: []provider.VM{vm("i-1", 1, provider.StateRunning)},
			want: outcome{
				Launch:    &reconcile.Launch{Attempt: 2},
				Terminate: []string{"i-1"},
				Attempt:   2, AttemptGeneration: 1, AttemptRestartedAt: resubmit1,
				Phase: manifests.PhaseLaunching, Ready: "False Launching", Reconciling: true, ObservedGeneration: 1,
				Events: []string{"Normal Replacing"},
			},
			messages: map[string]string{reconcile.ReasonReplacing: "resubmitted"},
		},
		{
			name:     "spec change replaces the VM with a new attempt for the new generation",
			d:        dep(runningOn(vm("i-1", 1, provider.StateRunning)), generation(2)),
			observed: []provider.VM{vm("i-1", 1, provider.StateRunning)},
			want: outcome{
				Launch:    &reconcile.Launch{Attempt: 2},
				Terminate: []string{"i-1"},
				Attempt:   2, AttemptGeneration: 2,
				Phase: manifests.PhaseLaunching, Ready: "False Launching", Reconciling: true, ObservedGeneration: 1,
				Events: []string{"Normal Replacing"},
			},
			messages: map[string]string{reconcile.ReasonReplacing: "replacing VM i-1: the spec changed"},
		},
		{
			name:     "spec change while the VM is gone launches a new attempt without a Replacing event",
			d:        dep(runningOn(vm("i-1", 1, provider.StateRunning)), generation(2)),
			observed: []provider.VM{vm("i-1", 1, provider.StateTerminated)},
			want: outcome{
				Launch:  &reconcile.Launch{Attempt: 2},
				Attempt: 2, AttemptGeneration: 2,
				Phase: manifests.PhaseLaunching, Ready: "False Launching", Reconciling: true, ObservedGeneration: 1,
			},
		},
		{
			name: "resubmit during a recovery back-off launches at once and forgets the fast deaths",
			d: dep(attempt(2, manifests.PhaseRecovering), status(func(st *manifests.DeploymentStatus) {
				st.Recoveries, st.FastRecoveries, st.NextLaunchAt = 3, 3, timeAt(now.Add(time.Minute))
			}), restartedAt(resubmit1)),
			observed: []provider.VM{vm("i-1", 1, provider.StateTerminated)},
			want: outcome{
				Launch:  &reconcile.Launch{Attempt: 3},
				Attempt: 3, AttemptGeneration: 1, AttemptRestartedAt: resubmit1, Recoveries: 3,
				Phase: manifests.PhaseLaunching, Ready: "False Launching", Reconciling: true,
			},
		},
		{
			name: "leftover VMs of other attempts are terminated unless already terminated",
			d:    dep(runningOn(vm("i-3", 3, provider.StateRunning))),
			observed: []provider.VM{
				vm("i-1", 1, provider.StateTerminated),
				vm("i-2", 2, provider.StateStopped),
				vm("i-2b", 2, provider.StateRunning),
				vm("i-4", 4, provider.StatePending),
				vm("i-3", 3, provider.StateRunning),
			},
			want: outcome{
				Terminate: []string{"i-2", "i-2b", "i-4"},
				Attempt:   3, AttemptGeneration: 1, VM: "i-3",
				Phase: manifests.PhaseRunning, Ready: "True Running", ObservedGeneration: 1,
			},
		},
		{
			name: "second VM of the current attempt is terminated and the recorded one kept",
			d:    dep(runningOn(vm("i-1", 1, provider.StateRunning))),
			observed: []provider.VM{
				vm("i-1", 1, provider.StateRunning),
				vm("i-1dup", 1, provider.StateRunning),
			},
			want: outcome{
				Terminate: []string{"i-1dup"},
				Attempt:   1, AttemptGeneration: 1, VM: "i-1",
				Phase: manifests.PhaseRunning, Ready: "True Running", ObservedGeneration: 1,
			},
		},
		{
			name: "recorded VM is kept over a duplicate of its attempt whatever the listing order",
			d:    dep(runningOn(vm("i-1", 1, provider.StateRunning))),
			observed: []provider.VM{
				vm("i-1dup", 1, provider.StatePending),
				vm("i-1", 1, provider.StateRunning),
			},
			want: outcome{
				Terminate: []string{"i-1dup"},
				Attempt:   1, AttemptGeneration: 1, VM: "i-1",
				Phase: manifests.PhaseRunning, Ready: "True Running", ObservedGeneration: 1,
			},
			check: func(t *testing.T, in reconcile.Input, p reconcile.Plan) {
				if diff := cmp.Diff(in.Deployment.Status, p.Status); diff != "" {
					t.Errorf("a duplicate changed the status (-before +after):\n%s", diff)
				}
			},
		},
		{
			name: "preempted VM and its dead duplicate are both terminated",
			d:    dep(runningOn(vm("i-1", 1, provider.StateRunning))),
			observed: []provider.VM{
				vm("i-1", 1, provider.StateStopped),
				vm("i-1dup", 1, provider.StateStopped),
			},
			want: outcome{
				Launch:    &reconcile.Launch{Attempt: 2, Recovery: true},
				Terminate: []string{"i-1dup", "i-1"},
				Attempt:   2, AttemptGeneration: 1, Recoveries: 1,
				Phase: manifests.PhaseRecovering, Ready: "False Launching", Reconciling: true, ObservedGeneration: 1,
				Events: []string{"Warning Preempted", "Normal Recovering"},
			},
			messages: map[string]string{reconcile.ReasonPreempted: "VM i-1 was taken away"},
		},
		{
			name: "live VM of the current attempt is adopted over a dead duplicate, which is terminated",
			d:    dep(attempt(1, manifests.PhaseLaunching)),
			observed: []provider.VM{
				vm("i-1dup", 1, provider.StateStopped),
				vm("i-1", 1, provider.StateRunning),
			},
			want: outcome{
				Terminate: []string{"i-1dup"},
				Attempt:   1, AttemptGeneration: 1, VM: "i-1",
				Phase: manifests.PhaseRunning, Ready: "True Running", ObservedGeneration: 1,
				Events: []string{"Normal Adopted"},
			},
		},
		{
			name: "stalled attempt with nothing changed does nothing",
			d:    dep(attempt(1, manifests.PhaseLaunching), stalled),
			want: outcome{
				Attempt: 1, AttemptGeneration: 1,
				Phase: manifests.PhaseFailed, Ready: "False InvalidLaunchRequest", Stalled: true,
			},
			check: func(t *testing.T, in reconcile.Input, p reconcile.Plan) {
				if diff := cmp.Diff(in.Deployment.Status, p.Status); diff != "" {
					t.Errorf("a stalled deployment's status changed (-before +after):\n%s", diff)
				}
			},
		},
		{
			name:     "stalled deployment resubmitted starts a new attempt and clears Stalled",
			d:        dep(attempt(1, manifests.PhaseLaunching), stalled, restartedAt(resubmit1)),
			observed: nil,
			want: outcome{
				Launch:  &reconcile.Launch{Attempt: 2},
				Attempt: 2, AttemptGeneration: 1, AttemptRestartedAt: resubmit1,
				Phase: manifests.PhaseLaunching, Ready: "False Launching", Reconciling: true,
			},
		},
		{
			name: "stalled deployment with a changed spec starts a new attempt and clears Stalled",
			d:    dep(attempt(1, manifests.PhaseLaunching), stalled, generation(2)),
			want: outcome{
				Launch:  &reconcile.Launch{Attempt: 2},
				Attempt: 2, AttemptGeneration: 2,
				Phase: manifests.PhaseLaunching, Ready: "False Launching", Reconciling: true,
			},
		},
		{
			name: "deleting with live VMs terminates every one not yet terminated and keeps the finalizer",
			d:    dep(runningOn(vm("i-2", 2, provider.StateRunning)), deleting),
			observed: []provider.VM{
				vm("i-1", 1, provider.StateTerminated),
				vm("i-0", 0, provider.StateStopped),
				vm("i-2", 2, provider.StateRunning),
			},
			want: outcome{
				Terminate: []string{"i-0", "i-2"},
				Attempt:   2, AttemptGeneration: 1, VM: "i-2",
				Phase: manifests.PhaseTerminating, Ready: "False Deleting", Reconciling: true, ObservedGeneration: 1,
				Events: []string{"Normal Terminating", "Normal Terminating"},
			},
		},
		{
			// The listing may predate the launch: the recorded VM is
			// terminated anyway (idempotent) rather than leaked.
			name: "deleting with the recorded VM missing from the listing terminates it all the same",
			d:    dep(runningOn(vm("i-2", 2, provider.StateRunning)), deleting),
			want: outcome{
				Terminate: []string{"i-2"},
				Attempt:   2, AttemptGeneration: 1, VM: "i-2",
				Phase: manifests.PhaseTerminating, Ready: "False Deleting", Reconciling: true, ObservedGeneration: 1,
				Events: []string{"Normal Terminating"},
			},
		},
		{
			name: "deleting with only terminated VMs removes the finalizer",
			d:    dep(runningOn(vm("i-2", 2, provider.StateRunning)), deleting),
			observed: []provider.VM{
				vm("i-1", 1, provider.StateTerminated),
				vm("i-2", 2, provider.StateTerminated),
			},
			want: outcome{
				Attempt: 2, AttemptGeneration: 1,
				Phase: manifests.PhaseTerminating, Ready: "False Deleting", Reconciling: true, ObservedGeneration: 1,
				Events:          []string{"Normal Terminated"},
				RemoveFinalizer: true,
			},
		},
		{
			name: "deleting a deployment that never launched removes the finalizer at once",
			d:    dep(deleting),
			want: outcome{
				Phase: manifests.PhaseTerminating, Ready: "False Deleting", Reconciling: true,
				RemoveFinalizer: true,
			},
		},
		{
			name: "deleting a stalled deployment still removes the finalizer",
			d:    dep(attempt(1, manifests.PhaseLaunching), stalled, deleting),
			want: outcome{
				Attempt: 1, AttemptGeneration: 1,
				Phase: manifests.PhaseTerminating, Ready: "False Deleting", Reconciling: true, Stalled: true,
				RemoveFinalizer: true,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at := tt.now
			if at.IsZero() {
				at = now
			}
			in := reconcile.Input{Deployment: tt.d, Observed: tt.observed, Now: at, NeedsBootstrap: tt.bootstrap, BootTimeout: tt.bootTimeout, MissingBundles: tt.missing, Warning: tt.warning}
			before := manifests.DeepCopy(tt.d)
			observedBefore := slices.Clone(tt.observed)

			p := reconcile.Decide(in)

			if diff := cmp.Diff(tt.want, summarize(t, p)); diff != "" {
				t.Errorf("Decide plan (-want +got):\n%s", diff)
			}
			for reason, text := range tt.messages {
				if !hasEvent(p.Events, reason, text) {
					t.Errorf("no %s event whose message contains %q; events: %+v", reason, text, p.Events)
				}
			}
			if tt.check != nil {
				tt.check(t, in, p)
			}

			// Decide reads its input and never changes it, nor returns
			// anything that shares memory with it.
			scribble(&p)
			if diff := cmp.Diff(before, tt.d, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Decide changed its deployment (-before +after):\n%s", diff)
			}
			if diff := cmp.Diff(observedBefore, tt.observed); diff != "" {
				t.Errorf("Decide changed the observed VMs (-before +after):\n%s", diff)
			}
		})
	}
}

// scribble overwrites everything a plan holds, so that memory shared with
// the input shows up as a change to it.
func scribble(p *reconcile.Plan) {
	st := &p.Status
	for i := range st.Conditions {
		st.Conditions[i] = manifests.Condition{Type: "Scribbled", Status: "?", LastTransitionTime: now.Add(time.Hour)}
	}
	if st.VM != nil {
		st.VM.ID = "scribbled"
		for k := range st.VM.BundleVersions {
			st.VM.BundleVersions[k] = -1
		}
	}
	if st.NextLaunchAt != nil {
		*st.NextLaunchAt = now.Add(time.Hour)
	}
	for i := range p.Terminate {
		p.Terminate[i].ID = "scribbled"
	}
}

func hasEvent(events []reconcile.Event, reason, text string) bool {
	for _, e := range events {
		if e.Reason == reason && strings.Contains(e.Message, text) {
			return true
		}
	}
	return false
}

// TestDecideCrashLoopBacksOffThenLaunches follows a workload that dies soon
// after every launch through the plans the controller would carry out.
func TestDecideCrashLoopBacksOffThenLaunches(t *testing.T) {
	d := dep(runningOn(launchedAt(vm("i-1", 1, provider.StateRunning), recent)),
		status(func(st *manifests.DeploymentStatus) { st.FastRecoveries = reconcile.FreeFastRecoveries }))
	dead := crash(because(launchedAt(vm("i-1", 1, provider.StateStopped), recent), "container exited with code 1"))

	p := reconcile.Decide(reconcile.Input{Deployment: d, Observed: []provider.VM{dead}, Now: now})
	if p.Launch != nil || p.RequeueAfter != reconcile.RecoveryBackOffBase {
		t.Fatalf("fast crash past the free recoveries: launch %+v, requeue after %s; want no launch, requeue after %s",
			p.Launch, p.RequeueAfter, reconcile.RecoveryBackOffBase)
	}
	if ready := manifests.FindCondition(p.Status.Conditions, manifests.ConditionReady); ready.Reason != reconcile.ReasonRecoveryBackOff {
		t.Errorf("Ready reason = %q, want %q", ready.Reason, reconcile.ReasonRecoveryBackOff)
	}
	d.Status = p.Status
	terminated := dead
	terminated.State = provider.StateTerminated
	observed := []provider.VM{terminated}

	early := now.Add(reconcile.RecoveryBackOffBase - time.Second)
	p = reconcile.Decide(reconcile.Input{Deployment: d, Observed: observed, Now: early})
	if p.Launch != nil || p.RequeueAfter != time.Second || len(p.Terminate) != 0 {
		t.Fatalf("before NextLaunchAt: launch %+v, terminate %v, requeue after %s; want nothing but a requeue after 1s",
			p.Launch, p.Terminate, p.RequeueAfter)
	}
	if diff := cmp.Diff(d.Status, p.Status); diff != "" {
		t.Errorf("waiting out the back-off changed the status (-before +after):\n%s", diff)
	}

	due := now.Add(reconcile.RecoveryBackOffBase)
	p = reconcile.Decide(reconcile.Input{Deployment: d, Observed: observed, Now: due})
	want := &reconcile.Launch{Attempt: 2, Recovery: true}
	if diff := cmp.Diff(want, p.Launch); diff != "" {
		t.Fatalf("at NextLaunchAt, launch (-want +got):\n%s", diff)
	}
	if p.Status.NextLaunchAt != nil || p.Status.Attempt != 2 || p.Status.Phase != manifests.PhaseRecovering {
		t.Errorf("at NextLaunchAt: nextLaunchAt %v, attempt %d, phase %q; want none, 2, %q",
			p.Status.NextLaunchAt, p.Status.Attempt, p.Status.Phase, manifests.PhaseRecovering)
	}
}

// TestDecideKeepsReadyTransitionTimeWhileUnchanged: a condition's
// lastTransitionTime moves only when its status, reason or message does.
func TestDecideKeepsReadyTransitionTimeWhileUnchanged(t *testing.T) {
	d := dep(launchedOn(vm("i-1", 1, provider.StatePending), manifests.PhaseLaunching))
	pending := []provider.VM{vm("i-1", 1, provider.StatePending)}
	ready := func(p reconcile.Plan) manifests.Condition {
		return *manifests.FindCondition(p.Status.Conditions, manifests.ConditionReady)
	}

	first := reconcile.Decide(reconcile.Input{Deployment: d, Observed: pending, Now: now})
	if got := ready(first).LastTransitionTime; !got.Equal(now) {
		t.Fatalf("Ready's message changed (launching → starting): lastTransitionTime = %v, want %v", got, now)
	}

	d.Status = first.Status
	second := reconcile.Decide(reconcile.Input{Deployment: d, Observed: pending, Now: now.Add(reconcile.PendingPoll)})
	if diff := cmp.Diff(ready(first), ready(second)); diff != "" {
		t.Errorf("unchanged Ready condition changed (-first +second):\n%s", diff)
	}
	if diff := cmp.Diff(first.Status, second.Status); diff != "" {
		t.Errorf("polling a pending VM again changed the status (-first +second):\n%s", diff)
	}

	d.Status = second.Status
	later := now.Add(2 * reconcile.PendingPoll)
	third := reconcile.Decide(reconcile.Input{Deployment: d, Observed: []provider.VM{vm("i-1", 1, provider.StateRunning)}, Now: later})
	if got := ready(third); got.Status != manifests.ConditionTrue || !got.LastTransitionTime.Equal(later) {
		t.Errorf("Ready once running = %+v, want True with lastTransitionTime %v", got, later)
	}
}
