package reconcile_test

import (
	"fmt"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/reconcile"
)

func ExampleDecide() {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	d := &manifests.Deployment{Metadata: manifests.ObjectMeta{Name: "train", UID: "u1", Generation: 1}}

	// A new deployment: record attempt 1, then launch it.
	p := reconcile.Decide(reconcile.Input{Deployment: d, Now: now})
	fmt.Printf("launch attempt %d, phase %s\n", p.Launch.Attempt, p.Status.Phase)
	d.Status = p.Status

	// The controller launches it and records the VM.
	vm := provider.VM{ID: "i-1", UID: "u1", Attempt: 1, State: provider.StatePending, LaunchedAt: now}
	d.Status.VM = reconcile.VMStatusFromLaunch(vm, &d.Status, nil)

	// The VM runs, then is taken away: a recovery with a new attempt.
	vm.State = provider.StateRunning
	p = reconcile.Decide(reconcile.Input{Deployment: d, Observed: []provider.VM{vm}, Now: now.Add(time.Minute)})
	fmt.Printf("%s, %d event(s)\n", p.Status.Phase, len(p.Events))
	d.Status = p.Status

	vm.State, vm.Reason = provider.StateTerminated, "Server.SpotInstanceTermination"
	p = reconcile.Decide(reconcile.Input{Deployment: d, Observed: []provider.VM{vm}, Now: now.Add(time.Hour)})
	for _, e := range p.Events {
		fmt.Println(e.Type, e.Reason+":", e.Message)
	}
	fmt.Printf("launch attempt %d, recovery %t\n", p.Launch.Attempt, p.Launch.Recovery)
	// Output:
	// launch attempt 1, phase Launching
	// Running, 0 event(s)
	// Warning Preempted: VM i-1 was taken away: Server.SpotInstanceTermination
	// Normal Recovering: launching attempt 2 with freshly resolved secrets
	// launch attempt 2, recovery true
}
