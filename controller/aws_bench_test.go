package controller_test

// Benchmarks of the control loop against moto_server behind the counting
// proxy, for the figures of DESIGN §7. Run by `make bench`.

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/go-logr/logr"

	"github.com/anycloud/anycloud/controller"
	"github.com/anycloud/anycloud/internal/ec2proxy"
	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	awsprovider "github.com/anycloud/anycloud/provider/aws"
	"github.com/anycloud/anycloud/state"
)

// launchOnly hides the provider's SSH bootstrap: these benchmarks measure
// the cloud calls, and a VM counts as converged when it runs.
type launchOnly struct{ provider.Provider }

// timedEC2 records when a listing first shows an instance terminated and
// when RunInstances is called, to time recoveries.
type timedEC2 struct {
	awsprovider.EC2API
	mu   sync.Mutex
	seen map[string]time.Time // instance id → first listing that showed it terminated
	runs []time.Time
}

func (t *timedEC2) DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, o ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	out, err := t.EC2API.DescribeInstances(ctx, in, o...)
	if err == nil {
		now := time.Now()
		t.mu.Lock()
		for _, r := range out.Reservations {
			for _, i := range r.Instances {
				id := sdkaws.ToString(i.InstanceId)
				if i.State != nil && i.State.Name == types.InstanceStateNameTerminated {
					if _, ok := t.seen[id]; !ok {
						t.seen[id] = now
					}
				}
			}
		}
		t.mu.Unlock()
	}
	return out, err
}

func (t *timedEC2) RunInstances(ctx context.Context, in *ec2.RunInstancesInput, o ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error) {
	t.mu.Lock()
	t.runs = append(t.runs, time.Now())
	t.mu.Unlock()
	return t.EC2API.RunInstances(ctx, in, o...)
}

type benchRig struct {
	moto    string
	proxy   *ec2proxy.Proxy
	store   *state.Bolt
	timed   *timedEC2
	prov    provider.Provider
	outside *ec2.Client
}

func newBenchRig(b *testing.B) *benchRig {
	moto := testenv.StartMoto(b)
	proxy, err := ec2proxy.New(moto)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { proxy.Close() })
	ctx := context.Background()
	client, region, err := awsprovider.NewClient(ctx, awsprovider.ClientConfig{Region: "us-east-1", AccessKeyID: "testing", SecretAccessKey: "testing", EndpointURL: proxy.URL()})
	if err != nil {
		b.Fatal(err)
	}
	outside, _, _ := awsprovider.NewClient(ctx, awsprovider.ClientConfig{Region: "us-east-1", AccessKeyID: "testing", SecretAccessKey: "testing", EndpointURL: moto})
	store, err := state.OpenBolt(testenv.ShortTempDir(b), state.BoltOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	timed := &timedEC2{EC2API: client, seen: map[string]time.Time{}}
	prov := awsprovider.New(awsprovider.Options{Client: timed, Key: "aws/bench/" + region, Region: region, Cluster: store.ClusterID(),
		Retry: awsprovider.RetryPolicy{Initial: 20 * time.Millisecond, Max: time.Second, MaxElapsed: 10 * time.Second}})
	// The default image, resolved once, outside the measurement.
	if _, err := prov.Launch(ctx, provider.LaunchRequest{Deployment: "warm", UID: "warm", Attempt: 1, Token: "warm-1", Image: "x"}); err != nil {
		b.Fatal(err)
	}
	vms, _ := prov.List(ctx)
	for _, vm := range vms {
		prov.Terminate(ctx, vm.ID)
	}
	return &benchRig{moto: moto, proxy: proxy, store: store, timed: timed, prov: launchOnly{prov}, outside: outside}
}

func (r *benchRig) apply(b *testing.B, names []string) {
	var writes []state.Write
	for _, n := range names {
		writes = append(writes, state.Write{Object: &manifests.Deployment{
			TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindDeployment},
			Metadata: manifests.ObjectMeta{Name: n},
			Spec:     manifests.DeploymentSpec{Image: "img", Credentials: manifests.LocalCredentials, Spot: manifests.SpotSpec{Enabled: true}, VMType: "t3.micro"},
		}})
	}
	if _, err := r.store.Apply(context.Background(), writes, state.ApplyOptions{}); err != nil {
		b.Fatal(err)
	}
}

