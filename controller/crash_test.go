package controller_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/anycloud/anycloud/controller"
	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/provider/local"
	"github.com/anycloud/anycloud/state"
)

// fixedProviders hands out one provider for every credentials.
type fixedProviders struct{ p provider.Provider }

func (f fixedProviders) For(context.Context, *manifests.Credentials, map[string]string, string) (provider.Provider, error) {
	return f.p, nil
}

// dyingProvider launches for real, then never returns: the control plane
// "dies" after the VM exists and before its status is written.
type dyingProvider struct {
	provider.Provider
	launched chan string
	once     sync.Once
}

func (d *dyingProvider) Launch(ctx context.Context, req provider.LaunchRequest) (provider.VM, error) {
	vm, err := d.Provider.Launch(ctx, req)
	if err == nil {
		d.once.Do(func() { d.launched <- vm.ID })
	}
	<-ctx.Done()
	return provider.VM{}, ctx.Err()
}

func applyDeployment(t *testing.T, s state.Store, name, image string) {
	t.Helper()
	d := &manifests.Deployment{
		TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindDeployment},
		Metadata: manifests.ObjectMeta{Name: name},
		Spec:     manifests.DeploymentSpec{Image: image, Credentials: manifests.LocalCredentials},
	}
	if _, err := s.Apply(context.Background(), []state.Write{{Object: d}}, state.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestRestartAfterDyingBetweenLaunchAndStatusWriteAdoptsTheVM: the
// attempt is recorded before the launch, the VM carries it, and the next
// control plane adopts the VM instead of launching a second one.
func TestRestartAfterDyingBetweenLaunchAndStatusWriteAdoptsTheVM(t *testing.T) {
	testenv.RequireDocker(t)
	image := testenv.RequireDemoImage(t)
	home := testenv.ShortTempDir(t)

	store, err := state.OpenBolt(home, state.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lp, err := local.New(store.ClusterID())
	if err != nil {
		t.Fatal(err)
	}
	defer lp.Close()
	t.Cleanup(func() { removeAll(lp) })

	applyDeployment(t, store, "crashy", image)
	dying := &dyingProvider{Provider: lp, launched: make(chan string, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	c1 := controller.New(controller.Options{Store: store, Providers: fixedProviders{dying}, Log: logr.Discard(), Resync: time.Hour})
	done := make(chan error, 1)
	go func() { done <- c1.Run(ctx) }()
	var vmID string
	select {
	case vmID = <-dying.launched:
	case <-time.After(30 * time.Second):
		t.Fatal("no launch")
	}
	cancel()
	<-done
	obj, _ := store.Get(context.Background(), manifests.KindDeployment, "crashy")
	if d := obj.(*manifests.Deployment); d.Status.VM != nil || d.Status.Attempt != 1 {
		t.Fatalf("before the restart: want attempt 1 recorded and no VM, got attempt %d vm %+v", d.Status.Attempt, d.Status.VM)
	}
	store.Close()

	// The restart.
	store, err = state.OpenBolt(home, state.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	c2 := controller.New(controller.Options{Store: store, Providers: fixedProviders{lp}, Log: logr.Discard(), Resync: time.Hour})
	go c2.Run(ctx)
	var d *manifests.Deployment
	deadline := time.Now().Add(30 * time.Second)
	for {
		obj, err := store.Get(ctx, manifests.KindDeployment, "crashy")
		if err != nil {
			t.Fatal(err)
		}
		d = obj.(*manifests.Deployment)
		if r := manifests.FindCondition(d.Status.Conditions, manifests.ConditionReady); r != nil && r.Status == manifests.ConditionTrue {
			break
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(d.Status)
			t.Fatalf("not Ready after restart: %s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d.Status.VM.ID != vmID || d.Status.Attempt != 1 {
		t.Errorf("after restart: VM %s attempt %d, want the launched %s, attempt 1", d.Status.VM.ID, d.Status.Attempt, vmID)
	}
	vms, err := lp.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != 1 {
		t.Errorf("%d VMs after restart, want exactly 1: %+v", len(vms), vms)
	}
	evs, _ := store.Events(ctx, manifests.Ref(d))
	var reasons []string
	for _, e := range evs {
		reasons = append(reasons, e.Reason)
	}
	if !strings.Contains(strings.Join(reasons, ","), "Adopted") {
		t.Errorf("events %v, want Adopted", reasons)
	}
}

func removeAll(p *local.Provider) {
	ctx := context.Background()
	vms, _ := p.List(ctx)
	for _, vm := range vms {
		p.Terminate(ctx, vm.ID)
	}
}

// gatedProvider launches for real, then holds the answer until released:
// a delete can land between the VM's creation and its status write.
type gatedProvider struct {
	provider.Provider
	launched chan string
	release  chan struct{}
}

func (g *gatedProvider) Launch(ctx context.Context, req provider.LaunchRequest) (provider.VM, error) {
	vm, err := g.Provider.Launch(ctx, req)
	if err == nil {
		g.launched <- vm.ID
		<-g.release
	}
	return vm, err
}

func TestDeleteDuringALaunchTerminatesTheNewVM(t *testing.T) {
	testenv.RequireDocker(t)
	image := testenv.RequireDemoImage(t)
	store, err := state.OpenBolt(testenv.ShortTempDir(t), state.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	lp, err := local.New(store.ClusterID())
	if err != nil {
		t.Fatal(err)
	}
	defer lp.Close()
	t.Cleanup(func() { removeAll(lp) })
	gate := &gatedProvider{Provider: lp, launched: make(chan string, 1), release: make(chan struct{})}
	applyDeployment(t, store, "racy", image)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := controller.New(controller.Options{Store: store, Providers: fixedProviders{gate}, Log: logr.Discard(), Resync: time.Hour})
	go c.Run(ctx)
	select {
	case <-gate.launched:
	case <-time.After(30 * time.Second):
		t.Fatal("no launch")
	}
	if _, err := store.Delete(ctx, manifests.KindDeployment, "racy", state.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	close(gate.release)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := store.Get(ctx, manifests.KindDeployment, "racy")
		if errors.Is(err, state.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the deployment was not deleted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	vms, err := lp.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, vm := range vms {
		if vm.State.Alive() {
			t.Errorf("VM %s outlived its deleted deployment", vm.ID)
		}
	}
}
