package aws

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/cenkalti/backoff/v4"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
)

// CapacityCooldown is how long a zone that had no capacity for an
// instance type (and market) is skipped: spot capacity comes back in
// minutes, not seconds, and asking again at once only spends RunInstances
// tokens.
const CapacityCooldown = 10 * time.Minute

// subnet is one place a VM can go.
type subnet struct{ id, zone string }

// capacity remembers, per (subnet, instance type, market), when a zone
// ran out of capacity. It is shared by every deployment of the scope.
type capacity struct {
	mu   sync.Mutex
	out  map[string]time.Time
	subs map[string][]subnet // resolved subnets by request key
}

func newCapacity() *capacity {
	return &capacity{out: map[string]time.Time{}, subs: map[string][]subnet{}}
}

func capacityKey(sn, vmType string, spot bool) string {
	return fmt.Sprintf("%s/%s/%v", sn, vmType, spot)
}

// place runs the instance in the first subnet that has capacity: the
// deployment's subnets (spec.aws.subnetIds, subnetId, or the default
// VPC's, one per zone), those out of capacity recently last, spot before
// on-demand when the deployment falls back. Every try carries the
// attempt's ClientToken: EC2 keeps a token only for a launch that
// happened, so a refused try spends nothing, and a repeat of a launch
// that happened returns its instance.
func (p *Provider) place(ctx context.Context, req provider.LaunchRequest, in *ec2.RunInstancesInput) (provider.VM, error) {
	subnets, err := p.subnets(ctx, awsSettings(req))
	if err != nil {
		return provider.VM{}, err
	}
	markets := []bool{req.Spot}
	if req.Spot && req.OnDemandFallback {
		markets = append(markets, false)
	}
	vmType := string(in.InstanceType)
	var tried []string
	allUnsupported := true
	for _, spot := range markets {
		for _, sn := range p.capacity.order(subnets, vmType, spot) {
			try := *in
			if sn.id != "" {
				try.SubnetId = sdkaws.String(sn.id)
			}
			try.InstanceMarketOptions = nil
			if spot {
				try.InstanceMarketOptions = spotOptions
			}
			out, err := p.runInstances(ctx, &try)
			if err == nil {
				if len(out.Instances) != 1 {
					return provider.VM{}, fmt.Errorf("RunInstances returned %d instances, want 1", len(out.Instances))
				}
				vm := p.vm(out.Instances[0])
				vm.Tried = strings.Join(tried, "; ")
				return vm, nil
			}
			code := apiCode(err)
			switch {
			case code == "IdempotentParameterMismatch":
				// This attempt launched before, elsewhere (a control
				// plane that died after a try of another zone succeeded):
				// that instance is the attempt's.
				return p.byAttempt(ctx, req)
			case errors.Is(err, provider.ErrCapacity), code == "Unsupported":
				allUnsupported = allUnsupported && code == "Unsupported"
				p.capacity.ran(sn, vmType, spot)
				tried = append(tried, fmt.Sprintf("%s %s: %s", zoneName(sn), market(spot), code))
			default:
				return provider.VM{}, err
			}
		}
	}
	msg := fmt.Sprintf("no capacity for %s in %s", vmType, strings.Join(tried, "; "))
	if allUnsupported {
		return provider.VM{}, fmt.Errorf("%s: %w", msg, provider.ErrInvalid)
	}
	return provider.VM{}, fmt.Errorf("%s: %w", msg, provider.ErrCapacity)
}

func market(spot bool) string {
	if spot {
		return "spot"
	}
	return "on-demand"
}

func zoneName(sn subnet) string {
	switch {
	case sn.zone != "" && sn.id != "":
		return sn.zone + " (" + sn.id + ")"
	case sn.id != "":
		return sn.id
	}
	return "the default zone"
}

// order is subnets with those out of capacity recently left out; when all
// are, all are tried, in order.
func (c *capacity) order(subnets []subnet, vmType string, spot bool) []subnet {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	var fresh []subnet
	for _, sn := range subnets {
		if until, ok := c.out[capacityKey(sn.id, vmType, spot)]; !ok || now.After(until) {
			fresh = append(fresh, sn)
		}
	}
	if len(fresh) == 0 {
		return subnets
	}
	return fresh
}

// ran records that sn had no capacity now.
func (c *capacity) ran(sn subnet, vmType string, spot bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out[capacityKey(sn.id, vmType, spot)] = time.Now().Add(CapacityCooldown)
}

