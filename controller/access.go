package controller

import (
	"context"
	"fmt"
	"io"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/state"
)

// Logs streams the workload log of a deployment's current VM.
func (c *Controller) Logs(ctx context.Context, name string, follow bool, w io.Writer) error {
	obj, err := c.store.Get(ctx, manifests.KindDeployment, name)
	if err != nil {
		return err
	}
	d := obj.(*manifests.Deployment)
	if d.Status.VM == nil {
		return fmt.Errorf("deployment %s has no VM yet (phase %s): %w", name, d.Status.Phase, state.ErrNotFound)
	}
	prov, err := c.providerFor(ctx, d)
	if err != nil {
		return err
	}
	lg, ok := prov.(provider.Logger)
	if !ok {
		return fmt.Errorf("provider %s cannot stream logs", prov.Key())
	}
	vm := provider.VM{ID: d.Status.VM.ID, Address: d.Status.VM.Address, Deployment: name, UID: d.Metadata.UID, Attempt: d.Status.VM.Attempt}
	return lg.Logs(ctx, vm, follow, w)
}

// SSHInfo says how to reach a deployment's current VM over SSH.
func (c *Controller) SSHInfo(ctx context.Context, name string) (provider.SSHInfo, error) {
	obj, err := c.store.Get(ctx, manifests.KindDeployment, name)
	if err != nil {
		return provider.SSHInfo{}, err
	}
	d := obj.(*manifests.Deployment)
	if d.Status.VM == nil {
		return provider.SSHInfo{}, fmt.Errorf("deployment %s has no VM yet (phase %s): %w", name, d.Status.Phase, state.ErrNotFound)
	}
	prov, err := c.providerFor(ctx, d)
	if err != nil {
		return provider.SSHInfo{}, err
	}
	sa, ok := prov.(provider.SSHAccess)
	if !ok {
		return provider.SSHInfo{}, fmt.Errorf("deployment %s runs on provider %s, which has no SSH (for local containers use docker exec): %w", name, prov.Key(), state.ErrInvalid)
	}
	vm := provider.VM{ID: d.Status.VM.ID, Address: d.Status.VM.Address, Deployment: name, UID: d.Metadata.UID, Attempt: d.Status.VM.Attempt}
	return sa.SSHInfo(ctx, vm)
}
