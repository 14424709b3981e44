// Package cli is the anycloud command line: one file per verb, each with
// an Options struct, a constructor that takes an optional run function (so
// tests can stop before the run), a pure Validate and a run function. RunE
// returns errors; only main turns them into exit statuses with ExitCode.
package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/internal/controlplane"
)

// Version is set at build time with -ldflags.
var Version = "dev"

// IOStreams are the command's standard streams and environment.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
	// Getenv reads the environment: --from-env, fromEnv and
	// ANYCLOUD_HOME.
	Getenv func(string) string
}

// stdinLine is the first line of in, trimmed: how a secret comes on
// standard input (--secret-access-key-stdin, --token-stdin) rather than
// as a flag. err is the read's failure when no line came (io.EOF for
// empty input).
func stdinLine(in io.Reader) (string, error) {
	if in == nil {
		return "", io.EOF
	}
	line, err := bufio.NewReader(in).ReadString('\n')
	line = strings.TrimSpace(line)
	if line == "" && err != nil {
		return "", err
	}
	return line, nil
}

// SystemIO returns the process's own streams and environment.
func SystemIO() *IOStreams {
	return &IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr, Getenv: os.Getenv}
}

// Factory builds what commands need, lazily: a command that does not talk
// to the control plane never starts one.
type Factory struct {
	IO *IOStreams
	// Home is the --home flag; resolved by HomeDir.
	Home string
	// Executable is the anycloud binary started by `up` and autostart;
	// os.Executable when empty.
	Executable string
	// NoAutostart makes commands fail instead of starting a control plane.
	NoAutostart bool
	// Now is the clock for ages; time.Now when nil.
	Now func() time.Time
	// Server, Token and CAFile (--server, --token, --ca-file) name a
	// remote control plane; Context (--context) one of the config file's.
	Server, Token, CAFile, Context string
}

func (f *Factory) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

// HomeDir resolves the home directory: --home, then ANYCLOUD_HOME, then
// ~/.anycloud.
func (f *Factory) HomeDir() (string, error) {
	if f.Home != "" {
		return filepath.Abs(f.Home)
	}
	if h := f.IO.Getenv("ANYCLOUD_HOME"); h != "" {
		return filepath.Abs(h)
	}
	u, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find home directory: %w (set ANYCLOUD_HOME)", err)
	}
	return filepath.Join(u, ".anycloud"), nil
}

// Client returns a client of a running control plane, starting one in the
// background when none answers.
func (f *Factory) Client(ctx context.Context) (*api.Client, error) {
	home, err := f.HomeDir()
	if err != nil {
		return nil, err
	}
	if rc, ok, err := f.remoteClient(ctx, home); ok || err != nil {
		return rc, err
	}
	c := api.NewClient(filepath.Join(home, api.SocketFile))
	if err := c.Ping(ctx); err == nil {
		return c, nil
	} else if !errors.Is(err, api.ErrUnreachable) {
		return nil, err
	}
	if f.NoAutostart {
		return nil, fmt.Errorf("no control plane is running for %s; start one with `anycloud up`", home)
	}
	if err := f.startBackground(ctx, home); err != nil {
		return nil, err
	}
	return c, nil
}

// startBackground runs `anycloud controller` detached, logging to
// controller.log, and waits until it answers.
func (f *Factory) startBackground(ctx context.Context, home string, args ...string) error {
	exe := f.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("find the anycloud binary: %w", err)
		}
	}
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	logPath := filepath.Join(home, controlplane.LogFile)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open %s: %w", logPath, err)
	}
	defer logf.Close()
	cmd := exec.Command(exe, append([]string{"controller", "--home", home}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Never the CLI's whole environment: a secret exported for this
	// command (HF_TOKEN=… anycloud apply) would stay in the daemon's
	// environ for its lifetime.
	cmd.Env = controlplane.MinimalEnv(os.Environ())
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start control plane: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	c := api.NewClient(filepath.Join(home, api.SocketFile))
	deadline := time.After(20 * time.Second)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("the control plane exited at start (%v); see %s", err, logPath)
		case <-deadline:
			return fmt.Errorf("the control plane did not answer within 20s; see %s", logPath)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if c.Ping(ctx) == nil {
			fmt.Fprintf(f.IO.ErrOut, "started the control plane in the background (log: %s)\n", logPath)
			return nil
		}
	}
}

// ExitError is the one error that carries an exit status: bad usage (2),
// a diff with changes (1), a child's status (`anycloud ssh`). With a nil
// Err the command has already said what there was to say, and main
// prints nothing.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// usage wraps err as bad usage: exit status 2.
func usage(err error) error { return &ExitError{Code: 2, Err: err} }

