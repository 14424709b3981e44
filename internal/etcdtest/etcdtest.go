// Package etcdtest runs etcd inside a test process: a Cluster of one or
// more embedded members (go.etcd.io/etcd/server/v3/embed) on loopback
// ports, each in its own directory, for the store's contract tests and the
// control plane's failover tests. A member can be stopped to show that the
// others carry on.
package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Cluster is a running etcd cluster of embedded members.
type Cluster struct {
	dir     string
	members []*embed.Etcd
	clients []string
}

// Options change how members serve clients.
type Options struct {
	// CertFile and KeyFile, when set, serve clients over TLS (https)
	// with this certificate.
	CertFile, KeyFile string
}

// Start runs an n-member cluster under dir (which it owns until Close).
// Members fsync nothing: tests do not survive power cuts.
func Start(dir string, n int) (*Cluster, error) { return StartWith(dir, n, Options{}) }

// StartWith is Start with options.
func StartWith(dir string, n int, o Options) (*Cluster, error) {
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir}
	var initial []string
	cfgs := make([]*embed.Config, n)
	for i := range n {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = filepath.Join(dir, cfg.Name)
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		cfg.UnsafeNoFsync = true
		cu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i])}
		if o.CertFile != "" {
			cu.Scheme = "https"
			cfg.ClientTLSInfo = transport.TLSInfo{CertFile: o.CertFile, KeyFile: o.KeyFile}
		}
		pu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
		// A 10,000-object apply is one transaction.
		cfg.MaxTxnOps = 1 << 16
		cfg.MaxRequestBytes = 64 << 20
		// Elections within a second on loopback.
		cfg.TickMs, cfg.ElectionMs = 50, 500
		initial = append(initial, cfg.Name+"="+pu.String())
		c.clients = append(c.clients, cu.Host)
		cfgs[i] = cfg
	}
	c.members = make([]*embed.Etcd, n)
	started := make(chan error, n)
	for i, cfg := range cfgs {
		cfg.InitialCluster = strings.Join(initial, ",")
		go func() {
			e, err := embed.StartEtcd(cfg)
			if err != nil {
				started <- fmt.Errorf("member %s: %w", cfg.Name, err)
				return
			}
			c.members[i] = e
			select {
			case <-e.Server.ReadyNotify():
				started <- nil
			case <-time.After(60 * time.Second):
				started <- fmt.Errorf("member %s not ready within 60s", cfg.Name)
			}
		}()
	}
	var errs []string
	for range n {
		if err := <-started; err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		c.Close()
		return nil, fmt.Errorf("start etcd: %s", strings.Join(errs, "; "))
	}
	return c, nil
}

// Client returns a client of every member, with the store's message
// limits; the caller closes it.
func (c *Cluster) Client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints: c.clients, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		MaxCallSendMsgSize: 64 << 20, MaxCallRecvMsgSize: 64 << 20,
	})
}

// Endpoints are the members' client addresses (host:port).
func (c *Cluster) Endpoints() []string { return c.clients }

// Stop stops member i; the others carry on while they are a majority.
func (c *Cluster) Stop(i int) {
	if e := c.members[i]; e != nil {
		e.Close()
		c.members[i] = nil
	}
}

// Close stops every member and removes their data.
func (c *Cluster) Close() {
	for i := range c.members {
		c.Stop(i)
	}
	os.RemoveAll(c.dir)
}

// freePorts finds n free loopback ports by listening on each and closing
// the listeners together.
func freePorts(n int) ([]int, error) {
	var out []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
