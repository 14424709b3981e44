package controller

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeClock is a Clock that only moves when Step is called. Callbacks run
// on the goroutine that calls Step, in the order they fall due.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	seq    int
	timers []*fakeTimer
	// lateStops makes stop report failure and leave the timer to run, as
	// a real timer does when it fires while being stopped.
	lateStops bool
}

type fakeTimer struct {
	at  time.Time
	seq int // breaks ties: earlier registration runs first
	f   func()
}

var _ Clock = (*fakeClock)(nil)

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// Now implements Clock.
func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc implements Clock. The returned stop reports whether it
// cancelled the timer before it ran.
func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &fakeTimer{at: c.now.Add(d), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.lateStops {
			return false
		}
		for i, u := range c.timers {
			if u == t {
				c.timers = append(c.timers[:i], c.timers[i+1:]...)
				return true
			}
		}
		return false
	}
}

// Step advances the clock by d, running every callback that falls due, in
// order of due time, with Now set to that time while it runs. Callbacks run
// without the clock's lock held, so they may use the clock themselves.
func (c *fakeClock) Step(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	for {
		sort.SliceStable(c.timers, func(i, j int) bool {
			a, b := c.timers[i], c.timers[j]
			if !a.at.Equal(b.at) {
				return a.at.Before(b.at)
			}
			return a.seq < b.seq
		})
		if len(c.timers) == 0 || c.timers[0].at.After(end) {
			break
		}
		t := c.timers[0]
		c.timers = c.timers[1:]
		if t.at.After(c.now) {
			c.now = t.at
		}
		c.mu.Unlock()
		t.f()
		c.mu.Lock()
	}
	c.now = end
	c.mu.Unlock()
}

// pending is the number of timers not yet run or stopped.
func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// drain takes every ready key, then marks them all done, and returns them
// in the order they were handed out.
func drain(q *Queue) []string {
	var keys []string
	for {
		k, ok := q.TryGet()
		if !ok {
			break
		}
		keys = append(keys, k)
	}
	for _, k := range keys {
		q.Done(k)
	}
	return keys
}

func newTestQueue(o QueueOptions) (*Queue, *fakeClock) {
	c := newFakeClock()
	return NewQueue(c, o), c
}

func TestQueueHandsOutKeysOnceInFIFOOrder(t *testing.T) {
	tests := []struct {
		name string
		adds []string
		want []string
	}{
		{name: "empty queue hands out nothing", adds: nil, want: nil},
		{name: "a key added three times is handed out once", adds: []string{"a", "a", "a"}, want: []string{"a"}},
		{name: "distinct keys come out in the order added", adds: []string{"c", "a", "b"}, want: []string{"c", "a", "b"}},
		{name: "a repeated key keeps its first place", adds: []string{"a", "b", "a", "c", "b"}, want: []string{"a", "b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, _ := newTestQueue(QueueOptions{})
			for _, k := range tt.adds {
				q.Add(k)
			}
			if got := q.Len(); got != len(tt.want) {
				t.Errorf("Len() = %d, want %d", got, len(tt.want))
			}
			if diff := cmp.Diff(tt.want, drain(q)); diff != "" {
				t.Errorf("keys handed out (-want +got):\n%s", diff)
			}
		})
	}
}

func TestQueueKeyBeingProcessedIsNotHandedToASecondWorker(t *testing.T) {
	q, _ := newTestQueue(QueueOptions{})
	q.Add("a")
	k, ok := q.TryGet()
	if !ok || k != "a" {
		t.Fatalf("TryGet() = %q, %v; want a, true", k, ok)
	}

	q.Add("a")
	q.Add("a")
	if k, ok := q.TryGet(); ok {
		t.Fatalf("TryGet() while a is processing = %q, want nothing", k)
	}
	if got := q.Len(); got != 0 {
		t.Errorf("Len() while a is processing and re-added = %d, want 0", got)
	}

	q.Done("a")
	if diff := cmp.Diff([]string{"a"}, drain(q)); diff != "" {
		t.Errorf("after Done (-want +got):\n%s", diff)
	}
	if got := drain(q); len(got) != 0 {
		t.Errorf("after the second Done, queue handed out %v, want nothing", got)
	}
}

func TestQueueDoneWithoutReAddDoesNotRequeue(t *testing.T) {
	q, _ := newTestQueue(QueueOptions{})
	q.Add("a")
	k, _ := q.TryGet()
	q.Done(k)
	if k, ok := q.TryGet(); ok {
		t.Errorf("TryGet() = %q after Done, want nothing", k)
	}
}

