package aws_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/provider"
	awsprovider "github.com/anycloud/anycloud/provider/aws"
)

// listening is one scope's interruption consumer, started on moto.
type listening struct {
	prov  *awsprovider.Provider
	heard chan string // VM ids, as they arrive
	stop  func()
}

func listen(t *testing.T, moto, key string) *listening {
	t.Helper()
	clients, err := awsprovider.NewClients(context.Background(), awsprovider.ClientConfig{
		Region: "us-east-1", AccessKeyID: "testing", SecretAccessKey: "testing", EndpointURL: moto,
	})
	if err != nil {
		t.Fatal(err)
	}
	prov := awsprovider.New(awsprovider.Options{
		Client: clients.EC2, Key: key, Region: "us-east-1", Cluster: "c0ffee",
		Interruptions: awsprovider.Interruptions{SQS: clients.SQS, EventBridge: clients.EventBridge, Wait: time.Second},
	})
	l := &listening{prov: prov, heard: make(chan string, 16)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		prov.Interruptions(ctx, func(ev provider.Interruption) { l.heard <- ev.VMID })
	}()
	l.stop = func() { cancel(); <-done }
	t.Cleanup(l.stop)
	return l
}

// hears waits for the consumer to hand over an event about id.
func (l *listening) hears(t *testing.T, id string) {
	t.Helper()
	deadline := time.After(time.Minute)
	for {
		select {
		case got := <-l.heard:
			if got == id {
				return
			}
		case <-deadline:
			t.Fatalf("%s never heard of %s", l.prov.Key(), id)
		}
	}
}

// waitUntil polls cond until it holds, failing the test after d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: not %s", d, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestEachScopeOfOneAccountHasItsOwnQueueAndHearsEveryEvent: two
// credentials of one account and region (one control plane) used to
// share one queue, so each consumer got some of the events, dropped those
// of the other's VMs, and deleting one credentials removed the queue the
// other still read. Each scope now has its own queue and rules; the
// shared queue an older control plane made is removed.
func TestEachScopeOfOneAccountHasItsOwnQueueAndHearsEveryEvent(t *testing.T) {
	moto := testenv.StartMoto(t)
	// What a control plane before per-scope queues left behind.
	testenv.AWSCLI(t, moto, "sqs", "create-queue", "--queue-name", "anycloud-c0ffee")
	testenv.AWSCLI(t, moto, "events", "put-rule", "--name", "anycloud-c0ffee-rebalance", "--event-pattern", `{"source":["aws.ec2"]}`)

	queues := func() []string {
		return strings.Fields(testenv.AWSCLI(t, moto, "sqs", "list-queues", "--queue-name-prefix", "anycloud-c0ffee", "--query", "QueueUrls[]", "--output", "text"))
	}
	rules := func() []string {
		return strings.Fields(testenv.AWSCLI(t, moto, "events", "list-rules", "--name-prefix", "anycloud-c0ffee", "--query", "Rules[].Name", "--output", "text"))
	}
	// ready: every queue's policy is set, the last step of making it.
	ready := func(n int) bool {
		qs := queues()
		if len(qs) != n || len(rules()) != 4*n {
			return false
		}
		for _, q := range qs {
			if !strings.Contains(testenv.AWSCLI(t, moto, "sqs", "get-queue-attributes", "--queue-url", q, "--attribute-names", "Policy", "--output", "text"), "events.amazonaws.com") {
				return false
			}
		}
		return true
	}
	a := listen(t, moto, "aws/team-a/us-east-1")
	b := listen(t, moto, "aws/team-b/us-east-1")
	waitUntil(t, 2*time.Minute, "two queues with four rules each", func() bool { return ready(2) })
	for _, q := range queues() {
		if strings.HasSuffix(q, "/anycloud-c0ffee") {
			t.Errorf("the shared queue of an older control plane is still there: %v", queues())
		}
	}
	for _, r := range rules() {
		if r == "anycloud-c0ffee-rebalance" {
			t.Errorf("the shared queue's rule is still there: %v", rules())
		}
		if len(r) > 64 {
			t.Errorf("rule name %s is longer than EventBridge's 64", r)
		}
	}

	put := func(id string) {
		d, _ := json.Marshal(map[string]string{"instance-id": id, "instance-action": "terminate"})
		entries, _ := json.Marshal([]map[string]string{{"Source": "aws.ec2", "DetailType": "EC2 Spot Instance Interruption Warning", "Detail": string(d)}})
		testenv.AWSCLI(t, moto, "events", "put-events", "--entries", string(entries))
	}
	put("i-0000000000000000a")
	a.hears(t, "i-0000000000000000a")
	b.hears(t, "i-0000000000000000a")

	// team-a's credentials go: their queue and rules with them, and
	// team-b still hears.
	a.stop()
	if err := a.prov.RemoveInterruptions(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !ready(1) {
		t.Fatalf("after removing one scope's: queues %v, rules %v", queues(), rules())
	}
	put("i-0000000000000000b")
	b.hears(t, "i-0000000000000000b")
}
