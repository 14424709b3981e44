package aws

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"golang.org/x/crypto/ssh"

	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/provider/aws/bootstrap"
)

// SSH configures how the provider reaches its VMs: each deployment's own
// key pair and pinned host key live in Home/.ssh (package bootstrap).
type SSH struct {
	// Home is the control plane's home directory.
	Home string
	// User is the login user of the image (default ec2-user).
	User string
	// Port is sshd's port (default 22).
	Port int
	// Address, when set, replaces a VM's address as the place to dial:
	// tests point it at a local sshd.
	Address func(vm provider.VM) string
	// EnvFile is where the resolved env is written on the VM (default
	// /run/anycloud-secrets.env, a tmpfs).
	EnvFile string
	// LoopbackOnly refuses to dial a VM whose address is not a loopback
	// address. It is set when the EC2 endpoint is an emulator on this
	// machine (moto): the addresses such an emulator reports are invented
	// and belong to strangers, unless a VM emulator maps each instance to
	// a loopback address of its own.
	LoopbackOnly bool
}

func (s SSH) user() string {
	if s.User == "" {
		return "ec2-user"
	}
	return s.User
}

func (s SSH) addr(vm provider.VM) (string, error) {
	if s.Address != nil {
		return s.Address(vm), nil
	}
	if vm.Address == "" {
		return "", fmt.Errorf("VM %s has no address yet: %w", vm.ID, provider.ErrUnavailable)
	}
	if s.LoopbackOnly {
		if ip := net.ParseIP(vm.Address); ip == nil || !ip.IsLoopback() {
			return "", fmt.Errorf("VM %s has address %s, but the EC2 endpoint is an emulator on this machine, whose addresses are made up: "+
				"refusing to dial it (run the VM emulator, which gives each VM a loopback address: make emulator): %w", vm.ID, vm.Address, provider.ErrUnavailable)
		}
	}
	port := s.Port
	if port == 0 {
		port = 22
	}
	return net.JoinHostPort(vm.Address, strconv.Itoa(port)), nil
}

// UserData renders a launch's user-data: the deployment's authorized key
// and docker. No env, no private key.
func (s SSH) UserData(req provider.LaunchRequest) ([]byte, error) {
	keys, err := bootstrap.EnsureKeys(s.Home, req.UID)
	if err != nil {
		return nil, err
	}
	return bootstrap.UserData(keys, s.user())
}

// workloadName is the workload container's name on the VM.
func workloadName(deployment string) string { return "anycloud-" + deployment }

// dial connects to vm with the deployment's key, refusing any host key
// but the one pinned for vm.
func (p *Provider) dial(ctx context.Context, vm provider.VM) (*ssh.Client, error) {
	if p.ssh.Home == "" {
		return nil, fmt.Errorf("no SSH settings: %w", provider.ErrInvalid)
	}
	keys, err := bootstrap.EnsureKeys(p.ssh.Home, vm.UID)
	if err != nil {
		return nil, err
	}
	addr, err := p.ssh.addr(vm)
	if err != nil {
		return nil, err
	}
	hostKey, err := p.hostKey(ctx, vm, keys)
	if err != nil {
		return nil, err
	}
	c, err := bootstrap.Dial(ctx, bootstrap.Target{Addr: addr, User: p.ssh.user(), Signer: keys.Signer, HostKey: hostKey})
	if errors.Is(err, bootstrap.ErrHostKeyMismatch) {
		return nil, err // not a VM still booting: someone else answers there
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", provider.ErrUnavailable, err)
	}
	return c, nil
}

// hostKey returns the host key pinned for vm, pinning it first from the
// VM's console output: EC2 returns it to our credentials over TLS, so the
// key is the VM's own before any byte goes to the VM. Until cloud-init
// has printed it, the VM is still booting (ErrUnavailable).
func (p *Provider) hostKey(ctx context.Context, vm provider.VM, keys *bootstrap.Keys) (ssh.PublicKey, error) {
	if k, err := keys.PinnedHostKey(vm.ID); err != nil || k != nil {
		return k, err
	}
	out, err := p.consoleOutput(ctx, vm.ID)
	if err != nil {
		return nil, err
	}
	found, err := bootstrap.HostKeysFromConsole(out)
	if errors.Is(err, bootstrap.ErrNoHostKeys) {
		return nil, fmt.Errorf("VM %s is booting: its console shows no SSH host key yet: %w", vm.ID, provider.ErrUnavailable)
	}
	if err != nil {
		return nil, err
	}
	return keys.PinHostKey(vm.ID, bootstrap.PreferredHostKey(found))
}

