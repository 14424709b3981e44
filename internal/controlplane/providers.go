package controlplane

import (
	"context"
	"fmt"
	"sync"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/provider/local"
)

// providers hands out providers by credentials. The local Docker engine is
// one provider shared by every credentials object of provider local.
type providers struct {
	cluster string

	mu    sync.Mutex
	local *local.Provider
}

func (p *providers) For(ctx context.Context, creds *manifests.Credentials, secrets map[string]string, region string) (provider.Provider, error) {
	switch creds.Spec.Provider {
	case manifests.ProviderLocal:
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.local == nil {
			lp, err := local.New(p.cluster)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", provider.ErrUnavailable, err)
			}
			p.local = lp
		}
		return p.local, nil
	}
	return nil, fmt.Errorf("credentials %q: provider %q: %w: this build has no %s provider", creds.Metadata.Name, creds.Spec.Provider, provider.ErrUnavailable, creds.Spec.Provider)
}

func (p *providers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.local != nil {
		p.local.Close()
	}
}