func TestQueueReAddedKeyGoesToTheBackAfterDone(t *testing.T) {
	q, _ := newTestQueue(QueueOptions{})
	q.Add("a")
	q.Add("b")
	k, _ := q.TryGet() // a
	q.Add("a")
	q.Add("c")
	q.Done(k)
	if diff := cmp.Diff([]string{"b", "c", "a"}, drain(q)); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
}

func TestQueueAddAfter(t *testing.T) {
	const delay = time.Second
	tests := []struct {
		name string
		// act runs after AddAfter("a", delay) at time zero.
		act func(q *Queue, c *fakeClock)
		// readyAt is how long after time zero a becomes ready.
		readyAt time.Duration
	}{
		{
			name:    "key becomes ready when its delay has passed",
			act:     func(*Queue, *fakeClock) {},
			readyAt: delay,
		},
		{
			name:    "Add before the delay makes the key ready now",
			act:     func(q *Queue, _ *fakeClock) { q.Add("a") },
			readyAt: 0,
		},
		{
			name:    "a second AddAfter with a longer delay replaces the first",
			act:     func(q *Queue, _ *fakeClock) { q.AddAfter("a", 3*delay) },
			readyAt: 3 * delay,
		},
		{
			name: "a second AddAfter with a shorter delay replaces the first",
			act: func(q *Queue, c *fakeClock) {
				c.Step(delay / 4)
				q.AddAfter("a", delay/4)
			},
			readyAt: delay / 2,
		},
		{
			name:    "AddAfter with no delay is an Add",
			act:     func(q *Queue, _ *fakeClock) { q.AddAfter("a", 0) },
			readyAt: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, c := newTestQueue(QueueOptions{})
			start := c.Now()
			q.AddAfter("a", delay)
			tt.act(q, c)

			if elapsed := c.Now().Sub(start); tt.readyAt > elapsed {
				if got := q.Len(); got != 0 {
					t.Fatalf("Len() = %d before the delay, want 0", got)
				}
				c.Step(tt.readyAt - elapsed - time.Nanosecond)
				if k, ok := q.TryGet(); ok {
					t.Fatalf("TryGet() = %q a nanosecond before it is due, want nothing", k)
				}
				c.Step(time.Nanosecond)
			}
			if diff := cmp.Diff([]string{"a"}, drain(q)); diff != "" {
				t.Fatalf("when due (-want +got):\n%s", diff)
			}
			if n := c.pending(); n != 0 {
				t.Errorf("%d timers still pending once the key is ready, want 0 (replaced timers must be stopped)", n)
			}

			// Whatever timers there were, nothing adds the key a second time.
			c.Step(10 * delay)
			if got := drain(q); len(got) != 0 {
				t.Errorf("later, queue handed out %v again, want nothing", got)
			}
		})
	}
}

func TestQueueTimerThatFiresDespiteStopDoesNotAddTheKey(t *testing.T) {
	tests := []struct {
		name string
		// act runs after AddAfter("a", time.Second).
		act func(q *Queue)
	}{
		{name: "replaced by a later AddAfter", act: func(q *Queue) { q.AddAfter("a", time.Hour) }},
		{name: "superseded by Add", act: func(q *Queue) {
			q.Add("a")
			k, _ := q.TryGet()
			q.Done(k)
		}},
		{name: "cancelled by ShutDown", act: func(q *Queue) { q.ShutDown() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, c := newTestQueue(QueueOptions{})
			c.lateStops = true
			q.AddAfter("a", time.Second)
			tt.act(q)
			c.Step(2 * time.Second)
			if got := drain(q); len(got) != 0 {
				t.Errorf("stale timer queued %v, want nothing", got)
			}
		})
	}
}