func (r *benchRig) waitReady(b *testing.B, names []string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for _, n := range names {
		for {
			obj, err := r.store.Get(context.Background(), manifests.KindDeployment, n)
			if err != nil {
				b.Fatal(err)
			}
			c := manifests.FindCondition(obj.(*manifests.Deployment).Status.Conditions, manifests.ConditionReady)
			if c != nil && c.Status == manifests.ConditionTrue {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s not Ready within %s; proxy counts %v", n, timeout, r.proxy.Counts())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func (r *benchRig) start(b *testing.B, resync time.Duration) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	c := controller.New(controller.Options{Store: r.store, Providers: fixedProviders{r.prov}, Log: logr.Discard(), Resync: resync, Workers: 8})
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	return cancel
}

// BenchmarkConvergeAWS converges N new spot deployments and compares the
// time with N bare RunInstances calls made at the same concurrency (8)
// through the same EC2 request bucket (RunInstances: 5, refill 2/s), each
// followed by waiting until a DescribeInstances shows the instance
// running. It reports the calls made: DESIGN §7 wants N RunInstances, no
// CreateTags, and DescribeInstances only from resyncs.
func BenchmarkConvergeAWS(b *testing.B) {
	const n = 20
	for i := 0; i < b.N; i++ {
		r := newBenchRig(b)
		var names []string
		for j := range n {
			names = append(names, fmt.Sprintf("conv-%d", j))
		}
		r.proxy.Reset()
		start := time.Now()
		r.apply(b, names)
		r.start(b, 2*time.Second)
		r.waitReady(b, names, 5*time.Minute)
		converge := time.Since(start)
		counts := r.proxy.Counts()

		// The bare SDK at the same concurrency and bucket.
		bare := bareLaunches(b, r, n)
		b.ReportMetric(converge.Seconds(), "s-converge")
		b.ReportMetric(bare.Seconds(), "s-bare-sdk")
		b.ReportMetric(converge.Seconds()/bare.Seconds(), "ratio")
		b.ReportMetric(float64(counts["RunInstances"]), "RunInstances")
		b.ReportMetric(float64(counts["CreateTags"]), "CreateTags")
		b.ReportMetric(float64(counts["DescribeInstances"]), "DescribeInstances")
	}
}

// bareLaunches is the floor: RunInstances for n instances with 8
// goroutines under the same bucket, then one DescribeInstances per
// instance until it runs.
func bareLaunches(b *testing.B, r *benchRig, n int) time.Duration {
	ctx := context.Background()
	client, _, _ := awsprovider.NewClient(ctx, awsprovider.ClientConfig{Region: "us-east-1", AccessKeyID: "testing", SecretAccessKey: "testing", EndpointURL: r.moto})
	bucket := newRunBucket()
	ids := make(chan int, n)
	for i := range n {
		ids <- i
	}
	close(ids)
	start := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				bucket.wait()
				out, err := client.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: sdkaws.String("ami-760aaa0f"), MinCount: sdkaws.Int32(1), MaxCount: sdkaws.Int32(1),
					InstanceType: types.InstanceTypeT3Micro, ClientToken: sdkaws.String(fmt.Sprintf("bare-%d-%d", time.Now().UnixNano(), i))})
				if err != nil {
					b.Error(err)
					return
				}
				id := sdkaws.ToString(out.Instances[0].InstanceId)
				for {
					d, err := client.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
					if err == nil && d.Reservations[0].Instances[0].State.Name == types.InstanceStateNameRunning {
						break
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

// runBucket mirrors the provider's RunInstances bucket for the bare run.
type runBucket struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newRunBucket() *runBucket { return &runBucket{tokens: 5, last: time.Now()} }

func (r *runBucket) wait() {
	for {
		r.mu.Lock()
		now := time.Now()
		r.tokens = min(5, r.tokens+now.Sub(r.last).Seconds()*2)
		r.last = now
		if r.tokens >= 1 {
			r.tokens--
			r.mu.Unlock()
			return
		}
		w := time.Duration((1 - r.tokens) / 2 * float64(time.Second))
		r.mu.Unlock()
		time.Sleep(w)
	}
}

// BenchmarkIdleResyncAWS counts the calls of idle resyncs of converged
// deployments: DESIGN §7 wants ceil(N/1000) DescribeInstances per resync
// and nothing else.
func BenchmarkIdleResyncAWS(b *testing.B) {
	const n = 10
	for i := 0; i < b.N; i++ {
		r := newBenchRig(b)
		var names []string
		for j := range n {
			names = append(names, fmt.Sprintf("idle-%d", j))
		}
		r.apply(b, names)
		r.start(b, 500*time.Millisecond)
		r.waitReady(b, names, 2*time.Minute)
		time.Sleep(time.Second)
		r.proxy.Reset()
		const window = 5 * time.Second
		time.Sleep(window)
		counts := r.proxy.Counts()
		resyncs := float64(window / (500 * time.Millisecond))
		b.ReportMetric(float64(counts["DescribeInstances"])/resyncs, "DescribeInstances/resync")
		mut := 0
		for k, v := range counts {
			if k != "DescribeInstances" {
				mut += v
			}
		}
		b.ReportMetric(float64(mut), "other-calls")
	}
}

// BenchmarkPreemptionToReplacementAWS times, over several preemptions
// from outside (one per deployment, so that no recovery back-off applies),
// the gap between the listing that first shows the instance terminated and
// the replacement's RunInstances. DESIGN §7: p50 under 1 s.
func BenchmarkPreemptionToReplacementAWS(b *testing.B) {
	const rounds = 5
	for i := 0; i < b.N; i++ {
		r := newBenchRig(b)
		var names []string
		for j := range rounds {
			names = append(names, fmt.Sprintf("preempt-%d", j))
		}
		r.apply(b, names)
		r.start(b, 300*time.Millisecond)
		r.waitReady(b, names, time.Minute)
		var gaps []time.Duration
		for _, name := range names {
			obj, _ := r.store.Get(context.Background(), manifests.KindDeployment, name)
			id := obj.(*manifests.Deployment).Status.VM.ID
			r.timed.mu.Lock()
			before := len(r.timed.runs)
			r.timed.mu.Unlock()
			if _, err := r.outside.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
				b.Fatal(err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				r.timed.mu.Lock()
				seen, ok := r.timed.seen[id]
				var run time.Time
				if len(r.timed.runs) > before {
					run = r.timed.runs[before]
				}
				r.timed.mu.Unlock()
				if ok && !run.IsZero() {
					gaps = append(gaps, run.Sub(seen))
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("%s: no replacement", name)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		slices.Sort(gaps)
		b.ReportMetric(float64(gaps[len(gaps)/2].Microseconds())/1000, "ms-p50")
		b.ReportMetric(float64(gaps[len(gaps)-1].Microseconds())/1000, "ms-max")
	}
}
