package controller

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anycloud/anycloud/provider"
)

// interruptingCloud is a fake cloud with an events queue: the consumer's
// handler is kept for the test to deliver events through, and the order
// of launches and terminations is recorded.
type interruptingCloud struct {
	*fakeCloud
	mu      sync.Mutex
	ops     []string
	handler chan func(provider.Interruption)
	removed chan struct{}
}

func (c *interruptingCloud) Launch(ctx context.Context, req provider.LaunchRequest) (provider.VM, error) {
	vm, err := c.fakeCloud.Launch(ctx, req)
	c.mu.Lock()
	c.ops = append(c.ops, "launch "+vm.ID)
	c.mu.Unlock()
	return vm, err
}

func (c *interruptingCloud) Terminate(ctx context.Context, id string) error {
	c.mu.Lock()
	c.ops = append(c.ops, "terminate "+id)
	c.mu.Unlock()
	return c.fakeCloud.Terminate(ctx, id)
}

func (c *interruptingCloud) Interruptions(ctx context.Context, handle func(provider.Interruption)) error {
	c.handler <- handle
	<-ctx.Done()
	return nil
}

func (c *interruptingCloud) RemoveInterruptions(context.Context) error {
	close(c.removed)
	return nil
}

func (c *interruptingCloud) opsSoFar() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.ops, ", ")
}

// TestInterruptionEventsReplaceBeforeBreakAndRecoverWithoutAResync drives
// the events consumer by hand: a warning launches the replacement before
// the warned VM is terminated; the same warning again changes nothing; a
// state change nobody asked for recovers at once, with no resync; a scope
// no longer in use has its queue removed.
func TestInterruptionEventsReplaceBeforeBreakAndRecoverWithoutAResync(t *testing.T) {
	r := newRig(t)
	cloud := &interruptingCloud{fakeCloud: r.cloud, handler: make(chan func(provider.Interruption), 1), removed: make(chan struct{})}
	r.provs.clouds[""] = cloud
	r.apply(deployment("train"))
	r.run(0)
	first := r.get("train").Status.VM.ID

	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	r.c.interruptions.sync(ctx, []provider.Provider{cloud})
	defer r.c.interruptions.stop()
	var deliver func(provider.Interruption)
	select {
	case deliver = <-cloud.handler:
	case <-time.After(30 * time.Second):
		t.Fatal("no consumer of the scope's events")
	}

	warning := provider.Interruption{Kind: provider.InterruptionWarning, VMID: first, Detail: "EC2 Spot Instance Interruption Warning"}
	deliver(warning)
	r.run(0)
	d := r.get("train")
	second := d.Status.VM.ID
	if second == first || d.Status.Draining != nil || d.Status.Recoveries != 1 {
		t.Fatalf("after the warning: VM %s, draining %+v, recoveries %d", second, d.Status.Draining, d.Status.Recoveries)
	}
	if ops := cloud.opsSoFar(); ops != "launch "+first+", launch "+second+", terminate "+first {
		t.Errorf("operations %q: want the replacement launched before the warned VM is terminated", ops)
	}
	for _, want := range []string{"CloudEvent", "Interruption Warning", "Drained"} {
		if ev := r.events("train"); !strings.Contains(ev, want) {
			t.Errorf("events lack %q:\n%s", want, ev)
		}
	}

	// The same warning, delivered again: the warned VM is gone already.
	deliver(warning)
	r.run(0)
	if d := r.get("train"); d.Status.VM.ID != second || r.cloud.launches != 2 {
		t.Errorf("a repeated warning: VM %s after %d launches, want %s after 2", d.Status.VM.ID, r.cloud.launches, second)
	}

	// EC2 terminates the replacement and says so; no resync runs.
	r.cloud.kill(second, "Server.SpotInstanceTermination")
	deliver(provider.Interruption{Kind: provider.StateChange, VMID: second, State: provider.StateTerminated, Detail: "EC2 Instance State-change Notification: terminated"})
	r.run(0)
	if d := r.get("train"); d.Status.VM == nil || d.Status.VM.ID == second || d.Status.Recoveries != 2 {
		t.Errorf("after the state change: %+v", d.Status)
	}
	// An event about a VM that is not ours is ignored.
	deliver(provider.Interruption{Kind: provider.InterruptionWarning, VMID: "i-stranger"})
	if n := r.c.queue.Len(); n != 0 {
		t.Errorf("an event about a stranger's VM queued %d deployments", n)
	}

	// The scope is no longer in use: its consumer stops, its queue goes.
	r.c.interruptions.sync(ctx, nil)
	select {
	case <-cloud.removed:
	case <-time.After(30 * time.Second):
		t.Fatal("the queue of a scope no longer in use was not removed")
	}
}
