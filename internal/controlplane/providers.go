package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	awsprovider "github.com/anycloud/anycloud/provider/aws"
	"github.com/anycloud/anycloud/provider/local"
)

// providers hands out providers by credentials. The local Docker engine is
// one provider shared by every credentials object of provider local; an
// AWS provider is kept per (credentials name, region), so that its image
// cache lasts, and made anew when the credentials change — with the old
// one's request buckets, which belong to the account, not to a version of
// the credentials. Providers of credentials that are gone are dropped
// (Retain).
type providers struct {
	cluster string
	home    string
	// tuneAWS adjusts each AWS provider's options (tests shorten retries).
	tuneAWS func(*awsprovider.Options)
	// requests counts the providers' cloud requests (/metrics).
	requests *prometheus.CounterVec

	mu    sync.Mutex
	local *local.Provider
	aws   map[string]awsEntry // by credentials name and region
}

type awsEntry struct {
	// version is what the provider was made from: the credentials' spec
	// and secret values, hashed (never kept in the clear).
	version [32]byte
	prov    *awsprovider.Provider
}

// version hashes what an AWS provider is made from.
func version(creds *manifests.Credentials, secrets map[string]string, region string) [32]byte {
	h := sha256.New()
	spec, _ := json.Marshal(creds.Spec)
	h.Write(spec)
	for _, k := range slices.Sorted(maps.Keys(secrets)) {
		fmt.Fprintf(h, "\x00%s\x00%s", k, secrets[k])
	}
	fmt.Fprintf(h, "\x00region=%s", region)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// Retain drops the providers of credentials not in names: the controller
// calls it at each resync with the credentials that exist.
func (p *providers) Retain(names map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for key := range p.aws {
		name, _, _ := strings.Cut(key, "/")
		if !names[name] {
			delete(p.aws, key)
		}
	}
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
		cacheKey := creds.Metadata.Name + "/" + region
		v := version(creds, secrets, region)
		old, ok := p.aws[cacheKey]
		if ok && old.version == v {
			return old.prov, nil
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
		opts.Requests = p.requests
		opts.IAM, opts.STS, opts.S3Endpoint = clients.IAM, clients.STS, a.EndpointURL
		opts.Interruptions = awsprovider.Interruptions{
			Off: a.Interruptions == manifests.InterruptionsOff, Queue: a.InterruptionQueue,
			SQS: clients.SQS, EventBridge: clients.EventBridge,
		}
		if ok {
			opts.Limits = old.prov.Limits()
		}
		if p.tuneAWS != nil {
			p.tuneAWS(&opts)
		}
		ap := awsprovider.New(opts)
		if p.aws == nil {
			p.aws = map[string]awsEntry{}
		}
		p.aws[cacheKey] = awsEntry{version: v, prov: ap}
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
