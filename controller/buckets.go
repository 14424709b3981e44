package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/state"
)

// FlushTimeout bounds the last copy back of a VM's read-write buckets
// before it is terminated (the deployment is deleted) or taken back (an
// interruption warning gives two minutes).
const FlushTimeout = 60 * time.Second

// ExpiryWarning is how long before a bucket's session credentials expire
// an event says so: they are not refreshed while the VM runs.
const ExpiryWarning = time.Hour

// ReasonCredentialsExpiring is the event reason of that warning;
// ReasonBucketSync that of a sync's outcome.
const (
	ReasonCredentialsExpiring = "BucketCredentialsExpiring"
	ReasonBucketSync          = "BucketSync"
	ReasonBucketsFlushed      = "BucketsFlushed"
)

// withSessions mints the session credentials of the deployment's buckets
// in other accounts, anew for each VM, from those buckets' Credentials
// (provider.Federator). It returns the secret values, for the scrubber,
// and the expiry of each bucket's credentials by index.
func (c *Controller) withSessions(ctx context.Context, d *manifests.Deployment, req *provider.LaunchRequest) (map[string]string, map[int]time.Time, error) {
	secrets := map[string]string{}
	expiry := map[int]time.Time{}
	creds := c.newCredentials()
	for i, b := range d.Spec.Buckets {
		if !req.Buckets[i].OtherAccount {
			continue
		}
		obj, sec, err := creds.get(ctx, b.Credentials)
		if err != nil {
			return secrets, nil, fmt.Errorf("bucket %s: %w", b.URI, err)
		}
		prov, err := c.providers.For(ctx, obj, sec, "")
		if err != nil {
			return secrets, nil, fmt.Errorf("bucket %s: credentials %q: %w", b.URI, b.Credentials, err)
		}
		f, ok := prov.(provider.Federator)
		if !ok {
			return secrets, nil, fmt.Errorf("bucket %s: credentials %q cannot mint bucket credentials: %w", b.URI, b.Credentials, provider.ErrInvalid)
		}
		s, err := f.Federate(ctx, d.Metadata.Name, req.Buckets[i])
		if err != nil {
			return secrets, nil, err
		}
		key := fmt.Sprintf("bucket %d session", i)
		secrets[key+" key"], secrets[key+" secret"], secrets[key+" token"] = s.AccessKeyID, s.SecretAccessKey, s.SessionToken
		req.Buckets[i].Session = &s
		expiry[i] = s.Expires
	}
	return secrets, expiry, nil
}

// bucketStatus is status.buckets for a VM just bootstrapped: each
// bucket's first sync as the VM reports it, and the expiry of its
// session credentials.
func (p *pass) bucketStatus(ctx context.Context, vm provider.VM, req provider.LaunchRequest, expiry map[int]time.Time, scrub *scrubber) []manifests.BucketStatus {
	d := p.d
	if len(d.Spec.Buckets) == 0 {
		return nil
	}
	out := make([]manifests.BucketStatus, len(d.Spec.Buckets))
	for i, b := range d.Spec.Buckets {
		out[i] = manifests.BucketStatus{URI: b.URI, Path: b.Path}
		if t, ok := expiry[i]; ok {
			t := t.UTC()
			out[i].CredentialsExpireAt = &t
		}
	}
	bs, ok := p.prov.(provider.BucketSyncer)
	if !ok {
		return out
	}
	res, err := bs.BucketStatus(ctx, vm, req.Buckets)
	if err != nil {
		p.log.V(1).Info("bucket status unreadable", "vm", vm.ID, "error", scrub.Error(err).Error())
		return out
	}
	for _, r := range res {
		for i := range out {
			if out[i].Path != r.Path {
				continue
			}
			out[i].LastSync, out[i].Result, out[i].Message = r.At, manifests.SyncFailed, scrub.String(r.Message)
			if r.OK {
				out[i].Result, out[i].Message = manifests.SyncOK, ""
			}
		}
	}
	return out
}

// warnExpiring records, once per VM, that a bucket's session credentials
// expire within ExpiryWarning.
func (p *pass) warnExpiring(ctx context.Context) {
	now := p.c.clock.Now()
	for i := range p.st.Buckets {
		b := &p.st.Buckets[i]
		if b.CredentialsExpireAt == nil || b.ExpiryWarned || now.Before(b.CredentialsExpireAt.Add(-ExpiryWarning)) {
			continue
		}
		b.ExpiryWarned = true
		p.c.event(ctx, p.d, state.EventWarning, ReasonCredentialsExpiring,
			fmt.Sprintf("the credentials of bucket %s expire at %s and are not refreshed while the VM runs; `anycloud resubmit %s` mints new ones", b.URI, b.CredentialsExpireAt.Format(time.RFC3339), p.d.Metadata.Name))
	}
}

// flush copies the read-write buckets of vm back before it ends, within
// FlushTimeout, and says how it went. A failure does not hold the
// termination back.
func (c *Controller) flush(ctx context.Context, prov provider.Provider, d *manifests.Deployment, vm provider.VM, why string) {
	bs, ok := prov.(provider.BucketSyncer)
	if !ok || !hasReadWrite(d) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, FlushTimeout)
	defer cancel()
	req := launchRequest(d, vm.Attempt, nil)
	vm.Deployment, vm.UID = d.Metadata.Name, d.Metadata.UID
	log := logr.FromContextOrDiscard(ctx)
	if err := bs.FlushBuckets(ctx, vm, req.Buckets); err != nil {
		log.Error(err, "copy the read-write buckets back", "vm", vm.ID)
		c.event(ctx, d, state.EventWarning, ReasonBucketsFlushed, fmt.Sprintf("copy the read-write buckets of VM %s back %s: %v", vm.ID, why, err))
		return
	}
	log.Info("read-write buckets copied back", "vm", vm.ID)
	c.event(ctx, d, state.EventNormal, ReasonBucketsFlushed, fmt.Sprintf("copied the read-write buckets of VM %s back %s", vm.ID, why))
}

