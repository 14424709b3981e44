package controller

import (
	"context"
	"fmt"
	"strings"
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
