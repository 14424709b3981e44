package aws

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"

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
	port := s.Port
	if port == 0 {
		port = 22
	}
	return net.JoinHostPort(vm.Address, strconv.Itoa(port)), nil
}

// UserData returns the user-data renderer for Options.UserData: the
// deployment's authorized key and host key, and docker. No env.
func (s SSH) UserData(req provider.LaunchRequest) ([]byte, error) {
	keys, err := bootstrap.EnsureKeys(s.Home, req.UID)
	if err != nil {
		return nil, err
	}
	return bootstrap.UserData(keys, s.user())
}

// workloadName is the workload container's name on the VM.
func workloadName(deployment string) string { return "anycloud-" + deployment }

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
	c, err := bootstrap.Dial(ctx, bootstrap.Target{Addr: addr, User: p.ssh.user(), Signer: keys.Signer, HostKey: keys.HostKey})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", provider.ErrUnavailable, err)
	}
	return c, nil
}

// Bootstrap implements provider.Bootstrapper: over SSH, write the resolved
// env to the VM's env file (0600, root) and (re)start the workload with
// docker run --env-file.
func (p *Provider) Bootstrap(ctx context.Context, vm provider.VM, req provider.LaunchRequest) error {
	c, err := p.dial(ctx, vm)
	if err != nil {
		return err
	}
	defer c.Close()
	err = bootstrap.Run(ctx, c, bootstrap.Workload{
		Name: workloadName(req.Deployment), Image: req.Image, Command: req.Command, Env: req.Env, EnvFile: p.ssh.EnvFile,
	})
	if errors.Is(err, bootstrap.ErrInvalidEnv) {
		return fmt.Errorf("%w: %v", provider.ErrInvalid, err)
	}
	return err
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
	return provider.SSHInfo{Addr: addr, User: p.ssh.user(), KeyPath: keys.Path, HostKey: keys.HostKeyLine}, nil
}

// Release implements provider.Releaser: the deployment's keys go with it.
func (p *Provider) Release(ctx context.Context, uid string) error {
	if p.ssh.Home == "" {
		return nil
	}
	return bootstrap.RemoveKeys(p.ssh.Home, uid)
}

var (
	_ provider.Releaser     = (*Provider)(nil)
	_ provider.Bootstrapper = (*Provider)(nil)
	_ provider.Logger       = (*Provider)(nil)
	_ provider.SSHAccess    = (*Provider)(nil)
)
