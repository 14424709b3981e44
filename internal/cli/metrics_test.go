package cli

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anycloud/anycloud/api"
)

// scrape reads the control plane's /metrics over its API socket, as
// `curl --unix-socket $ANYCLOUD_HOME/api.sock http://anycloud/metrics`
// does.
func (e *env) scrape() string {
	e.t.Helper()
	sock := filepath.Join(e.home, api.SocketFile)
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}, Timeout: 10 * time.Second}
	res, err := c.Get("http://anycloud/metrics")
	if err != nil {
		e.t.Fatalf("scrape /metrics: %v", err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		e.t.Fatalf("/metrics: %s\n%s", res.Status, b)
	}
	return string(b)
}

// metric sums the samples of a series: prefix is its name, or its name
// and its whole label set.
func metric(text, prefix string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, prefix+" ") && !strings.HasPrefix(line, prefix+"{") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// reconciles is how many reconciles the controller has finished.
func (e *env) reconciles() float64 { return metric(e.scrape(), "anycloud_reconcile_total") }

// settled waits until the controller has finished more reconciles than
// before and has nothing queued or running: whatever a change made it do
// is done. Tests that check that something did not happen wait for this
// instead of sleeping.
func (e *env) settled(before float64) {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		m := e.scrape()
		if metric(m, "anycloud_reconcile_total") > before && metric(m, "anycloud_queue_depth") == 0 && metric(m, "anycloud_reconciles_in_flight") == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the controller did not settle within a minute:\n%s", m)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMetricsAreServedOnTheAPISocket(t *testing.T) {
	e := newDockerEnv(t)
	e.must("submit", e.image, "--name", "m", "--wait", "--timeout", "60s")
	// Ready is written by the pass; the pass is counted once it returns.
	var m string
	deadline := time.Now().Add(time.Minute)
	for m = e.scrape(); metric(m, `anycloud_reconcile_total{result="success"}`) < 1 && time.Now().Before(deadline); m = e.scrape() {
		time.Sleep(20 * time.Millisecond)
	}
	for _, series := range []string{
		"anycloud_reconcile_total", "anycloud_reconcile_duration_seconds_bucket", "anycloud_reconciles_in_flight",
		"anycloud_queue_depth", "anycloud_queue_wait_seconds_bucket", "anycloud_replacement_seconds_bucket",
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if !strings.Contains(m, series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	if metric(m, `anycloud_reconcile_total{result="success"}`) < 1 {
		t.Errorf("no successful reconcile counted:\n%s", m)
	}
	// A preemption and its recovery are counted, with the time it took.
	before := metric(m, "anycloud_replacement_seconds_count")
	e.kill(e.running("m"))
	e.eventually("a recovery counted", func() bool {
		m := e.scrape()
		return metric(m, `anycloud_recoveries_total{reason="preempted"}`) >= 1 && metric(m, "anycloud_replacement_seconds_count") > before
	})
}
