package aws

import (
	"context"
	"sync"
	"time"
)

// bucket is a token bucket as EC2 meters API calls: a capacity and a
// refill rate per second. Wait blocks until a token is free, so the
// provider never exceeds the account's budget instead of discovering it
// through RequestLimitExceeded.
type bucket struct {
	mu       sync.Mutex
	capacity float64
	refill   float64 // tokens per second
	tokens   float64
	last     time.Time
}

func newBucket(capacity, refill float64) *bucket {
	return &bucket{capacity: capacity, refill: refill, tokens: capacity, last: time.Now()}
}

// Wait takes a token, waiting for one if the bucket is empty.
func (b *bucket) Wait(ctx context.Context) error {
	for {
		b.mu.Lock()
		now := time.Now()
		b.tokens = min(b.capacity, b.tokens+now.Sub(b.last).Seconds()*b.refill)
		b.last = now
		if b.tokens >= 1 {
			b.tokens--
			b.mu.Unlock()
			return nil
		}
		wait := time.Duration((1 - b.tokens) / b.refill * float64(time.Second))
		b.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// limits are EC2's published per-account, per-region request buckets
// (DESIGN §7): describe calls, RunInstances, and other mutating calls.
type limits struct {
	describe, run, mutate *bucket
	// ssm is SSM's GetParameter budget (40 per second), a service of
	// its own.
	ssm *bucket
}

func newLimits() *limits {
	return &limits{
		describe: newBucket(100, 20),
		run:      newBucket(5, 2),
		mutate:   newBucket(50, 5),
		ssm:      newBucket(40, 40),
	}
}
