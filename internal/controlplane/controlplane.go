// Package controlplane wires the parts of the control plane together: the
// store (package state), the API server (package api) and the controller
// (package controller), all rooted in one home directory. `anycloud
// controller` runs it in the foreground; `anycloud up` in the background.
//
// On a shared etcd store (Config.Store etcd://…) it is one replica of
// several: every replica serves the API; one, elected (replica), runs the
// controller on a store fenced on its leadership and with providers that
// check it before every cloud call (fencedProviders).
package controlplane

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/controller"
	"github.com/anycloud/anycloud/dashboard"
	awsprovider "github.com/anycloud/anycloud/provider/aws"
	"github.com/anycloud/anycloud/seal"
	"github.com/anycloud/anycloud/state"
)

// Files in the home directory.
const (
	PIDFile = "controller.pid"
	LogFile = "controller.log"
)

// Config says where and how the control plane runs.
type Config struct {
	Home    string
	Log     logr.Logger
	Version string
	// Ready, when set, is called once the API is being served.
	Ready func()
	// Resync is the controller's resync period (default 30s).
	Resync time.Duration
	// OrphanGrace is how long an unowned VM lives (default 2m).
	OrphanGrace time.Duration
	// APIOnly serves the store without the controller: for benchmarks of
	// the API and for inspecting a store without touching any cloud.
	APIOnly bool
	// TuneAWS adjusts each AWS provider's options; tests use it to point
	// the SSH bootstrap at a local sshd.
	TuneAWS func(*awsprovider.Options)
	// WatchDir, when set, is a directory of manifests the control plane
	// applies (with prune) whenever it changes.
	WatchDir string
	// WatchInterval is the periodic re-read of WatchDir (default: Resync,
	// or 30s).
	WatchInterval time.Duration
	// DashboardAddr is where the dashboard listens: a loopback address,
	// 127.0.0.1 on a free port when empty. `anycloud dashboard` asks the
	// API for the URL.
	DashboardAddr string
	// MetricsAddr, when set, also serves /metrics (Prometheus) on TCP at
	// this loopback address; the API socket always serves it.
	MetricsAddr string

	// Store is where the state lives: "" (or "bolt") for the home's
	// state.db; etcd://HOST:PORT[,HOST:PORT...] for an etcd cluster that
	// several control planes share (see ParseStore).
	Store string
	// EtcdTLS secures the connection to etcd.
	EtcdTLS EtcdTLS
	// EtcdPrefix is where the store's keys live in etcd ("/anycloud/").
	EtcdPrefix string
	// CipherKeyFile is the cipher key on a shared store: the same file
	// given to every control plane (default: the home's cipher.key).
	CipherKeyFile string
	// LeaderLease is the TTL of this control plane's etcd session
	// (DefaultLeaderLease): how soon another takes over when the leader
	// stops renewing it.
	LeaderLease time.Duration
	// Name names this control plane among the replicas of a shared store
	// (default: host name and pid).
	Name string
	// Providers, when set, replaces the local and AWS providers: the
	// failover tests count cloud calls with it.
	Providers controller.Providers
	// Listen, when set, also serves the API to remote users (bearer
	// tokens, `anycloud users add`) at https://ADDR with TLSCertFile and
	// TLSKeyFile, or http://ADDR on loopback only.
	Listen                  string
	TLSCertFile, TLSKeyFile string
	// onCommit is told of each write committed to etcd (tests).
	onCommit func(fenced bool, rev int64)
}

// MemoryLimit is the control plane process's soft memory limit
// (GOMEMLIMIT overrides it): past it the garbage collector works harder
// rather than letting a burst, such as a 10,000-object apply, grow the
// heap. `anycloud controller` sets it for its own process.
const MemoryLimit = 96 << 20

