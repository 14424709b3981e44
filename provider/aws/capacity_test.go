package aws_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/anycloud/anycloud/internal/ec2proxy"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	awsprovider "github.com/anycloud/anycloud/provider/aws"
)

// defaultSubnets are moto's default subnets, by zone name order.
func (r *rig) defaultSubnets(t *testing.T) []types.Subnet {
	t.Helper()
	out, err := r.outside.DescribeSubnets(context.Background(), &ec2.DescribeSubnetsInput{
		Filters: []types.Filter{{Name: sdkaws.String("default-for-az"), Values: []string{"true"}}},
	})
	if err != nil || len(out.Subnets) < 3 {
		t.Fatalf("moto's default subnets: %d, %v", len(out.Subnets), err)
	}
	subs := out.Subnets
	for i := 1; i < len(subs); i++ {
		for j := i; j > 0 && sdkaws.ToString(subs[j].AvailabilityZone) < sdkaws.ToString(subs[j-1].AvailabilityZone); j-- {
			subs[j], subs[j-1] = subs[j-1], subs[j]
		}
	}
	return subs
}

func TestAZoneOutOfCapacityIsSkippedForTheNextAndRemembered(t *testing.T) {
	r := newRig(t)
	subs := r.defaultSubnets(t)
	a, b := sdkaws.ToString(subs[0].SubnetId), sdkaws.ToString(subs[1].SubnetId)
	r.proxy.FailWhere("RunInstances", "SubnetId", a, ec2proxy.ErrorCode("InsufficientInstanceCapacity"))
	req := launchReq("cap", 1, true)
	req.VMType = "t3.micro"
	req.AWS = &manifests.DeploymentAWS{SubnetIDs: []string{a, b}}
	vm, err := r.prov.Launch(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(vm.Tried, sdkaws.ToString(subs[0].AvailabilityZone)) || !strings.Contains(vm.Tried, "InsufficientInstanceCapacity") {
		t.Errorf("Tried = %q, want the zone of %s and why", vm.Tried, a)
	}
	insts := r.instances(t)
	if len(insts) != 1 || sdkaws.ToString(insts[0].SubnetId) != b {
		t.Fatalf("instances %d, in %s; want one in %s", len(insts), sdkaws.ToString(insts[0].SubnetId), b)
	}
	// Another deployment skips the zone that just ran out.
	r.proxy.Reset()
	other := launchReq("cap2", 1, true)
	other.VMType, other.AWS = "t3.micro", req.AWS
	if _, err := r.prov.Launch(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	if got := r.proxy.Count("RunInstances"); got != 1 {
		t.Errorf("RunInstances for the second deployment = %d, want 1 (the full zone skipped)", got)
	}
}

func TestSpotFallsBackToOnDemandOnlyAfterEveryZoneAndOnlyWhenAsked(t *testing.T) {
	r := newRig(t)
	subs := r.defaultSubnets(t)
	r.proxy.FailWhere("RunInstances", "InstanceMarketOptions.MarketType", "spot", ec2proxy.ErrorCode("InsufficientInstanceCapacity"))

	req := launchReq("nofallback", 1, true)
	req.VMType = "t3.micro"
	_, err := r.prov.Launch(context.Background(), req)
	if !errors.Is(err, provider.ErrCapacity) {
		t.Fatalf("spot without fallback and no spot capacity: %v, want ErrCapacity", err)
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), sdkaws.ToString(s.AvailabilityZone)) {
			t.Errorf("the error does not name zone %s: %v", sdkaws.ToString(s.AvailabilityZone), err)
		}
	}
	if n := len(r.instances(t)); n != 0 {
		t.Fatalf("%d instances without capacity", n)
	}

	req = launchReq("fallback", 1, true)
	req.VMType, req.OnDemandFallback = "t3.micro", true
	vm, err := r.prov.Launch(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if vm.Market != "on-demand" || !strings.Contains(vm.Tried, "spot") {
		t.Errorf("fallback: market %s, tried %q", vm.Market, vm.Tried)
	}
	insts := r.instances(t)
	if len(insts) != 1 || insts[0].InstanceLifecycle == types.InstanceLifecycleTypeSpot {
		t.Errorf("instances after the fallback: %d, lifecycle %v", len(insts), insts[0].InstanceLifecycle)
	}
}

// TestARelaunchOfAnAttemptPlacedElsewhereReturnsItsInstance: attempt 1
// landed in the second zone after the first was full; a control plane
// that relaunches it (it died before recording the VM) tries the first
// zone again, now with room, and gets the attempt's instance, not a
// second one.
func TestARelaunchOfAnAttemptPlacedElsewhereReturnsItsInstance(t *testing.T) {
	r := newRig(t)
	subs := r.defaultSubnets(t)
	a, b := sdkaws.ToString(subs[0].SubnetId), sdkaws.ToString(subs[1].SubnetId)
	r.proxy.FailWhere("RunInstances", "SubnetId", a, ec2proxy.ErrorCode("InsufficientInstanceCapacity"))
	req := launchReq("relaunch", 1, false)
	req.VMType = "t3.micro"
	req.AWS = &manifests.DeploymentAWS{SubnetIDs: []string{a, b}}
	first, err := r.prov.Launch(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	r.proxy.ClearFaults()
	// A new provider: the old one's memory of the full zone died with it.
	fresh := newRigOn(t, r.proxy, r.proxy.Target(), awsprovider.SSH{Home: r.home})
	again, err := fresh.prov.Launch(context.Background(), req)
	if err != nil || again.ID != first.ID {
		t.Fatalf("relaunch: %s, %v; want %s", again.ID, err, first.ID)
	}
	if n := len(r.instances(t)); n != 1 {
		t.Errorf("%d instances after the relaunch, want 1", n)
	}
}
