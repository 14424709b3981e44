package aws

import "golang.org/x/time/rate"

// Limits are EC2's published per-account, per-region request buckets
// (DESIGN §7) as token buckets (golang.org/x/time/rate): describe calls,
// RunInstances, and other mutating calls, plus SSM's GetParameter. A call
// waits for a token, so the provider never exceeds the account's budget
// instead of discovering it through RequestLimitExceeded. Limits outlive
// a provider: credentials that are edited get a new client but keep
// their buckets (Options.Limits).
type Limits struct {
	describe, run, mutate, ssm, sqs, iam *rate.Limiter
}

// NewLimits returns full buckets: describe 100 refilled 20/s, RunInstances
// 5 refilled 2/s, other mutating calls 50 refilled 5/s, SSM 40/s, SQS
// 100/s, IAM 10/s (far under its quota: one consumer long-polls).
func NewLimits() *Limits {
	return &Limits{
		describe: rate.NewLimiter(20, 100),
		run:      rate.NewLimiter(2, 5),
		mutate:   rate.NewLimiter(5, 50),
		ssm:      rate.NewLimiter(40, 40),
		sqs:      rate.NewLimiter(100, 100),
		iam:      rate.NewLimiter(10, 20),
	}
}
