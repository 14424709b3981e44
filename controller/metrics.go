package controller

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the controller's Prometheus series (documented in the
// README's Metrics section). They are registered on the registry the
// control plane serves at /metrics; a controller without one keeps them
// on a registry of its own, unseen.
type metrics struct {
	reconciles      *prometheus.CounterVec
	reconcileTime   prometheus.Histogram
	inFlight        prometheus.Gauge
	queueWait       prometheus.Histogram
	recoveries      *prometheus.CounterVec
	interruptions   *prometheus.CounterVec
	replacementTime prometheus.Histogram
}

// reconcile results, the label of anycloud_reconcile_total.
const (
	resultSuccess  = "success"
	resultRequeue  = "requeue"
	resultError    = "error"
	resultTerminal = "terminal"
)

func newMetrics(reg prometheus.Registerer, q *Queue) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &metrics{
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anycloud_reconcile_total",
			Help: "Reconciles of deployments, by result: success, requeue (looked at again later), error (retried with back-off), terminal (not retried).",
		}, []string{"result"}),
		reconcileTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "anycloud_reconcile_duration_seconds",
			Help:    "Time one reconcile of one deployment took, cloud calls included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "anycloud_reconciles_in_flight",
			Help: "Reconciles running now.",
		}),
		queueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "anycloud_queue_wait_seconds",
			Help:    "Time a deployment waited in the work queue, ready, before a worker took it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}),
		recoveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anycloud_recoveries_total",
			Help: "VMs replaced without being asked to, by reason: preempted (taken away), warned (replaced before the cloud takes it back), boot_timeout (never took its workload).",
		}, []string{"reason"}),
		interruptions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anycloud_interruption_events_total",
			Help: "The cloud's events about VMs of ours, by type: interruption_warning, rebalance_recommendation, scheduled_change, state_change.",
		}, []string{"type"}),
		replacementTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "anycloud_replacement_seconds",
			Help:    "Time from a VM found lost, or warned of, to its replacement Ready.",
			Buckets: []float64{0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600},
		}),
	}
	depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "anycloud_queue_depth",
		Help: "Deployments queued and ready to be reconciled now.",
	}, func() float64 { return float64(q.Len()) })
	reg.MustRegister(m.reconciles, m.reconcileTime, m.inFlight, m.queueWait, m.recoveries, m.interruptions, m.replacementTime, depth)
	q.waited = func(d time.Duration) { m.queueWait.Observe(d.Seconds()) }
	return m
}
