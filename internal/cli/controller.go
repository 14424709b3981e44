package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/internal/controlplane"
)

// ControllerOptions are the options of `anycloud controller`.
type ControllerOptions struct {
	f           *Factory
	Verbosity   int
	Resync      time.Duration
	OrphanGrace time.Duration
	APIOnly     bool
	WatchDir    string
	MetricsAddr string

	Store         string
	EtcdTLS       controlplane.EtcdTLS
	EtcdPrefix    string
	CipherKeyFile string
	LeaderLease   time.Duration
	Name          string

	Listen      string
	TLSCertFile string
	TLSKeyFile  string
}

// NewCmdController builds `anycloud controller`: the control plane in the
// foreground.
func NewCmdController(f *Factory, runF func(*ControllerOptions) error) *cobra.Command {
	o := &ControllerOptions{f: f}
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run the control plane in the foreground",
		Long: `Run the control plane in the foreground: the store, the API on
$ANYCLOUD_HOME/api.sock and the control loop. It stops on SIGINT or SIGTERM.
Other commands start one in the background when none is running (see up).

With --watch-dir DIR it also keeps the store matching DIR, like a GitOps
agent: on every change (and every --resync) it applies the directory
recursively with prune, under the apply set that 'anycloud apply -f DIR
--prune' uses. A directory that does not load applies nothing and is
reported by 'anycloud status'; what runs keeps running until it is fixed.
fromEnv values come from the controller's own environment.

With --store etcd://HOST:PORT[,HOST:PORT...] the state lives in an etcd
cluster that several control planes share (a team control plane). Each
runs with its own home and the same cipher key (--cipher-key-file) and
seal.key; they all serve the API, one leads (an etcd election on a
session lease of --leader-lease) and runs the control loop, and another
takes over when its lease lapses. Every write the leader makes is fenced
on its leadership, and it checks it before every cloud call.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(o)
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().IntVarP(&o.Verbosity, "verbosity", "v", 0, "log verbosity (1 logs every request and routine success)")
	cmd.Flags().DurationVar(&o.Resync, "resync", 30*time.Second, "how often every deployment and VM is looked at")
	cmd.Flags().BoolVar(&o.APIOnly, "api-only", false, "serve the API and store only; launch and terminate nothing")
	cmd.Flags().StringVar(&o.WatchDir, "watch-dir", "", "apply this directory of manifests (recursively, with prune) whenever it changes")
	cmd.Flags().DurationVar(&o.OrphanGrace, "orphan-grace", 2*time.Minute, "how long a managed VM that no deployment owns lives before it is terminated")
	cmd.Flags().StringVar(&o.MetricsAddr, "metrics-addr", "", "also serve /metrics (Prometheus) on this loopback address, such as 127.0.0.1:9464 (the API socket always serves it)")
	cmd.Flags().StringVar(&o.Store, "store", "bolt", "where the state lives: bolt (the home's state.db) or etcd://HOST:PORT[,HOST:PORT...] (shared by several control planes)")
	cmd.Flags().StringVar(&o.EtcdTLS.CAFile, "etcd-ca-file", "", "CA certificate that signs the etcd members' certificates (dials etcd over TLS)")
	cmd.Flags().StringVar(&o.EtcdTLS.CertFile, "etcd-cert-file", "", "client certificate for etcd")
	cmd.Flags().StringVar(&o.EtcdTLS.KeyFile, "etcd-key-file", "", "client certificate's key for etcd")
	cmd.Flags().StringVar(&o.EtcdPrefix, "etcd-prefix", "/anycloud/", "where the store's keys live in etcd")
	cmd.Flags().StringVar(&o.CipherKeyFile, "cipher-key-file", "", "the cipher key that seals secret values (default $ANYCLOUD_HOME/cipher.key); on etcd, give every control plane the same file")
	cmd.Flags().DurationVar(&o.LeaderLease, "leader-lease", controlplane.DefaultLeaderLease, "on etcd: the TTL of this control plane's session; another takes over this long after the leader stops renewing it")
	cmd.Flags().StringVar(&o.Listen, "listen", "", "also serve the API to remote users (bearer tokens from 'anycloud users add') at https://ADDR; http:// is refused beyond loopback")
	cmd.Flags().StringVar(&o.TLSCertFile, "tls-cert-file", "", "the certificate (PEM) of --listen https://")
	cmd.Flags().StringVar(&o.TLSKeyFile, "tls-key-file", "", "the certificate's key (PEM) of --listen https://")
	cmd.Flags().StringVar(&o.Name, "name", "", "on etcd: this control plane's name among the replicas (default HOST-PID)")
	return cmd
}

// Run serves until interrupted.
func (o *ControllerOptions) Run(ctx context.Context) error {
	home, err := o.f.HomeDir()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(controlplane.MemoryLimit)
	}
	return controlplane.Run(ctx, controlplane.Config{
		Home:        home,
		Log:         controlplane.NewLogger(o.f.IO.ErrOut, o.Verbosity),
		Version:     Version,
		Resync:      o.Resync,
		OrphanGrace: o.OrphanGrace,
		APIOnly:     o.APIOnly,
		WatchDir:    o.WatchDir,
		MetricsAddr: o.MetricsAddr,

		Store:         o.Store,
		EtcdTLS:       o.EtcdTLS,
		EtcdPrefix:    o.EtcdPrefix,
		CipherKeyFile: o.CipherKeyFile,
		LeaderLease:   o.LeaderLease,
		Name:          o.Name,
		Listen:        o.Listen,
		TLSCertFile:   o.TLSCertFile,
		TLSKeyFile:    o.TLSKeyFile,
	})
}

// NewCmdUp builds `anycloud up`: the control plane in the background.
func NewCmdUp(f *Factory, runF func(*Factory) error) *cobra.Command {
	var metricsAddr string
	cmd := &cobra.Command{
		Use:   "up [--metrics-addr 127.0.0.1:PORT]",
		Short: "Start the control plane in the background",
		Long:  "Start the control plane in the background, logging to $ANYCLOUD_HOME/controller.log. Nothing happens if one is running.",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(f)
			}
			home, err := f.HomeDir()
			if err != nil {
				return err
			}
			c := api.NewClient(filepath.Join(home, api.SocketFile))
			if c.Ping(cmd.Context()) == nil {
				fmt.Fprintf(f.IO.Out, "control plane already running (pid %d)\n", controlplane.ReadPID(home))
				return nil
			}
			var extra []string
			if metricsAddr != "" {
				extra = append(extra, "--metrics-addr", metricsAddr)
			}
			if err := f.startBackground(cmd.Context(), home, extra...); err != nil {
				return err
			}
			fmt.Fprintf(f.IO.Out, "control plane running (pid %d)\n", controlplane.ReadPID(home))
			return nil
		},
	}
	cmd.Flags().StringVar(&metricsAddr, "metrics-addr", "", "also serve /metrics (Prometheus) on this loopback address, such as 127.0.0.1:9464")
	return cmd
}

// controlPlanePID is the pid of the control plane of home, or 0. The
// control plane that answers on the socket says its own pid; when none
// answers (wedged, or starting), the pid file counts only if the process
// it names is still the one that wrote it. A pid file alone is never
// trusted: after a crash its number can belong to any process.
func controlPlanePID(ctx context.Context, home string) int {
	c := api.NewClient(filepath.Join(home, api.SocketFile))
	if pid, err := c.PID(ctx); err == nil && pid > 0 {
		return pid
	}
	return controlplane.ReadPID(home)
}

// NewCmdDown builds `anycloud down`.
func NewCmdDown(f *Factory, runF func(*Factory) error) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop the background control plane (VMs keep running)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(f)
			}
			home, err := f.HomeDir()
			if err != nil {
				return err
			}
			pid := controlPlanePID(cmd.Context(), home)
			if pid == 0 {
				msg := "control plane not running"
				if controlplane.RemoveStalePIDFile(home) {
					msg += " (removed a stale pid file; the process it named, if any, is not a control plane and was left alone)"
				}
				fmt.Fprintln(f.IO.Out, msg)
				return nil
			}
			if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
				return fmt.Errorf("stop control plane (pid %d): %w", pid, err)
			}
			deadline := time.Now().Add(15 * time.Second)
			for time.Now().Before(deadline) {
				if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
					fmt.Fprintf(f.IO.Out, "control plane stopped (pid %d)\n", pid)
					return nil
				}
				time.Sleep(50 * time.Millisecond)
			}
			return fmt.Errorf("control plane (pid %d) did not stop within 15s", pid)
		},
	}
}