// subnets are the places to try for a deployment, resolved once per
// provider: the deployment's own, with their zones, or the default VPC's
// default subnet of each zone; with none found, EC2's own choice.
func (p *Provider) subnets(ctx context.Context, a manifests.DeploymentAWS) ([]subnet, error) {
	ids := a.SubnetIDs
	if len(ids) == 0 && a.SubnetID != "" {
		ids = []string{a.SubnetID}
	}
	key := strings.Join(ids, ",")
	p.capacity.mu.Lock()
	subs, ok := p.capacity.subs[key]
	p.capacity.mu.Unlock()
	if ok {
		return subs, nil
	}
	in := &ec2.DescribeSubnetsInput{}
	if len(ids) > 0 {
		in.SubnetIds = ids
	} else {
		in.Filters = []types.Filter{{Name: sdkaws.String("default-for-az"), Values: []string{"true"}}}
	}
	var out *ec2.DescribeSubnetsOutput
	err := p.call(ctx, p.limits.describe, "DescribeSubnets", func(ctx context.Context) error {
		var err error
		out, err = p.ec2.DescribeSubnets(ctx, in)
		return err
	})
	switch {
	case err != nil && len(ids) > 0:
		return nil, fmt.Errorf("subnets %s: %w", key, err)
	case err != nil:
		// No default VPC to ask about: let EC2 choose.
		subs = []subnet{{}}
	default:
		byID := map[string]string{}
		for _, s := range out.Subnets {
			byID[sdkaws.ToString(s.SubnetId)] = sdkaws.ToString(s.AvailabilityZone)
		}
		if len(ids) > 0 {
			for _, id := range ids { // the user's order
				subs = append(subs, subnet{id: id, zone: byID[id]})
			}
		} else {
			for _, s := range out.Subnets {
				subs = append(subs, subnet{id: sdkaws.ToString(s.SubnetId), zone: sdkaws.ToString(s.AvailabilityZone)})
			}
			sortByZone(subs)
		}
		if len(subs) == 0 {
			subs = []subnet{{}}
		}
	}
	p.capacity.mu.Lock()
	p.capacity.subs[key] = subs
	p.capacity.mu.Unlock()
	return subs, nil
}

// sortByZone orders the default subnets by zone name, so that every
// deployment tries the zones in the same order.
func sortByZone(subs []subnet) {
	for i := 1; i < len(subs); i++ {
		for j := i; j > 0 && subs[j].zone < subs[j-1].zone; j-- {
			subs[j], subs[j-1] = subs[j-1], subs[j]
		}
	}
}

// byAttempt finds the instance of req's attempt by its tags.
func (p *Provider) byAttempt(ctx context.Context, req provider.LaunchRequest) (provider.VM, error) {
	in := &ec2.DescribeInstancesInput{Filters: []types.Filter{
		{Name: sdkaws.String("tag:" + TagUID), Values: []string{req.UID}},
		{Name: sdkaws.String("tag:" + TagAttempt), Values: []string{fmt.Sprint(req.Attempt)}},
		{Name: sdkaws.String("tag:" + TagCluster), Values: []string{p.cluster}},
	}}
	var out *ec2.DescribeInstancesOutput
	err := p.call(ctx, p.limits.describe, "DescribeInstances", func(ctx context.Context) error {
		var err error
		out, err = p.ec2.DescribeInstances(ctx, in)
		return err
	})
	if err != nil {
		return provider.VM{}, err
	}
	for _, r := range out.Reservations {
		for _, inst := range r.Instances {
			return p.vm(inst), nil
		}
	}
	return provider.VM{}, fmt.Errorf("attempt %d's token was used, but its instance is gone: %w", req.Attempt, provider.ErrAttemptSpent)
}

// runInstances is one RunInstances, repeated with the same ClientToken
// while EC2 refuses an instance profile that IAM made moments ago (it is
// eventually consistent): the token makes the repeats one launch.
func (p *Provider) runInstances(ctx context.Context, in *ec2.RunInstancesInput) (*ec2.RunInstancesOutput, error) {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = time.Second, 10*time.Second, ProfileWait
	if p.retry.Initial < 200*time.Millisecond { // tests' short retries
		bo.InitialInterval, bo.MaxInterval = p.retry.Initial, p.retry.Max
	}
	for {
		var out *ec2.RunInstancesOutput
		err := p.call(ctx, p.limits.run, "RunInstances", func(ctx context.Context) error {
			var err error
			out, err = p.ec2.RunInstances(ctx, in)
			return err
		})
		if err == nil || in.IamInstanceProfile == nil || !invalidProfile(err) {
			return out, err
		}
		wait := bo.NextBackOff()
		if wait == backoff.Stop {
			return nil, fmt.Errorf("EC2 still does not know instance profile %s after %s (%v): %w", sdkaws.ToString(in.IamInstanceProfile.Arn), ProfileWait, err, provider.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// apiCode is the cloud's error code in err, or "".
func apiCode(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}
