package aws_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/anycloud/anycloud/internal/ec2proxy"
	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/provider"
	awsprovider "github.com/anycloud/anycloud/provider/aws"
	"github.com/anycloud/anycloud/provider/aws/bootstrap"
)

// bootstrapUntil retries Bootstrap while the VM boots, as the controller
// does, until it succeeds, fails otherwise, or the deadline passes.
func bootstrapUntil(t *testing.T, p *awsprovider.Provider, vm provider.VM, req provider.LaunchRequest) error {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := p.Bootstrap(ctx, vm, req)
		cancel()
		if err == nil || !errors.Is(err, provider.ErrUnavailable) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// vmAddress is the instance's address as the provider lists it.
func vmAddress(t *testing.T, p *awsprovider.Provider, id string) provider.VM {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		vms, err := p.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, vm := range vms {
			if vm.ID == id && vm.Address != "" {
				return vm
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("VM %s has no address after a minute", id)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestBootstrapPinsTheVMsOwnHostKeyFromItsConsole(t *testing.T) {
	cloud := testenv.StartCloud(t, testenv.CloudOptions{})
	demo := testenv.RequireDemoImage(t)
	home := testenv.ShortTempDir(t)
	r := newRigOn(t, cloud.Proxy, cloud.Moto, awsprovider.SSH{Home: home, LoopbackOnly: true})
	req := launchReq("pin", 1, false)
	req.VMType, req.Image = "t3.micro", demo
	launched, err := r.prov.Launch(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	vm := vmAddress(t, r.prov, launched.ID)
	if err := bootstrapUntil(t, r.prov, vm, req); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", "anycloud-pin").Run() })
	keys, err := bootstrap.EnsureKeys(home, req.UID)
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := keys.PinnedHostKey(vm.ID)
	if err != nil || pinned == nil {
		t.Fatalf("no host key pinned for %s: %v", vm.ID, err)
	}
	// The pin is the key cloud-init made on the VM and printed.
	console, _ := cloud.VMs.ConsoleOutput(vm.ID)
	found, err := bootstrap.HostKeysFromConsole(console)
	if err != nil || string(bootstrap.PreferredHostKey(found).Marshal()) != string(pinned.Marshal()) {
		t.Errorf("pinned key is not the VM's console key (%v)", err)
	}
	info, err := r.prov.SSHInfo(context.Background(), vm)
	if err != nil || info.HostKey != bootstrap.AuthorizedLine(pinned) || info.User != "ec2-user" || !strings.HasSuffix(info.Addr, ":22") {
		t.Errorf("SSHInfo = %+v, %v", info, err)
	}
	if r.proxy.Count("GetConsoleOutput") < 1 {
		t.Error("the host key was not read from the console")
	}
}

func TestBootstrapSendsNothingToAHostWithAnotherKey(t *testing.T) {
	cloud := testenv.StartCloud(t, testenv.CloudOptions{})
	home := testenv.ShortTempDir(t)
	r := newRigOn(t, cloud.Proxy, cloud.Moto, awsprovider.SSH{Home: home, LoopbackOnly: true})
	req := launchReq("mitm", 1, false)
	req.VMType = "t3.micro"
	launched, err := r.prov.Launch(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	vm := vmAddress(t, r.prov, launched.ID)
	// Someone else's key pinned for this VM: the VM's real key is then
	// "another key", and the secrets must not be sent.
	keys, err := bootstrap.EnsureKeys(home, req.UID)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := ssh.NewPublicKey(pub)
	if _, err := keys.PinHostKey(vm.ID, other); err != nil {
		t.Fatal(err)
	}
	err = bootstrapUntil(t, r.prov, vm, req)
	if !errors.Is(err, bootstrap.ErrHostKeyMismatch) {
		t.Fatalf("bootstrap to a VM with another host key: %v, want ErrHostKeyMismatch", err)
	}
	// Nothing reached the VM: no env file.
	ctr := cloud.VMs.Container(vm.ID)
	out, _ := exec.Command("docker", "exec", ctr, "ls", "/run").CombinedOutput()
	if strings.Contains(string(out), "anycloud-secrets.env") {
		t.Errorf("the env file reached a VM whose host key did not match:\n%s", out)
	}
}

func TestAnEmulatorsInventedAddressIsNeverDialled(t *testing.T) {
	moto := testenv.StartMoto(t)
	proxy, err := ec2proxy.New(moto)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	r := newRigOn(t, proxy, moto, awsprovider.SSH{Home: testenv.ShortTempDir(t), LoopbackOnly: awsprovider.IsLoopbackEndpoint(proxy.URL())})
	req := launchReq("plain", 1, false)
	req.VMType = "t3.micro"
	launched, err := r.prov.Launch(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	vm := vmAddress(t, r.prov, launched.ID) // moto's invented public address
	err = r.prov.Bootstrap(context.Background(), vm, req)
	if !errors.Is(err, provider.ErrUnavailable) || !strings.Contains(err.Error(), "refusing to dial") || !strings.Contains(err.Error(), vm.Address) {
		t.Errorf("bootstrap to moto's invented %s: %v", vm.Address, err)
	}
	if r.proxy.Count("GetConsoleOutput") != 0 {
		t.Error("the console was read for a VM that is never dialled")
	}
	for endpoint, want := range map[string]bool{
		"http://127.0.0.1:5000": true, "http://localhost:4566": true, "http://[::1]:5000": true,
		"https://ec2.us-east-1.amazonaws.com": false, "http://10.0.0.5:5000": false, "": false,
	} {
		if got := awsprovider.IsLoopbackEndpoint(endpoint); got != want {
			t.Errorf("IsLoopbackEndpoint(%q) = %v", endpoint, got)
		}
	}
}
