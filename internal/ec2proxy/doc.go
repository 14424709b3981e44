// Package ec2proxy is a reverse proxy for tests that stands between an EC2
// client and moto_server and makes moto behave more like EC2 under load
// and failure.
//
// There are only a few things in ec2proxy: the Proxy, the Action it
// counts, the Fault it injects and the ClientToken it remembers.
//
// A Proxy listens on a free port of 127.0.0.1; point a client's endpoint
// (aws-sdk-go-v2's BaseEndpoint, the CLI's --endpoint-url) at its URL and
// it forwards to the target, a moto_server. EC2 speaks the Query protocol:
// every request is a form whose Action parameter names the operation
// ("RunInstances", "DescribeInstances"). The proxy counts requests by
// Action as they arrive (Count, Counts), separately counts those it passed
// on to the target (Forwarded), and keeps every request body (Bodies,
// Seen) so a test can prove that a secret value never left the process.
//
// A Fault is what the proxy does to a request instead of plainly
// forwarding it: Throttle (400 RequestLimitExceeded), Unavailable (503
// Unavailable), InternalError (500 InternalError), Latency(d) (forward
// after d), DropRequest (close the connection without forwarding) and
// DropResponse (forward, so the call takes effect at the target, then close
// the connection without answering). Inject queues faults for an action;
// each matching request consumes one, in order, and once the queue is
// empty requests pass normally. InjectEvery and InjectRandom add standing
// rules for every nth request or a seeded fraction of them.
//
// moto ignores ClientToken; EC2 does not, and a launch that is retried
// after a lost answer relies on it. The proxy therefore remembers, per
// region and ClientToken, the first successful RunInstances answer and
// replays it to later RunInstances with the same token without
// forwarding them, even when the first answer was dropped on the way back.
// As EC2 does, it answers a token reused with different parameters with
// IdempotentParameterMismatch (parameters are compared as a whole, sorted,
// after removing the presigning ones: X-Amz-*, Signature*, AWSAccessKeyId,
// Timestamp, Expires), and a token whose instances have since terminated
// or vanished with IdempotentInstanceTerminated (it asks the target with
// a DescribeInstances of its own, which is not counted).
//
// EmulateInstances hands the proxy a VM emulator's view of the instances
// (package cloudemu): the proxy then replaces the addresses moto invents
// (public addresses that belong to strangers) by the loopback address of
// each emulated VM, or removes them while there is none, and answers
// GetConsoleOutput with the VM's real console.
//
// Reset clears the counts and bodies; faults, rules and remembered tokens
// stay. Every method is safe for concurrent use.
package ec2proxy
