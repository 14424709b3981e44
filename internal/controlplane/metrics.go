package controlplane

import (
	"fmt"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// newRegistry is the registry behind /metrics: the Go runtime's and the
// process's series, and the cloud request counter the providers share.
// The controller registers its own series on it.
func newRegistry() (*prometheus.Registry, *prometheus.CounterVec) {
	reg := prometheus.NewRegistry()
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "anycloud_cloud_requests_total",
		Help: "Requests sent to clouds, by provider, action (RunInstances, DescribeInstances, ...) and outcome: ok, throttled, error.",
	}, []string{"provider", "action", "outcome"})
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), requests)
	return reg, requests
}

// listenLoopback listens on addr, which must be a loopback address: the
// control plane serves nothing in the clear beyond this machine.
func listenLoopback(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("%s is not a loopback address", addr)
	}
	return net.Listen("tcp", addr)
}
