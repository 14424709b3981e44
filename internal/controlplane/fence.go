package controlplane

import (
	"context"
	"io"

	"github.com/anycloud/anycloud/controller"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	awsprovider "github.com/anycloud/anycloud/provider/aws"
	"github.com/anycloud/anycloud/provider/local"
)

// fencedProviders hands the leader's controller providers that check,
// before every cloud call, that this control plane still leads (check: a
// linearizable read of the leader key). A leader paused past its lease
// wakes to find its key gone, and calls no cloud: its writes would be
// refused too (state.Etcd.Fenced), but a cloud call cannot be taken back.
//
// Each provider type keeps exactly the optional interfaces it has
// (provider.Bootstrapper, provider.Describer, ...), each guarded. Logs
// and SSHInfo read and are not guarded: followers serve them too.
type fencedProviders struct {
	inner controller.Providers
	check func(context.Context) error
}

func (p fencedProviders) For(ctx context.Context, creds *manifests.Credentials, secrets map[string]string, region string) (provider.Provider, error) {
	if err := p.check(ctx); err != nil {
		return nil, err
	}
	prov, err := p.inner.For(ctx, creds, secrets, region)
	if err != nil {
		return nil, err
	}
	g := guard{check: p.check}
	switch pr := prov.(type) {
	case *local.Provider:
		return &fencedLocal{fenced: fenced{pr, g}, p: pr}, nil
	case *awsprovider.Provider:
		return &fencedAWS{fenced: fenced{pr, g}, p: pr}, nil
	}
	return &fenced{prov, g}, nil
}

// Retain implements controller.Retainer when the providers do.
func (p fencedProviders) Retain(names map[string]bool) {
	if r, ok := p.inner.(controller.Retainer); ok {
		r.Retain(names)
	}
}

type guard struct{ check func(context.Context) error }

// fenced guards the methods of provider.Provider.
type fenced struct {
	inner provider.Provider
	guard
}

func (f *fenced) Key() string { return f.inner.Key() }

func (f *fenced) Launch(ctx context.Context, req provider.LaunchRequest) (provider.VM, error) {
	if err := f.check(ctx); err != nil {
		return provider.VM{}, err
	}
	return f.inner.Launch(ctx, req)
}

func (f *fenced) List(ctx context.Context) ([]provider.VM, error) {
	if err := f.check(ctx); err != nil {
		return nil, err
	}
	return f.inner.List(ctx)
}

func (f *fenced) Terminate(ctx context.Context, id string) error {
	if err := f.check(ctx); err != nil {
		return err
	}
	return f.inner.Terminate(ctx, id)
}

// fencedLocal is the local provider, fenced: it also streams logs and
// hears the engine's events.
type fencedLocal struct {
	fenced
	p *local.Provider
}

func (f *fencedLocal) Logs(ctx context.Context, vm provider.VM, follow bool, w io.Writer) error {
	return f.p.Logs(ctx, vm, follow, w)
}

func (f *fencedLocal) Notify(ctx context.Context, notify func()) error {
	if err := f.check(ctx); err != nil {
		return err
	}
	return f.p.Notify(ctx, notify)
}

// fencedAWS is the AWS provider, fenced, with all it implements.
type fencedAWS struct {
	fenced
	p *awsprovider.Provider
}

func (f *fencedAWS) Describe(ctx context.Context, ids []string) ([]provider.VM, error) {
	if err := f.check(ctx); err != nil {
		return nil, err
	}
	return f.p.Describe(ctx, ids)
}

func (f *fencedAWS) Interruptions(ctx context.Context, handle func(provider.Interruption)) error {
	if err := f.check(ctx); err != nil {
		return err
	}
	return f.p.Interruptions(ctx, handle)
}

func (f *fencedAWS) RemoveInterruptions(ctx context.Context) error {
	if err := f.check(ctx); err != nil {
		return err
	}
	return f.p.RemoveInterruptions(ctx)
}

func (f *fencedAWS) Bootstrap(ctx context.Context, vm provider.VM, req provider.LaunchRequest) error {
	if err := f.check(ctx); err != nil {
		return err
	}
	return f.p.Bootstrap(ctx, vm, req)
}

func (f *fencedAWS) Logs(ctx context.Context, vm provider.VM, follow bool, w io.Writer) error {
	return f.p.Logs(ctx, vm, follow, w)
}

func (f *fencedAWS) SSHInfo(ctx context.Context, vm provider.VM) (provider.SSHInfo, error) {
	return f.p.SSHInfo(ctx, vm)
}

func (f *fencedAWS) Release(ctx context.Context, uid string) error {
	if err := f.check(ctx); err != nil {
		return err
	}
	return f.p.Release(ctx, uid)
}

var (
	_ provider.Logger       = (*fencedLocal)(nil)
	_ provider.Notifier     = (*fencedLocal)(nil)
	_ provider.Describer    = (*fencedAWS)(nil)
	_ provider.Interrupter  = (*fencedAWS)(nil)
	_ provider.Bootstrapper = (*fencedAWS)(nil)
	_ provider.SSHAccess    = (*fencedAWS)(nil)
	_ provider.Releaser     = (*fencedAWS)(nil)
	_ provider.Logger       = (*fencedAWS)(nil)
)