func usageErrorf(format string, args ...any) error { return usage(fmt.Errorf(format, args...)) }

// Message is what main prints for err: nothing for success or an
// ExitError that has already been reported.
func Message(err error) string {
	var ee *ExitError
	if err == nil || errors.As(err, &ee) && ee.Err == nil {
		return ""
	}
	return err.Error()
}

// ExitCode maps an error to the process exit status: 0 done, 1 failed, 2
// bad usage, 3 refused because of a conflict (409).
func ExitCode(err error) int {
	var ee *ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.Code
	case strings.HasPrefix(err.Error(), "unknown command "):
		return 2
	case api.IsConflict(err):
		return 3
	}
	return 1
}

// NewRootCmd builds the anycloud command tree.
func NewRootCmd(f *Factory) *cobra.Command {
	root := &cobra.Command{
		Use:   "anycloud",
		Short: "Deploy container workloads onto cloud VMs, declaratively",
		Long: `anycloud deploys container workloads onto cloud VMs from your machine, the
way kubectl deploys onto a cluster. Apply Deployment, SecretBundle and
Credentials manifests; a local control plane keeps the cloud matching them.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetIn(f.IO.In)
	root.SetOut(f.IO.Out)
	root.SetErr(f.IO.ErrOut)
	root.PersistentFlags().StringVar(&f.Home, "home", "", "state directory (env ANYCLOUD_HOME, default ~/.anycloud)")
	root.PersistentFlags().StringVar(&f.Server, "server", "", "a remote control plane's URL, https://HOST:PORT (default: the context in $ANYCLOUD_HOME/config, else the local socket)")
	root.PersistentFlags().StringVar(&f.Token, "token", "", "your bearer token for --server (from 'anycloud users add'; or $ANYCLOUD_TOKEN, which ps does not show)")
	root.PersistentFlags().StringVar(&f.CAFile, "ca-file", "", "the CA certificate that signs --server's certificate")
	root.PersistentFlags().StringVar(&f.Context, "context", "", "use this context of $ANYCLOUD_HOME/config ('local' for the socket)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usage(fmt.Errorf("%w\nsee '%s --help'", err, c.CommandPath()))
	})
	root.AddCommand(
		NewCmdApply(f, nil),
		NewCmdDiff(f, nil),
		NewCmdGet(f, nil),
		NewCmdDescribe(f, nil),
		NewCmdStatus(f, nil),
		NewCmdDelete(f, nil),
		NewCmdSecrets(f),
		NewCmdCredentials(f),
		NewCmdSubmit(f, nil),
		NewCmdResubmit(f, nil),
		NewCmdLogs(f, nil),
		NewCmdSSH(f, nil),
		NewCmdController(f, nil),
		NewCmdUp(f, nil),
		NewCmdDown(f, nil),
		NewCmdDashboard(f, nil),
		NewCmdBackup(f, nil),
		NewCmdKeys(f),
		NewCmdLogin(f, nil),
		NewCmdLogout(f, nil),
		NewCmdAuth(f),
		NewCmdUsers(f),
		NewCmdConfig(f),
		NewCmdVersion(f),
	)
	return root
}

// exactArgs is cobra.ExactArgs with a usage error.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s: want %s, got %d argument(s)\nsee '%s --help'", cmd.CommandPath(), what, len(args), cmd.CommandPath())
		}
		return nil
	}
}

func rangeArgs(lo, hi int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || len(args) > hi {
			return usageErrorf("%s: want %s, got %d argument(s)\nsee '%s --help'", cmd.CommandPath(), what, len(args), cmd.CommandPath())
		}
		return nil
	}
}

func minArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usageErrorf("%s: want %s\nsee '%s --help'", cmd.CommandPath(), what, cmd.CommandPath())
		}
		return nil
	}
}

// NewCmdVersion prints the client's version and, when one is running, the
// control plane's.
func NewCmdVersion(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintf(f.IO.Out, "client: %s\n", Version)
			home, err := f.HomeDir()
			if err != nil {
				return err
			}
			c := api.NewClient(filepath.Join(home, api.SocketFile))
			if v, cluster, err := c.Version(cmd.Context()); err == nil {
				fmt.Fprintf(f.IO.Out, "control plane: %s (cluster %s, home %s)\n", v, cluster, home)
			} else {
				fmt.Fprintf(f.IO.Out, "control plane: not running\n")
			}
			return nil
		},
	}
}