func TestQueueAddAfterOfAQueuedKeyIsIgnored(t *testing.T) {
	q, c := newTestQueue(QueueOptions{})
	q.Add("a")
	q.AddAfter("a", time.Second)
	if n := c.pending(); n != 0 {
		t.Errorf("AddAfter of a queued key started %d timers, want 0", n)
	}
	c.Step(time.Second)
	if diff := cmp.Diff([]string{"a"}, drain(q)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestQueueAddAfterWhileProcessingComesBackAfterDone(t *testing.T) {
	q, c := newTestQueue(QueueOptions{})
	q.Add("a")
	k, _ := q.TryGet()
	q.AddAfter(k, time.Second)
	c.Step(time.Second)
	if k, ok := q.TryGet(); ok {
		t.Fatalf("TryGet() = %q while a is still processing, want nothing", k)
	}
	q.Done(k)
	if diff := cmp.Diff([]string{"a"}, drain(q)); diff != "" {
		t.Errorf("after Done (-want +got):\n%s", diff)
	}
}

// stepUntilReady steps the clock to a nanosecond before want and checks
// key is not ready, then one more nanosecond and checks it is, once.
func stepUntilReady(t *testing.T, q *Queue, c *fakeClock, key string, want time.Duration) {
	t.Helper()
	c.Step(want - time.Nanosecond)
	if k, ok := q.TryGet(); ok {
		t.Fatalf("TryGet() = %q a nanosecond before %v, want nothing", k, want)
	}
	c.Step(time.Nanosecond)
	if diff := cmp.Diff([]string{key}, drain(q)); diff != "" {
		t.Fatalf("after %v (-want +got):\n%s", want, diff)
	}
}

func TestQueueAddRateLimitedBacksOffExponentiallyPerKey(t *testing.T) {
	q, c := newTestQueue(QueueOptions{BaseDelay: 10 * time.Millisecond, MaxDelay: 100 * time.Millisecond})
	wants := []time.Duration{
		10 * time.Millisecond,
		20 * time.Millisecond,
		40 * time.Millisecond,
		80 * time.Millisecond,
		100 * time.Millisecond, // capped
		100 * time.Millisecond,
	}
	for i, want := range wants {
		if got := q.Failures("a"); got != i {
			t.Fatalf("Failures(a) = %d before retry %d, want %d", got, i+1, i)
		}
		q.AddRateLimited("a")
		stepUntilReady(t, q, c, "a", want)
	}
	if got := q.Failures("a"); got != len(wants) {
		t.Errorf("Failures(a) = %d, want %d", got, len(wants))
	}
	if got := q.Failures("b"); got != 0 {
		t.Errorf("Failures(b) = %d for a key never retried, want 0", got)
	}

	// Another key has its own back-off.
	q.AddRateLimited("b")
	stepUntilReady(t, q, c, "b", 10*time.Millisecond)

	q.Forget("a")
	if got := q.Failures("a"); got != 0 {
		t.Errorf("Failures(a) = %d after Forget, want 0", got)
	}
	q.AddRateLimited("a")
	stepUntilReady(t, q, c, "a", 10*time.Millisecond)
}

func TestQueueAddRateLimitedNeverExceedsMaxDelay(t *testing.T) {
	const base, max = 50 * time.Millisecond, 5 * time.Minute
	tests := []struct {
		failures int
		want     time.Duration
	}{
		{failures: 0, want: base},
		{failures: 3, want: base << 3},
		{failures: 12, want: base << 12},
		{failures: 13, want: max}, // base<<13 is 6m49.6s
		{failures: 31, want: max},
		{failures: 40, want: max}, // base<<40 overflows
		{failures: 64, want: max}, // base<<64 is zero
		{failures: 100, want: max},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("after %d failures", tt.failures), func(t *testing.T) {
			q, c := newTestQueue(QueueOptions{BaseDelay: base, MaxDelay: max, Burst: 1000})
			// Each call replaces the previous one's timer; the last one counts.
			for range tt.failures + 1 {
				q.AddRateLimited("a")
			}
			if got := q.Failures("a"); got != tt.failures+1 {
				t.Fatalf("Failures(a) = %d, want %d", got, tt.failures+1)
			}
			stepUntilReady(t, q, c, "a", tt.want)
		})
	}
}

func TestQueueRetriesShareAGlobalTokenBucket(t *testing.T) {
	const base = 10 * time.Millisecond
	q, c := newTestQueue(QueueOptions{BaseDelay: base, QPS: 1, Burst: 2})

	// Two tokens: a and b wait only their own back-off; c waits for the
	// bucket to refill one token, a second.
	for _, k := range []string{"a", "b", "c"} {
		q.AddRateLimited(k)
	}
	c.Step(base)
	if diff := cmp.Diff([]string{"a", "b"}, drain(q)); diff != "" {
		t.Fatalf("after the base delay (-want +got):\n%s", diff)
	}
	stepUntilReady(t, q, c, "c", time.Second-base)

	// Time refills the bucket up to its burst, and no further.
	c.Step(time.Hour)
	for _, k := range []string{"d", "e", "f"} {
		q.AddRateLimited(k)
	}
	c.Step(base)
	if diff := cmp.Diff([]string{"d", "e"}, drain(q)); diff != "" {
		t.Fatalf("after a refill, after the base delay (-want +got):\n%s", diff)
	}
	stepUntilReady(t, q, c, "f", time.Second-base)
}

func TestQueueTokenBucketDelaysQueueUpBehindEachOther(t *testing.T) {
	q, c := newTestQueue(QueueOptions{BaseDelay: time.Millisecond, QPS: 2, Burst: 1})
	for _, k := range []string{"a", "b", "c", "d"} {
		q.AddRateLimited(k)
	}
	// a takes the one token; b, c and d wait 0.5s, 1s and 1.5s.
	stepUntilReady(t, q, c, "a", time.Millisecond)
	stepUntilReady(t, q, c, "b", 500*time.Millisecond-time.Millisecond)
	stepUntilReady(t, q, c, "c", 500*time.Millisecond)
	stepUntilReady(t, q, c, "d", 500*time.Millisecond)
}

func TestQueueLenCountsReadyKeysOnly(t *testing.T) {
	q, c := newTestQueue(QueueOptions{})
	check := func(when string, want int) {
		t.Helper()
		if got := q.Len(); got != want {
			t.Errorf("Len() %s = %d, want %d", when, got, want)
		}
	}
	check("when empty", 0)
	q.Add("a")
	q.Add("b")
	q.AddAfter("c", time.Second)
	q.AddRateLimited("d")
	check("with two ready and two waiting", 2)
	k, _ := q.TryGet()
	check("with one processing", 1)
	q.Add(k)
	check("with the processing key added again", 1)
	c.Step(time.Second)
	check("once the waiting keys are due", 3)
	q.Done(k)
	check("after Done of a re-added key", 4)
}

func TestQueueShutDown(t *testing.T) {
	q, c := newTestQueue(QueueOptions{})
	q.Add("a")
	q.AddAfter("b", time.Second)
	q.AddRateLimited("c")
	q.ShutDown()

	if k, ok := q.Get(); ok {
		t.Errorf("Get() after ShutDown = %q, true; want false", k)
	}
	if k, ok := q.TryGet(); ok {
		t.Errorf("TryGet() after ShutDown = %q, true; want false", k)
	}
	if n := c.pending(); n != 0 {
		t.Errorf("%d timers still pending after ShutDown, want 0", n)
	}
	c.Step(time.Hour)
	if got := q.Len(); got != 0 {
		t.Errorf("Len() after the delays passed = %d, want 0", got)
	}
	q.Add("d")
	q.AddAfter("e", time.Second)
	q.AddRateLimited("f")
	c.Step(time.Hour)
	if got := q.Len(); got != 0 {
		t.Errorf("Len() after adds following ShutDown = %d, want 0", got)
	}
	if k, ok := q.Get(); ok {
		t.Errorf("Get() after adds following ShutDown = %q, true; want false", k)
	}
}

func TestQueueShutDownDuringProcessingDoesNotHandOutTheKeyAgain(t *testing.T) {
	q, _ := newTestQueue(QueueOptions{})
	q.Add("a")
	k, _ := q.TryGet()
	q.Add(k) // would come back after Done
	q.ShutDown()
	q.Done(k)
	if got := q.Len(); got != 0 {
		t.Errorf("Len() = %d, want 0", got)
	}
	if k, ok := q.Get(); ok {
		t.Errorf("Get() = %q, true after ShutDown; want false", k)
	}
}

// getBlocked calls Get on another goroutine, waits until that goroutine is
// blocked in it, and returns where its result will arrive. It must run in
// a synctest bubble.
func getBlocked(t *testing.T, q *Queue) <-chan string {
	t.Helper()
	ch := make(chan string, 1)
	go func() {
		k, ok := q.Get()
		if !ok {
			k = "<shut down>"
		}
		ch <- k
	}()
	synctest.Wait() // Get is now waiting on the queue's condition
	select {
	case k := <-ch:
		t.Fatalf("Get returned %q on an empty queue, want it to block", k)
	default:
	}
	return ch
}

// receive fails the test if nothing arrives within a few seconds; the
// timeout only guards against a hang (and in a bubble costs no real time).
func receive(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case k := <-ch:
		return k
	case <-time.After(5 * time.Second):
		t.Fatal("Get still blocked after 5s")
		return ""
	}
}

func TestQueueShutDownWakesABlockedGet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, _ := newTestQueue(QueueOptions{})
		ch := getBlocked(t, q)
		q.ShutDown()
		if got := receive(t, ch); got != "<shut down>" {
			t.Errorf("blocked Get returned %q, want false", got)
		}
	})
}

func TestQueueDelayedAddWakesABlockedGet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, c := newTestQueue(QueueOptions{})
		ch := getBlocked(t, q)
		q.AddAfter("a", time.Second)
		c.Step(time.Second)
		if got := receive(t, ch); got != "a" {
			t.Errorf("blocked Get returned %q, want a", got)
		}
		q.Done("a")
		q.ShutDown()
	})
}