// Run serves the control plane until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Log
	if err := seal.EnsureHome(cfg.Home); err != nil {
		return err
	}
	store, shared, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	box := store.SealingKey()
	pidPath, err := writePIDFile(cfg.Home)
	if err != nil {
		return err
	}
	defer os.Remove(pidPath)

	reg, requests := newRegistry()
	local := &providers{cluster: store.ClusterID(), home: cfg.Home, tuneAWS: cfg.TuneAWS, requests: requests}
	defer local.close()
	var provs controller.Providers = local
	if cfg.Providers != nil {
		provs = cfg.Providers
	}
	newController := func(s state.Store, p controller.Providers, metrics prometheus.Registerer) *controller.Controller {
		return controller.New(controller.Options{
			Store: s, Providers: p, Log: log.WithName("controller"),
			Resync: cfg.Resync, OrphanGrace: cfg.OrphanGrace, Metrics: metrics, GitHub: githubLogin(cfg.Home),
		})
	}
	var (
		ctrl     *controller.Controller
		gatherer prometheus.Gatherer = reg
		rep      *replica
	)
	if shared == nil {
		ctrl = newController(store, provs, reg)
	} else {
		// Every replica serves logs and SSH (they read); only the leader
		// runs a controller, a new one per term, fenced.
		ctrl = newController(store, provs, prometheus.NewRegistry())
		terms := &termGatherer{}
		gatherer = prometheus.Gatherers{reg, terms}
		addr := cfg.Listen
		if addr == "" {
			addr = filepath.Join(cfg.Home, api.SocketFile)
		}
		rep = &replica{name: cfg.Name, addr: addr, store: shared, ttl: cfg.LeaderLease, log: log.WithName("election")}
		if rep.name == "" {
			host, _ := os.Hostname()
			rep.name = fmt.Sprintf("%s-%d", host, os.Getpid())
		}
		if rep.ttl == 0 {
			rep.ttl = DefaultLeaderLease
		}
		rep.lead = func(ctx context.Context, fenced *state.Etcd) error {
			c := newController(fenced, fencedProviders{inner: provs, check: fenced.CheckFence}, terms.next())
			return c.Run(ctx)
		}
	}
	metrics := promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})
	srv := &api.Server{Store: store, Sealing: box, Log: log.WithName("api"), Version: cfg.Version, Logs: ctrl.Logs, SSH: ctrl.SSHInfo, Metrics: metrics}
	if rep != nil {
		srv.ControlPlane = rep.status
	}
	var metricsLn net.Listener
	if cfg.MetricsAddr != "" {
		if metricsLn, err = listenLoopback(cfg.MetricsAddr); err != nil {
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		defer metricsLn.Close()
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metrics)
		go (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(metricsLn)
		log.Info("metrics serving", "url", "http://"+metricsLn.Addr().String()+"/metrics")
	}
	var remoteLn net.Listener
	if cfg.Listen != "" {
		if remoteLn, err = api.ListenRemote(cfg.Listen, cfg.TLSCertFile, cfg.TLSKeyFile); err != nil {
			return err
		}
		defer remoteLn.Close()
	}
	sock := filepath.Join(cfg.Home, api.SocketFile)
	ln, err := api.Listen(sock)
	if err != nil {
		return err
	}
	log.Info("control plane serving", "socket", sock, "pid", os.Getpid())
	if cfg.Ready != nil {
		cfg.Ready()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var watchDone chan error
	if cfg.WatchDir != "" {
		interval := cfg.WatchInterval
		if interval == 0 {
			interval = cfg.Resync
		}
		wd, err := newWatchDir(cfg.WatchDir, interval, srv, store, log.WithName("watch-dir"))
		if err != nil {
			ln.Close()
			return err
		}
		srv.Sources = wd.Status
		watchDone = make(chan error, 1)
		go func() { watchDone <- wd.Run(ctx) }()
	}
	// The dashboard reads the store and acts through the API socket, as
	// the CLI does; its sign-in links are minted by the API.
	dash, err := dashboard.New(dashboard.Options{
		Addr: cfg.DashboardAddr, Store: store, Actions: api.NewClient(sock), Sources: srv.Sources,
		Cluster: store.ClusterID(), Version: cfg.Version, Log: log.WithName("dashboard"),
	})
	if err == nil {
		err = dash.Listen()
	}
	if err != nil {
		ln.Close()
		cancel()
		if watchDone != nil {
			<-watchDone
		}
		return err
	}
	srv.Dashboard = dash.Ticket
	log.Info("dashboard serving", "url", dash.URL())
	if remoteLn != nil {
		log.Info("API serving remote users", "url", cfg.Listen, "addr", remoteLn.Addr().String())
		go srv.ServeRemote(ctx, remoteLn)
	}
	dashDone := make(chan error, 1)
	go func() { dashDone <- dash.Serve(ctx) }()
	ctrlDone := make(chan error, 1)
	switch {
	case cfg.APIOnly:
		ctrlDone <- nil
	case rep != nil:
		go func() { rep.run(ctx); ctrlDone <- nil }()
	default:
		go func() { ctrlDone <- ctrl.Run(ctx) }()
	}
	err = srv.ServeListener(ctx, ln)
	cancel()
	<-ctrlDone
	if derr := <-dashDone; derr != nil {
		log.Error(derr, "dashboard stopped")
	}
	if watchDone != nil {
		<-watchDone
	}
	os.Remove(sock)
	log.Info("control plane stopped")
	return err
}

// NewLogger returns a logger that writes one line per entry to w, at
// verbosity v (1 shows routine successes).
func NewLogger(w io.Writer, v int) logr.Logger {
	return funcr.New(func(prefix, args string) {
		ts := time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
		if prefix != "" {
			fmt.Fprintf(w, "%s %s %s\n", ts, prefix, args)
			return
		}
		fmt.Fprintf(w, "%s %s\n", ts, args)
	}, funcr.Options{Verbosity: v})
}
