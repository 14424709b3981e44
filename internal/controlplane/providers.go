package controlplane

import (
	"context"
	"fmt"
	"sync"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	awsprovider "github.com/anycloud/anycloud/provider/aws"
	"github.com/anycloud/anycloud/provider/local"
)

// providers hands out providers by credentials. The local Docker engine is
// one provider shared by every credentials object of provider local; an
// AWS provider is made per (credentials, version, region) and kept, so
// that its rate buckets and image cache last.
type providers struct {
	cluster string
	home    string
	// tuneAWS adjusts each AWS provider's options (tests point SSH at a
	// local sshd).
	tuneAWS func(*awsprovider.Options)

	mu    sync.Mutex
	local *local.Provider
	aws   map[string]*awsprovider.Provider
}

func (p *providers) For(ctx context.Context, creds *manifests.Credentials, secrets map[string]string, region string) (provider.Provider, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch creds.Spec.Provider {
	case manifests.ProviderLocal:
		if p.local == nil {
			lp, err := local.New(p.cluster)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", provider.ErrUnavailable, err)
			}
			p.local = lp
		}
		return p.local, nil
	case manifests.ProviderAWS:
		a := creds.Spec.AWS
		if a == nil {
			a = &manifests.AWSCredentials{}
		}
		if region == "" {
			region = a.Region
		}
		cacheKey := creds.Metadata.Name + "/" + creds.Metadata.ResourceVersion + "/" + region
		if ap, ok := p.aws[cacheKey]; ok {
			return ap, nil
		}
		clients, err := awsprovider.NewClients(ctx, awsprovider.ClientConfig{
			Region: region, Profile: a.Profile, AccessKeyID: a.AccessKeyID,
			SecretAccessKey: secrets["secretAccessKey"], EndpointURL: a.EndpointURL,
		})
		if err != nil {
			return nil, fmt.Errorf("credentials %q: %w", creds.Metadata.Name, err)
		}
		opts := awsprovider.Options{
			Client: clients.EC2, SSM: clients.SSM, Key: "aws/" + creds.Metadata.Name + "/" + clients.Region, Region: clients.Region, Cluster: p.cluster,
			SSH: awsprovider.SSH{Home: p.home, LoopbackOnly: awsprovider.IsLoopbackEndpoint(a.EndpointURL)},
		}
		if p.tuneAWS != nil {
			p.tuneAWS(&opts)
		}
		ap := awsprovider.New(opts)
		if p.aws == nil {
			p.aws = map[string]*awsprovider.Provider{}
		}
		p.aws[cacheKey] = ap
		return ap, nil
	}
	return nil, fmt.Errorf("credentials %q: unknown provider %q: %w", creds.Metadata.Name, creds.Spec.Provider, provider.ErrInvalid)
}

func (p *providers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.local != nil {
		p.local.Close()
	}
}
