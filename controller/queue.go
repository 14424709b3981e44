package controller

import (
	"sync"
	"time"
)

// Clock is the controller's time: real in production, stepped by hand in
// tests.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f once d has passed and returns a function that
	// cancels it.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// RealClock is the wall clock.
type RealClock struct{}

// Now implements Clock.
func (RealClock) Now() time.Time { return time.Now() }

// AfterFunc implements Clock.
func (RealClock) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// Queue is a keyed work queue, as in client-go: a key is queued at most
// once however often it is added; a key being processed is not handed to a
// second worker, and if it is added meanwhile it is queued again when the
// first is done. Failed keys come back after a per-key exponential
// back-off, and all retries share a global token bucket, so a burst of
// failures cannot turn into a burst of cloud calls.
type Queue struct {
	clock Clock

	mu         sync.Mutex
	cond       *sync.Cond
	order      []string
	dirty      map[string]bool
	processing map[string]bool
	waiting    map[string]timer
	timerSeq   uint64
	failures   map[string]int
	shutdown   bool
	// queuedAt is when each ready key was queued, for the wait it had.
	queuedAt map[string]time.Time
	// waited, when set, is told how long each key waited to be handed out.
	waited func(time.Duration)

	// Per-key back-off: base << failures, at most max.
	base, max time.Duration
	// Global bucket: refill per second and burst.
	qps    float64
	burst  float64
	tokens float64
	last   time.Time
}

// QueueOptions tune a Queue; zero values take the defaults.
type QueueOptions struct {
	BaseDelay time.Duration // 50ms
	MaxDelay  time.Duration // 5m
	QPS       float64       // 10 retries per second overall
	Burst     int           // 100
}

// NewQueue returns an empty queue.
func NewQueue(clock Clock, o QueueOptions) *Queue {
	if o.BaseDelay == 0 {
		o.BaseDelay = 50 * time.Millisecond
	}
	if o.MaxDelay == 0 {
		o.MaxDelay = 5 * time.Minute
	}
	if o.QPS == 0 {
		o.QPS = 10
	}
	if o.Burst == 0 {
		o.Burst = 100
	}
	q := &Queue{
		clock: clock, dirty: map[string]bool{}, processing: map[string]bool{},
		waiting: map[string]timer{}, failures: map[string]int{}, queuedAt: map[string]time.Time{},
		base: o.BaseDelay, max: o.MaxDelay, qps: o.QPS, burst: float64(o.Burst), tokens: float64(o.Burst),
		last: clock.Now(),
	}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Add queues key now. A delayed add of the same key is cancelled.
func (q *Queue) Add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(key)
}

func (q *Queue) addLocked(key string) {
	if q.shutdown {
		return
	}
	if t, ok := q.waiting[key]; ok {
		t.stop()
		delete(q.waiting, key)
	}
	if q.dirty[key] {
		return
	}
	q.dirty[key] = true
	if q.processing[key] {
		return // queued again by Done
	}
	q.order = append(q.order, key)
	q.queuedAt[key] = q.clock.Now()
	q.cond.Signal()
}

// AddAfter queues key once d has passed, unless it is added sooner.
func (q *Queue) AddAfter(key string, d time.Duration) {
	if d <= 0 {
		q.Add(key)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shutdown || q.dirty[key] {
		return
	}
	if t, ok := q.waiting[key]; ok {
		t.stop()
	}
	q.timerSeq++
	id := q.timerSeq
	stop := q.clock.AfterFunc(d, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if t, ok := q.waiting[key]; !ok || t.id != id {
			return // cancelled or replaced
		}
		delete(q.waiting, key)
		q.addLocked(key)
	})
	q.waiting[key] = timer{id: id, stop: stop}
}

type timer struct {
	id   uint64
	stop func() bool
}

// AddRateLimited queues key after its back-off: the larger of its own
// exponential delay and the global bucket's.
func (q *Queue) AddRateLimited(key string) {
	q.mu.Lock()
	n := q.failures[key]
	q.failures[key] = n + 1
	d := q.base << n
	if d > q.max || d <= 0 || n > 30 {
		d = q.max
	}
	if bd := q.bucketDelayLocked(); bd > d {
		d = bd
	}
	q.mu.Unlock()
	q.AddAfter(key, d)
}

// bucketDelayLocked takes a token and returns how long the caller must
// wait for it.
func (q *Queue) bucketDelayLocked() time.Duration {
	now := q.clock.Now()
	q.tokens += now.Sub(q.last).Seconds() * q.qps
	if q.tokens > q.burst {
		q.tokens = q.burst
	}
	q.last = now
	q.tokens--
	if q.tokens >= 0 {
		return 0
	}
	return time.Duration(-q.tokens / q.qps * float64(time.Second))
}

// Failures returns how many times key has been retried since Forget.
func (q *Queue) Failures(key string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failures[key]
}

// Forget resets key's back-off, after a success.
func (q *Queue) Forget(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.failures, key)
}

// Get blocks until a key is ready or the queue shuts down.
func (q *Queue) Get() (string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.order) == 0 && !q.shutdown {
		q.cond.Wait()
	}
	return q.popLocked()
}

// TryGet returns a ready key without blocking; tests drive the queue
// synchronously with it.
func (q *Queue) TryGet() (string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.popLocked()
}

func (q *Queue) popLocked() (string, bool) {
	if len(q.order) == 0 {
		return "", false
	}
	key := q.order[0]
	q.order[0] = ""
	q.order = q.order[1:]
	q.processing[key] = true
	delete(q.dirty, key)
	if at, ok := q.queuedAt[key]; ok {
		delete(q.queuedAt, key)
		if q.waited != nil {
			q.waited(q.clock.Now().Sub(at))
		}
	}
	return key, true
}

// Done marks key processed; if it was added meanwhile it is queued again.
func (q *Queue) Done(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, key)
	if q.dirty[key] && !q.shutdown {
		q.order = append(q.order, key)
		q.queuedAt[key] = q.clock.Now()
		q.cond.Signal()
	}
}

// Len is the number of keys ready now.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.order)
}

// ShutDown wakes every Get; no key is handed out after it.
func (q *Queue) ShutDown() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.shutdown = true
	for k, t := range q.waiting {
		t.stop()
		delete(q.waiting, k)
	}
	q.order = nil
	clear(q.queuedAt)
	q.cond.Broadcast()
}
