package controller

import (
	"context"
	"fmt"
	"sync"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
)

// Providers hands out the provider for a deployment's credentials.
type Providers interface {
	// For returns the provider for creds (whose secret fields are in
	// secrets) and the region override, if any.
	For(ctx context.Context, creds *manifests.Credentials, secrets map[string]string, region string) (provider.Provider, error)
}

// Retainer is implemented by Providers that keep providers per
// credentials: at each resync they are told which credentials exist, and
// drop the providers of the others.
type Retainer interface {
	Retain(names map[string]bool)
}

// credentials reads a Credentials object and opens its secret fields,
// once per name: N deployments on the same credentials cost one read and
// one unsealing, not N. The controller keeps one (Controller.creds) and
// starts a new one at every resync and whenever credentials change (their
// watch), so what it holds is never older than the last change seen.
type credentials struct {
	c     *Controller
	mu    sync.Mutex
	cache map[string]credentialsEntry
}

type credentialsEntry struct {
	obj     *manifests.Credentials
	secrets map[string]string
	err     error
}

func (c *Controller) newCredentials() *credentials {
	return &credentials{c: c, cache: map[string]credentialsEntry{}}
}

func (cr *credentials) get(ctx context.Context, name string) (*manifests.Credentials, map[string]string, error) {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	if e, ok := cr.cache[name]; ok {
		return e.obj, e.secrets, e.err
	}
	var e credentialsEntry
	obj, err := cr.c.store.Get(ctx, manifests.KindCredentials, name)
	if err == nil {
		e.obj = obj.(*manifests.Credentials)
		e.secrets, _, err = cr.c.store.OpenSecrets(ctx, manifests.KindCredentials, name)
	}
	if err != nil {
		e = credentialsEntry{err: fmt.Errorf("credentials %q: %w", name, err)}
	}
	cr.cache[name] = e
	return e.obj, e.secrets, e.err
}

// providerFor finds a deployment's credentials and their provider.
func (cr *credentials) providerFor(ctx context.Context, d *manifests.Deployment) (provider.Provider, error) {
	obj, secrets, err := cr.get(ctx, d.Spec.Credentials)
	if err != nil {
		return nil, err
	}
	region := ""
	if d.Spec.AWS != nil {
		region = d.Spec.AWS.Region
	}
	return cr.c.providers.For(ctx, obj, secrets, region)
}

// providerFor is a deployment's provider, from its credentials as last
// seen (the memo of the last resync or credentials change).
func (c *Controller) providerFor(ctx context.Context, d *manifests.Deployment) (provider.Provider, error) {
	return c.currentCredentials().providerFor(ctx, d)
}

// currentCredentials is the controller's credentials memo.
func (c *Controller) currentCredentials() *credentials {
	c.credsMu.Lock()
	defer c.credsMu.Unlock()
	if c.creds == nil {
		c.creds = c.newCredentials()
	}
	return c.creds
}

// forgetCredentials starts a new memo: credentials changed, or a resync
// reads them all afresh.
func (c *Controller) forgetCredentials() *credentials {
	c.credsMu.Lock()
	defer c.credsMu.Unlock()
	c.creds = c.newCredentials()
	return c.creds
}
