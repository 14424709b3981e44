package reconcile_test

import (
	"testing"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/reconcile"
)

// TestDecideBootstrapsARunningVMOnceBeforeItIsReady: for a provider that
// starts the workload after launch, a running VM is bootstrapped first and
// is Ready only once its status says so.
func TestDecideBootstrapsARunningVMOnceBeforeItIsReady(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	d := &manifests.Deployment{
		TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindDeployment},
		Metadata: manifests.ObjectMeta{Name: "train", UID: "u", Generation: 1, Finalizers: []string{manifests.FinalizerVM}},
		Status: manifests.DeploymentStatus{Attempt: 1, AttemptGeneration: 1, Phase: manifests.PhaseLaunching,
			VM: &manifests.VMStatus{ID: "i-1", Attempt: 1}},
	}
	running := []provider.VM{{ID: "i-1", UID: "u", Attempt: 1, State: provider.StateRunning}}

	p := reconcile.Decide(reconcile.Input{Deployment: d, Observed: running, Now: now, NeedsBootstrap: true})
	if !p.Bootstrap || p.Launch != nil || len(p.Terminate) != 0 {
		t.Fatalf("plan = %+v, want a bootstrap only", p)
	}
	if r := manifests.FindCondition(p.Status.Conditions, manifests.ConditionReady); r == nil || r.Status != manifests.ConditionFalse || r.Reason != reconcile.ReasonBootstrapping {
		t.Errorf("Ready = %+v, want False Bootstrapping", r)
	}

	d.Status = p.Status
	d.Status.VM.Bootstrapped = true
	p = reconcile.Decide(reconcile.Input{Deployment: d, Observed: running, Now: now, NeedsBootstrap: true})
	if p.Bootstrap {
		t.Error("a bootstrapped VM was bootstrapped again")
	}
	if r := manifests.FindCondition(p.Status.Conditions, manifests.ConditionReady); r == nil || r.Status != manifests.ConditionTrue {
		t.Errorf("Ready = %+v, want True", r)
	}

	// A pending VM is not bootstrapped yet.
	d.Status.VM.Bootstrapped = false
	pending := []provider.VM{{ID: "i-1", UID: "u", Attempt: 1, State: provider.StatePending}}
	if p := reconcile.Decide(reconcile.Input{Deployment: d, Observed: pending, Now: now, NeedsBootstrap: true}); p.Bootstrap {
		t.Error("bootstrap planned for a pending VM")
	}
	// Without the capability, a running VM is simply Ready.
	if p := reconcile.Decide(reconcile.Input{Deployment: d, Observed: running, Now: now}); p.Bootstrap {
		t.Error("bootstrap planned for a provider that needs none")
	}
}