// consoleOutput is the VM's console as it is now (Latest), or as EC2 last
// buffered it on instance types that cannot give the latest.
func (p *Provider) consoleOutput(ctx context.Context, id string) ([]byte, error) {
	get := func(latest bool) (*ec2.GetConsoleOutputOutput, error) {
		var out *ec2.GetConsoleOutputOutput
		err := p.call(ctx, p.limits.describe, "GetConsoleOutput", func(ctx context.Context) error {
			in := &ec2.GetConsoleOutputInput{InstanceId: sdkaws.String(id)}
			if latest {
				in.Latest = sdkaws.Bool(true)
			}
			var err error
			out, err = p.ec2.GetConsoleOutput(ctx, in)
			return err
		})
		return out, err
	}
	out, err := get(true)
	if errors.Is(err, provider.ErrInvalid) && strings.Contains(err.Error(), "Unsupported") {
		out, err = get(false)
	}
	if err != nil {
		return nil, fmt.Errorf("console output of VM %s: %w", id, err)
	}
	if out.Output == nil {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(*out.Output)
	if err != nil {
		return nil, fmt.Errorf("console output of VM %s: %w", id, err)
	}
	return b, nil
}

// Bootstrap implements provider.Bootstrapper: over SSH, write the resolved
// env to the VM's env file (0600, root) and (re)start the workload with
// docker run --env-file.
func (p *Provider) Bootstrap(ctx context.Context, vm provider.VM, req provider.LaunchRequest) error {
	// A type's GPUs decide the docker arguments (cached since Launch).
	gpu, err := p.hasGPUs(ctx, vmType(req))
	if err != nil {
		return err
	}
	c, err := p.dial(ctx, vm)
	if err != nil {
		return err
	}
	defer c.Close()
	w := bootstrap.Workload{
		Name: workloadName(req.Deployment), Image: req.Image, Command: req.Command, Env: req.Env, EnvFile: p.ssh.EnvFile, GPUs: gpu,
	}
	if g := req.GitHub; g != nil {
		w.GitHub = &bootstrap.GitHub{Token: g.Token, User: g.User, Registries: g.Registries, GitURL: g.GitURL}
	}
	if s := req.Source; s != nil {
		w.Source = &bootstrap.Source{Git: s.Git, Commit: s.Commit, Path: s.Path}
	}
	w.Buckets = p.vmBuckets(req.Buckets)
	err = bootstrap.Run(ctx, c, w)
	if errors.Is(err, bootstrap.ErrInvalidEnv) {
		return fmt.Errorf("%w: %v", provider.ErrInvalid, err)
	}
	return err
}

// vmBuckets are the buckets as the VM's rclone needs them: this
// account's with its region and endpoint (and the instance role), another
// account's with its minted session.
func (p *Provider) vmBuckets(buckets []provider.Bucket) []bootstrap.Bucket {
	var out []bootstrap.Bucket
	for _, b := range buckets {
		vb := bootstrap.Bucket{
			Bucket: b.Bucket, Prefix: b.Prefix, Path: b.Path, ReadWrite: b.ReadWrite, Interval: b.Interval,
			Region: p.region, Endpoint: p.s3Endpoint,
		}
		if s := b.Session; s != nil {
			vb.Region, vb.Endpoint = s.Region, s.Endpoint
			vb.Session = &bootstrap.Session{AccessKeyID: s.AccessKeyID, SecretAccessKey: s.SecretAccessKey, SessionToken: s.SessionToken}
		}
		out = append(out, vb)
	}
	return out
}

// FlushBuckets implements provider.BucketSyncer: over SSH, the VM copies
// its read-write buckets back now.
func (p *Provider) FlushBuckets(ctx context.Context, vm provider.VM, buckets []provider.Bucket) error {
	if !slices.ContainsFunc(buckets, func(b provider.Bucket) bool { return b.ReadWrite }) {
		return nil
	}
	c, err := p.dial(ctx, vm)
	if err != nil {
		return err
	}
	defer c.Close()
	return bootstrap.FlushBuckets(ctx, c, workloadName(vm.Deployment))
}

// BucketStatus implements provider.BucketSyncer: each bucket's last sync,
// as the VM recorded it.
func (p *Provider) BucketStatus(ctx context.Context, vm provider.VM, buckets []provider.Bucket) ([]provider.BucketSync, error) {
	c, err := p.dial(ctx, vm)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	res, err := bootstrap.SyncStatus(ctx, c, workloadName(vm.Deployment))
	if err != nil {
		return nil, err
	}
	var out []provider.BucketSync
	for _, r := range res {
		if r.Index < 0 || r.Index >= len(buckets) {
			continue
		}
		out = append(out, provider.BucketSync{Path: buckets[r.Index].Path, At: r.At, OK: r.OK, Message: r.Message})
	}
	return out, nil
}

// Logs implements provider.Logger: docker logs of the workload, over SSH.
func (p *Provider) Logs(ctx context.Context, vm provider.VM, follow bool, w io.Writer) error {
	c, err := p.dial(ctx, vm)
	if err != nil {
		return err
	}
	defer c.Close()
	return bootstrap.Logs(ctx, c, workloadName(vm.Deployment), follow, w)
}

// SSHInfo implements provider.SSHAccess.
func (p *Provider) SSHInfo(ctx context.Context, vm provider.VM) (provider.SSHInfo, error) {
	keys, err := bootstrap.EnsureKeys(p.ssh.Home, vm.UID)
	if err != nil {
		return provider.SSHInfo{}, err
	}
	addr, err := p.ssh.addr(vm)
	if err != nil {
		return provider.SSHInfo{}, err
	}
	hostKey, err := p.hostKey(ctx, vm, keys)
	if err != nil {
		return provider.SSHInfo{}, err
	}
	return provider.SSHInfo{Addr: addr, User: p.ssh.user(), KeyPath: keys.Path, HostKey: bootstrap.AuthorizedLine(hostKey)}, nil
}

// Release implements provider.Releaser: the deployment's managed IAM
// role and instance profile, if any, and its keys go with it.
// The keys go even when IAM cannot be asked (credentials without IAM
// permissions, for deployments that never had a role).
func (p *Provider) Release(ctx context.Context, uid string) error {
	err := p.removeRole(ctx, uid)
	if p.ssh.Home != "" {
		err = errors.Join(err, bootstrap.RemoveKeys(p.ssh.Home, uid))
	}
	return err
}

var (
	_ provider.Keeper       = (*Provider)(nil)
	_ provider.BucketSyncer = (*Provider)(nil)
	_ provider.Bootstrapper = (*Provider)(nil)
	_ provider.Logger       = (*Provider)(nil)
	_ provider.SSHAccess    = (*Provider)(nil)
)
