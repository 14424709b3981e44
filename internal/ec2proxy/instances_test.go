package ec2proxy_test

import (
	"context"
	"encoding/base64"
	"net"
	"sync"
	"testing"

	"github.com/anycloud/anycloud/internal/ec2proxy"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// fakeVMs stands for a VM emulator: addresses and consoles by instance.
type fakeVMs struct {
	mu      sync.Mutex
	addrs   map[string]string
	console map[string][]byte
}

func (f *fakeVMs) Address(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addrs[id]
}

func (f *fakeVMs) ConsoleOutput(id string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.console[id]
	return b, ok
}

// addresses is every address and DNS name an instance shows.
func addresses(inst types.Instance) []string {
	var out []string
	add := func(p *string) {
		if p != nil && *p != "" {
			out = append(out, *p)
		}
	}
	add(inst.PublicIpAddress)
	add(inst.PrivateIpAddress)
	add(inst.PublicDnsName)
	add(inst.PrivateDnsName)
	for _, ni := range inst.NetworkInterfaces {
		add(ni.PrivateIpAddress)
		add(ni.PrivateDnsName)
		if ni.Association != nil {
			add(ni.Association.PublicIp)
			add(ni.Association.PublicDnsName)
		}
		for _, pa := range ni.PrivateIpAddresses {
			add(pa.PrivateIpAddress)
			if pa.Association != nil {
				add(pa.Association.PublicIp)
			}
		}
	}
	return out
}

func TestEmulatedInstancesShowOnlyTheirLoopbackAddress(t *testing.T) {
	e := newEnv(t)
	vms := &fakeVMs{addrs: map[string]string{}, console: map[string][]byte{}}
	e.proxy.EmulateInstances(vms)
	ctx := context.Background()

	run, err := e.client.RunInstances(ctx, e.runInput(""))
	if err != nil {
		t.Fatal(err)
	}
	id := launchedID(t, run)
	// Before the emulator has a VM for it, no address at all: moto's are
	// invented, and nothing may dial them.
	if got := addresses(run.Instances[0]); len(got) != 0 {
		t.Errorf("RunInstances answer shows addresses %v before the VM has one", got)
	}
	if direct := addresses(e.instances(t)[0]); len(direct) == 0 {
		t.Fatal("moto itself shows no address: the test proves nothing")
	}

	vms.mu.Lock()
	vms.addrs[id] = "127.77.0.5"
	vms.mu.Unlock()
	out, err := e.client.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	inst := out.Reservations[0].Instances[0]
	for _, a := range addresses(inst) {
		if a != "127.77.0.5" {
			t.Errorf("DescribeInstances shows %q; only the VM's loopback address may show", a)
		}
		if ip := net.ParseIP(a); ip == nil || !ip.IsLoopback() {
			t.Errorf("%q is not a loopback address", a)
		}
	}
	if aws.ToString(inst.PublicIpAddress) != "127.77.0.5" || aws.ToString(inst.InstanceId) != id || inst.State == nil {
		t.Errorf("instance after rewriting: id %s, public IP %s, state %v", aws.ToString(inst.InstanceId), aws.ToString(inst.PublicIpAddress), inst.State)
	}

	e.proxy.EmulateInstances(nil)
	out, err = e.client.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(out.Reservations[0].Instances[0].PublicIpAddress) == "127.77.0.5" {
		t.Error("addresses still rewritten after EmulateInstances(nil)")
	}
}

func TestEmulatedInstancesServeTheirConsole(t *testing.T) {
	e := newEnv(t)
	vms := &fakeVMs{addrs: map[string]string{}, console: map[string][]byte{"i-0123456789abcdef0": []byte("cloud-init: booted\n")}}
	e.proxy.EmulateInstances(vms)
	out, err := e.client.GetConsoleOutput(context.Background(), &ec2.GetConsoleOutputInput{InstanceId: aws.String("i-0123456789abcdef0"), Latest: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	got, err := base64.StdEncoding.DecodeString(aws.ToString(out.Output))
	if err != nil || string(got) != "cloud-init: booted\n" || aws.ToString(out.InstanceId) != "i-0123456789abcdef0" {
		t.Errorf("console = %q (%v), instance %s", got, err, aws.ToString(out.InstanceId))
	}
	if e.proxy.Forwarded("GetConsoleOutput") != 0 {
		t.Error("an emulated VM's console was asked of the target")
	}
}

func TestFailWhereHitsOnlyTheMatchingRequests(t *testing.T) {
	e := newEnv(t)
	e.proxy.FailWhere("RunInstances", "InstanceType", "m5.large", ec2proxy.ErrorCode("InsufficientInstanceCapacity"))
	in := e.runInput("")
	in.InstanceType = types.InstanceTypeM5Large
	_, err := e.client.RunInstances(context.Background(), in)
	if code := apiCode(err); code != "InsufficientInstanceCapacity" {
		t.Errorf("m5.large: %v, want InsufficientInstanceCapacity", err)
	}
	in = e.runInput("")
	in.InstanceType = types.InstanceTypeT3Micro
	if _, err := e.client.RunInstances(context.Background(), in); err != nil {
		t.Errorf("t3.micro: %v", err)
	}
	if e.proxy.Forwarded("RunInstances") != 1 {
		t.Errorf("forwarded %d RunInstances, want only the t3.micro one", e.proxy.Forwarded("RunInstances"))
	}
}
