package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/anycloud/anycloud/seal"
	"github.com/anycloud/anycloud/state"
)

// EtcdTLS are the files of an etcd client's TLS: the cluster's CA, and
// this client's certificate and key when the cluster asks for them.
type EtcdTLS struct {
	CAFile, CertFile, KeyFile string
}

// config returns the TLS configuration, or nil when no file is given
// (etcd in the clear, on loopback).
func (t EtcdTLS) config() (*tls.Config, error) {
	if t.CAFile == "" && t.CertFile == "" && t.KeyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--etcd-ca-file %s: no PEM certificate in it", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, fmt.Errorf("--etcd-cert-file and --etcd-key-file go together")
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cert-file/--etcd-key-file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// ParseStore reads --store: "" or "bolt" is the bbolt file in the home
// (nil endpoints); etcd://HOST:PORT[,HOST:PORT…] is an etcd cluster.
func ParseStore(s string) ([]string, error) {
	switch {
	case s == "" || s == "bolt":
		return nil, nil
	case strings.HasPrefix(s, "etcd://"):
		var eps []string
		for _, ep := range strings.Split(strings.TrimPrefix(s, "etcd://"), ",") {
			if ep = strings.TrimSpace(ep); ep == "" || strings.ContainsAny(ep, "/?#") {
				return nil, fmt.Errorf("--store %q: want etcd://HOST:PORT[,HOST:PORT...]", s)
			}
			eps = append(eps, ep)
		}
		return eps, nil
	}
	return nil, fmt.Errorf("--store %q: want bolt or etcd://HOST:PORT[,HOST:PORT...]", s)
}

// sealedStore is a store that also keeps the key pair of `secrets seal`.
type sealedStore interface {
	state.Store
	SealingKey() *seal.BoxKey
}

// openStore opens the store cfg names: bbolt, or etcd (then also returned
// as *state.Etcd, for the election).
func openStore(ctx context.Context, cfg Config) (sealedStore, *state.Etcd, error) {
	eps, err := ParseStore(cfg.Store)
	if err != nil {
		return nil, nil, err
	}
	if eps == nil {
		s, err := state.OpenBolt(cfg.Home, state.BoltOptions{})
		return s, nil, err
	}
	tlsCfg, err := cfg.EtcdTLS.config()
	if err != nil {
		return nil, nil, err
	}
	if tlsCfg != nil {
		for i, ep := range eps {
			eps[i] = "https://" + ep
		}
	}
	s, err := state.OpenEtcd(ctx, state.EtcdOptions{Endpoints: eps, TLS: tlsCfg, Home: cfg.Home, CipherKeyFile: cfg.CipherKeyFile, Prefix: cfg.EtcdPrefix, OnCommit: cfg.onCommit})
	if err != nil {
		return nil, nil, err
	}
	return s, s, nil
}
