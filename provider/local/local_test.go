package local_test

import (
	"context"
	"errors"
	"testing"

	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/provider/local"
)

func newProvider(t *testing.T, cluster string) *local.Provider {
	t.Helper()
	testenv.RequireDocker(t)
	p, err := local.New(cluster)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vms, _ := p.List(context.Background())
		for _, vm := range vms {
			p.Terminate(context.Background(), vm.ID)
		}
		p.Close()
	})
	return p
}

func TestLaunchIsIdempotentPerTokenAndListSeesOnlyItsCluster(t *testing.T) {
	image := testenv.RequireDemoImage(t)
	ctx := context.Background()
	a := newProvider(t, "cluster-a-"+t.Name()[:8])
	b := newProvider(t, "cluster-b-"+t.Name()[:8])
	req := provider.LaunchRequest{Deployment: "web", UID: "0123456789abcdef", Attempt: 1, Token: provider.Token("0123456789abcdef", 1),
		Image: image, Env: map[string]string{"K": "v"}}
	first, err := a.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := a.Launch(ctx, req)
	if err != nil || again.ID != first.ID {
		t.Fatalf("second launch with the same token: %v %v, want %s", again.ID, err, first.ID)
	}
	if first.State != provider.StateRunning || first.Attempt != 1 || first.UID != req.UID || first.Market != "local" {
		t.Errorf("vm = %+v", first)
	}
	vms, err := a.List(ctx)
	if err != nil || len(vms) != 1 {
		t.Fatalf("cluster a lists %d VMs (%v), want 1", len(vms), err)
	}
	if vms, _ := b.List(ctx); len(vms) != 0 {
		t.Errorf("cluster b sees %d VMs of cluster a", len(vms))
	}
	if err := a.Terminate(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	if err := a.Terminate(ctx, first.ID); err != nil {
		t.Errorf("terminating a gone VM: %v", err)
	}
}

func TestMissingImageIsAnInvalidLaunch(t *testing.T) {
	p := newProvider(t, "cluster-img")
	_, err := p.Launch(context.Background(), provider.LaunchRequest{Deployment: "x", UID: "u", Attempt: 1, Token: "u-1", Image: "no-such-image:nope"})
	if !errors.Is(err, provider.ErrInvalid) {
		t.Errorf("err = %v, want ErrInvalid", err)
	}
}
