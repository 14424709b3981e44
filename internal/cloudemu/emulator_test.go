package cloudemu_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/moby/moby/client"
	"golang.org/x/crypto/ssh"

	"github.com/anycloud/anycloud/internal/cloudemu"
	"github.com/anycloud/anycloud/internal/testenv"
	awsprovider "github.com/anycloud/anycloud/provider/aws"
	"github.com/anycloud/anycloud/provider/aws/bootstrap"
)

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (last: %s)", what, d, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ec2Client(t *testing.T, endpoint string) *ec2.Client {
	t.Helper()
	c, _, err := awsprovider.NewClient(context.Background(), awsprovider.ClientConfig{
		Region: "us-east-1", AccessKeyID: "testing", SecretAccessKey: "testing", EndpointURL: endpoint,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// launch runs one instance whose user-data is anycloud's for keys.
func launch(t *testing.T, c *ec2.Client, keys *bootstrap.Keys) string {
	t.Helper()
	ud, err := bootstrap.UserData(keys, "ec2-user")
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.RunInstances(context.Background(), &ec2.RunInstancesInput{
		ImageId: sdkaws.String("ami-12c6146b"), InstanceType: types.InstanceTypeT3Micro, MinCount: sdkaws.Int32(1), MaxCount: sdkaws.Int32(1),
		UserData: sdkaws.String(base64.StdEncoding.EncodeToString(ud)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return sdkaws.ToString(out.Instances[0].InstanceId)
}

func describe(t *testing.T, c *ec2.Client, id string) types.Instance {
	t.Helper()
	out, err := c.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	return out.Reservations[0].Instances[0]
}

// run runs cmd on the VM and returns its output.
func run(t *testing.T, c *ssh.Client, cmd string) string {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestAnInstanceBootsARealVMThatDiesWithIt(t *testing.T) {
	e := testenv.StartCloud(t, testenv.CloudOptions{})
	demo := testenv.RequireDemoImage(t)
	docker := testenv.RequireDocker(t)
	c := ec2Client(t, e.Endpoint)
	outside := ec2Client(t, e.Moto)
	keys, err := bootstrap.EnsureKeys(t.TempDir(), "uid-emu")
	if err != nil {
		t.Fatal(err)
	}
	id := launch(t, c, keys)

	// Real cloud-init makes the VM's own host key and prints it on the
	// console, which the proxy serves as GetConsoleOutput.
	var hostKey ssh.PublicKey
	eventually(t, "host key on the console", 2*time.Minute, func() (bool, string) {
		out, err := c.GetConsoleOutput(context.Background(), &ec2.GetConsoleOutputInput{InstanceId: sdkaws.String(id), Latest: sdkaws.Bool(true)})
		if err != nil {
			return false, err.Error()
		}
		console, _ := base64.StdEncoding.DecodeString(sdkaws.ToString(out.Output))
		found, err := bootstrap.HostKeysFromConsole(console)
		if err != nil {
			return false, string(cloudemu.Tail(console, 3))
		}
		hostKey = bootstrap.PreferredHostKey(found)
		return true, ""
	})
	// The instance's address is the VM's own loopback address; the one
	// moto invented is never shown.
	addr := sdkaws.ToString(describe(t, c, id).PublicIpAddress)
	if ip := net.ParseIP(addr); ip == nil || !ip.IsLoopback() {
		t.Fatalf("instance address %q is not loopback", addr)
	}
	if invented := sdkaws.ToString(describe(t, outside, id).PublicIpAddress); invented == addr {
		t.Fatalf("moto's own address %s is the emulator's", invented)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var vm *ssh.Client
	eventually(t, "SSH with the pinned key", time.Minute, func() (bool, string) {
		vm, err = bootstrap.Dial(ctx, bootstrap.Target{Addr: net.JoinHostPort(addr, "22"), User: "ec2-user", Signer: keys.Signer, HostKey: hostKey})
		return err == nil, errString(err)
	})
	defer vm.Close()
	if got := run(t, vm, "cloud-init status --wait"); !strings.Contains(got, "status: done") {
		t.Errorf("cloud-init status: %q", got)
	}
	if got := run(t, vm, "stat -f -c %T /run"); got != "tmpfs" {
		t.Errorf("/run is %q, want tmpfs", got)
	}
	if got := run(t, vm, "cat /var/lib/cloud/data/instance-id"); got != id {
		t.Errorf("instance-id %q, want %s", got, id)
	}
	// The VM's docker starts a sibling on this engine, labelled with the
	// instance.
	workload := "emu-workload-" + id
	run(t, vm, "sudo -n docker run -d --name "+workload+" "+demo)
	if n := containersOf(t, docker, id); n != 2 {
		t.Errorf("%d containers labelled with %s, want the VM and its workload", n, id)
	}

	// Terminated in moto: the VM and its workload go.
	if _, err := outside.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	// The emulator forgets the VM (its address) once its containers are
	// removed: wait for both.
	eventually(t, "VM and workload removed, address forgotten", time.Minute, func() (bool, string) {
		n, addr := containersOf(t, docker, id), e.VMs.Address(id)
		return n == 0 && addr == "", fmt.Sprintf("%d containers, address %q", n, addr)
	})

	// A VM container killed from outside is a preemption moto sees.
	other := launch(t, c, keys)
	eventually(t, "second VM up", time.Minute, func() (bool, string) { return e.VMs.Container(other) != "", "" })
	if _, err := docker.ContainerKill(context.Background(), e.VMs.Container(other), client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "killed VM's instance terminated", time.Minute, func() (bool, string) {
		st := describe(t, outside, other).State.Name
		return st == types.InstanceStateNameTerminated || st == types.InstanceStateNameShuttingDown, string(st)
	})
}

func containersOf(t *testing.T, docker *client.Client, id string) int {
	t.Helper()
	res, err := docker.ContainerList(context.Background(), client.ContainerListOptions{
		All: true, Filters: make(client.Filters).Add("label", cloudemu.LabelInstance+"="+id),
	})
	if err != nil {
		t.Fatal(err)
	}
	return len(res.Items)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
