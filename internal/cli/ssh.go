package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/spf13/cobra"
)

// SSHOptions are the options of `anycloud ssh`.
type SSHOptions struct {
	f       *Factory
	Name    string
	Command []string
}

// NewCmdSSH builds `anycloud ssh`.
func NewCmdSSH(f *Factory, runF func(*SSHOptions) error) *cobra.Command {
	o := &SSHOptions{f: f}
	cmd := &cobra.Command{
		Use:   "ssh NAME [-- CMD...]",
		Short: "Open a shell (or run a command) on a deployment's VM",
		Long: `Connect to the deployment's current VM with OpenSSH, using the deployment's
own key (kept in $ANYCLOUD_HOME/.ssh) and its pinned host key: a VM that
presents another host key is refused. Needs the ssh client.`,
		Example: `  anycloud ssh train
  anycloud ssh train -- sudo docker ps`,
		Args: minArgs(1, "NAME [-- CMD...]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				if dash != 1 {
					return usageErrorf("ssh: want NAME before --")
				}
				o.Command = args[1:]
			} else if len(args) > 1 {
				return usageErrorf("ssh: put the command after --: anycloud ssh NAME -- CMD...")
			}
			if runF != nil {
				return runF(o)
			}
			return o.Run(cmd.Context())
		},
	}
	return cmd
}

// Run execs ssh with the pinned host key.
func (o *SSHOptions) Run(ctx context.Context) error {
	c, err := o.f.Client(ctx)
	if err != nil {
		return err
	}
	info, err := c.SSHInfo(ctx, o.Name)
	if err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(info.Addr)
	if err != nil {
		return fmt.Errorf("VM address %q: %w", info.Addr, err)
	}
	dir, err := os.MkdirTemp("", "anycloud-ssh")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	known := filepath.Join(dir, "known_hosts")
	hostPattern := host
	if port != "22" {
		hostPattern = "[" + host + "]:" + port
	}
	if err := os.WriteFile(known, []byte(hostPattern+" "+info.HostKey+"\n"), 0o600); err != nil {
		return err
	}
	args := []string{
		"-i", info.KeyPath, "-p", port,
		"-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + known,
		"-o", "GlobalKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		// A VM that cannot be reached is reported as such, not waited on.
		"-o", "ConnectTimeout=15",
		info.User + "@" + host,
	}
	args = append(args, o.Command...)
	cmd := exec.CommandContext(ctx, "ssh", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = o.f.IO.In, o.f.IO.Out, o.f.IO.ErrOut
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return &ExitError{Code: ee.ExitCode()}
	}
	return err
}
