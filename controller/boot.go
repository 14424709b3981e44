package controller

import (
	"sync"
	"time"
)

// Boot back-off: while a VM boots, its SSH daemon refuses connections (or
// its console shows no host key yet) for tens of seconds. Those failures
// are expected, so they are not errors for the queue's back-off: the
// bootstrap is tried again after a delay that starts at BootRetryBase and
// doubles up to BootRetryMax, per VM (a new VM starts again from the base).
// The next try's time is kept here, so that nothing else — a resync, a
// bundle changing — makes the controller dial sooner.
const (
	BootRetryBase = 2 * time.Second
	BootRetryMax  = 30 * time.Second
)

// bootBackoff holds, per deployment uid, the VM being bootstrapped and
// when it may be tried next.
type bootBackoff struct {
	mu    sync.Mutex
	tries map[string]bootTries
}

type bootTries struct {
	vm    string
	n     int
	next  time.Time
	delay time.Duration
}

func newBootBackoff() *bootBackoff { return &bootBackoff{tries: map[string]bootTries{}} }

// wait is how long until vm of uid may be tried again (0: now).
func (b *bootBackoff) wait(uid, vm string, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.tries[uid]
	if !ok || t.vm != vm || !now.Before(t.next) {
		return 0
	}
	return t.next.Sub(now)
}

// failed records a failed try of vm and returns the delay before the next.
func (b *bootBackoff) failed(uid, vm string, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.tries[uid]
	if t.vm != vm {
		t = bootTries{vm: vm}
	}
	t.delay = min(BootRetryBase<<t.n, BootRetryMax)
	if t.n < 16 {
		t.n++
	}
	t.next = now.Add(t.delay)
	b.tries[uid] = t
	return t.delay
}

// forget drops uid's record: its VM is bootstrapped, or gone.
func (b *bootBackoff) forget(uid string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.tries, uid)
}