func hasReadWrite(d *manifests.Deployment) bool {
	for _, b := range d.Spec.Buckets {
		if b.ReadWrite() {
			return true
		}
	}
	return false
}

// bucketsLine is " (buckets: /data ok, /out failed)" for an event, or "".
func bucketsLine(st []manifests.BucketStatus) string {
	var parts []string
	for _, b := range st {
		r := b.Result
		if r == "" {
			r = "unknown"
		}
		parts = append(parts, b.Path+" "+r)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (buckets: " + strings.Join(parts, ", ") + ")"
}

// bucketReads holds, per deployment uid, when the VM's sync results are
// read next. A VM copies its read-write buckets back at their interval,
// long after its bootstrap read the first results; the controller reads
// them again at that pace (and no sooner: each read is an SSH session),
// so that status.buckets says how the last copy back went.
type bucketReads struct {
	mu   sync.Mutex
	next map[string]bucketRead
}

type bucketRead struct {
	vm string
	at time.Time
}

func newBucketReads() *bucketReads { return &bucketReads{next: map[string]bucketRead{}} }

// due reports whether vm of uid's results are to be read at now: never
// read (since the controller started), or its interval has passed.
func (b *bucketReads) due(uid, vm string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.next[uid]
	return !ok || r.vm != vm || !now.Before(r.at)
}

// read records that vm of uid's results were read, next at at.
func (b *bucketReads) read(uid, vm string, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.next[uid] = bucketRead{vm: vm, at: at}
}

// forget drops uid's record: the deployment is gone.
func (b *bucketReads) forget(uid string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.next, uid)
}

// copyBackInterval is the shortest interval of d's read-write buckets
// (0: it has none).
func copyBackInterval(d *manifests.Deployment) time.Duration {
	var every time.Duration
	for _, b := range d.Spec.Buckets {
		if b.ReadWrite() && (every == 0 || b.Interval() < every) {
			every = b.Interval()
		}
	}
	return every
}

// refreshBuckets reads again how the running VM's copies back went, at
// the pace of its read-write buckets, into status.buckets, with an event
// when a bucket's result changes (a copy back that starts failing is a
// warning: what the workload writes no longer leaves the VM). The
// messages are rclone's; rclone never sees the workload's environment,
// and its errors do not quote the session credentials it signs with.
func (p *pass) refreshBuckets(ctx context.Context, observed []provider.VM, needsBootstrap bool) {
	d, cur := p.d, p.st.VM
	every := copyBackInterval(d)
	if every == 0 || d.Metadata.DeletionTimestamp != nil || cur == nil || (needsBootstrap && !cur.Bootstrapped) || len(p.st.Buckets) != len(d.Spec.Buckets) {
		return
	}
	bs, ok := p.prov.(provider.BucketSyncer)
	if !ok {
		return
	}
	var vm provider.VM
	for _, o := range observed {
		if o.ID == cur.ID && o.State == provider.StateRunning {
			vm = o
		}
	}
	now := p.c.clock.Now()
	if vm.ID == "" || !p.c.buckets.due(d.Metadata.UID, vm.ID, now) {
		return
	}
	vm.Deployment, vm.UID = d.Metadata.Name, d.Metadata.UID
	req := launchRequest(d, vm.Attempt, nil)
	res, err := bs.BucketStatus(ctx, vm, req.Buckets)
	if err != nil {
		// Looked at again at the next resync, not at once: a VM that
		// does not answer is the reconcile's business, not this read's.
		p.log.V(1).Info("bucket status unreadable", "vm", vm.ID, "error", err.Error())
		p.c.buckets.read(d.Metadata.UID, vm.ID, now.Add(min(every, p.c.resync)))
		return
	}
	p.c.buckets.read(d.Metadata.UID, vm.ID, now.Add(every))
	st := slices.Clone(p.st.Buckets)
	for _, r := range res {
		for i := range st {
			b := &st[i]
			if b.Path != r.Path || !r.At.After(b.LastSync) {
				continue
			}
			was := b.Result
			b.LastSync, b.Result, b.Message = r.At, manifests.SyncFailed, r.Message
			if r.OK {
				b.Result, b.Message = manifests.SyncOK, ""
			}
			switch {
			case b.Result == manifests.SyncFailed && was != manifests.SyncFailed:
				p.c.event(ctx, d, state.EventWarning, ReasonBucketSync, fmt.Sprintf("copying %s back to %s failed on VM %s: %s", b.Path, b.URI, vm.ID, b.Message))
			case b.Result == manifests.SyncOK && was == manifests.SyncFailed:
				p.c.event(ctx, d, state.EventNormal, ReasonBucketSync, fmt.Sprintf("copying %s back to %s works again on VM %s", b.Path, b.URI, vm.ID))
			}
		}
	}
	p.st.Buckets = st
}
