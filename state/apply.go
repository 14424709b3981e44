package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/anycloud/anycloud/manifests"
)

// Apply: create or update a set of objects in one transaction, and prune
// what left an apply set.

// Apply implements Store.
func (s *core) Apply(ctx context.Context, writes []Write, opts ApplyOptions) ([]ApplyResult, error) {
	var results []ApplyResult
	errDryRun := errors.New("dry run")
	err := s.update(ctx, func(t *txn) error {
		// A backend may run this again after a conflict: start afresh.
		results = make([]ApplyResult, 0, len(writes))
		keep := map[manifests.ObjectRef]bool{}
		for i, w := range writes {
			r, err := t.apply(w, opts)
			if err != nil {
				return &ApplyError{Index: i, Err: err}
			}
			results = append(results, r)
			keep[manifests.ObjectRef{Kind: w.Object.GetKind(), Name: w.Object.GetMeta().Name}] = true
		}
		if opts.PruneSet != "" {
			pruned, err := t.prune(opts.PruneSet, keep)
			if err != nil {
				return err
			}
			results = append(results, pruned...)
		}
		if opts.DryRun {
			return errDryRun
		}
		return nil
	})
	if err != nil && !errors.Is(err, errDryRun) {
		return nil, err
	}
	return results, nil
}

func (t *txn) apply(w Write, opts ApplyOptions) (ApplyResult, error) {
	in := w.Object
	k, name := in.GetKind(), in.GetMeta().Name
	if msg := manifests.ValidateName(name); msg != "" {
		return ApplyResult{}, fmt.Errorf("%s metadata.name: %s: %w", k, msg, ErrInvalid)
	}
	if k == manifests.KindCredentials && name == manifests.LocalCredentials {
		return ApplyResult{}, fmt.Errorf("credentials %q: %w: it always selects the local Docker engine", name, ErrProtected)
	}
	existing, err := t.get(k, name)
	if errors.Is(err, ErrNotFound) {
		o, err := t.create(w)
		if err != nil {
			return ApplyResult{}, err
		}
		if err := t.checkReferences(o, opts); err != nil {
			return ApplyResult{}, err
		}
		res := ApplyResult{Ref: manifests.Ref(o), Action: ActionCreated, Generation: o.GetMeta().Generation}
		if opts.DryRun {
			res.Changes = changes(nil, o, false)
		}
		return res, nil
	}
	if err != nil {
		return ApplyResult{}, err
	}
	em := existing.GetMeta()
	if em.DeletionTimestamp != nil {
		return ApplyResult{}, fmt.Errorf("%s %q is %w (Terminating); wait until it is gone, then apply again", k, name, ErrTerminating)
	}
	next := manifests.DeepCopy(existing)
	nm := next.GetMeta()
	nm.Labels = maps.Clone(in.GetMeta().Labels)
	nm.Annotations = mergeAnnotations(em.Annotations, in.GetMeta().Annotations)
	setSpec(next, in)
	changed := !bytes.Equal(existing.SpecJSON(), next.SpecJSON())
	secretsChanged, err := t.writeSecrets(next, w.Secrets)
	if err != nil {
		return ApplyResult{}, err
	}
	if changed || secretsChanged {
		nm.Generation++
	}
	if !changed && !secretsChanged && maps.Equal(em.Labels, nm.Labels) && maps.Equal(em.Annotations, nm.Annotations) {
		return ApplyResult{Ref: manifests.Ref(existing), Action: ActionUnchanged, Generation: em.Generation, ApplySet: em.Annotations[manifests.AnnotationApplySet]}, nil
	}
	if d, ok := next.(*manifests.Deployment); ok {
		if err := t.checkReferences(d, opts); err != nil {
			return ApplyResult{}, err
		}
		if err := t.setReferences(name, nm.UID, existing.(*manifests.Deployment).References(), d.References()); err != nil {
			return ApplyResult{}, err
		}
	}
	if err := t.put(next, Modified); err != nil {
		return ApplyResult{}, err
	}
	res := ApplyResult{Ref: manifests.Ref(next), Action: ActionConfigured, Generation: nm.Generation, ApplySet: nm.Annotations[manifests.AnnotationApplySet]}
	if opts.DryRun {
		res.Changes = changes(existing, next, secretsChanged)
	}
	return res, nil
}

// create writes a new object with fresh system metadata.
func (t *txn) create(w Write) (manifests.Object, error) {
	in := w.Object
	o, err := manifests.New(in.GetKind())
	if err != nil {
		return nil, err
	}
	m := o.GetMeta()
	im := in.GetMeta()
	m.Name = im.Name
	m.Labels = maps.Clone(im.Labels)
	m.Annotations = maps.Clone(im.Annotations)
	m.UID = manifests.NewUID()
	m.CreationTimestamp = t.s.now().UTC().Truncate(time.Second)
	setSpec(o, in)
	// Generation is still 0 here: writeSecrets tells a new bundle (which
	// must bring values) from an existing one by it.
	if _, err := t.writeSecrets(o, w.Secrets); err != nil {
		return nil, err
	}
	m.Generation = 1
	if d, ok := o.(*manifests.Deployment); ok {
		d.Status.Phase = manifests.PhasePending
		if err := t.setReferences(m.Name, m.UID, nil, d.References()); err != nil {
			return nil, err
		}
	}
	return o, t.put(o, Added)
}

// setSpec copies the user-owned spec of in into o. Values that must not be
// stored (plaintext and box-sealed bundle values) are dropped: they reach
// the store only through Write.Secrets.
func setSpec(o, in manifests.Object) {
	switch o := o.(type) {
	case *manifests.Deployment:
		o.Spec = manifests.DeepCopy(in.(*manifests.Deployment)).Spec
	case *manifests.SecretBundle:
		o.Spec = manifests.SecretBundleSpec{FromEnv: slices.Clone(in.(*manifests.SecretBundle).Spec.FromEnv)}
	case *manifests.Credentials:
		o.Spec = manifests.DeepCopy(in.(*manifests.Credentials)).Spec
	}
}

// mergeAnnotations takes the user's annotations and keeps the system's
// (anycloud.dev/…) that the user did not set, such as the resubmit marker
// and the apply set.
//
// An imperative write (`secrets new`, `submit`, `credentials new`) to an
// object that an apply set holds keeps it in the set: the user rotated a
// value, say, and still expects the object to be managed from the source
// it came from, the next apply of which writes it again, and pruned when
// the source drops it. Silently taking it out of its set would leave it
// behind for ever. The API warns about it (ApplyResult.ApplySet). An
// apply set's write ends the imperative mark.
func mergeAnnotations(existing, in map[string]string) map[string]string {
	out := maps.Clone(in)
	for k, v := range existing {
		if k == manifests.AnnotationCreatedBy && in[manifests.AnnotationApplySet] != "" {
			continue
		}
		if strings.HasPrefix(k, "anycloud.dev/") {
			if _, set := in[k]; !set {
				if out == nil {
					out = map[string]string{}
				}
				out[k] = v
			}
		}
	}
	return out
}

// prune deletes, declaratively, every object of the apply set that keep
// does not name: deployments first, so that the bundles and credentials
// they release go in the same transaction when nothing else uses them.
func (t *txn) prune(set string, keep map[manifests.ObjectRef]bool) ([]ApplyResult, error) {
	var out []ApplyResult
	for i := len(manifests.Kinds) - 1; i >= 0; i-- {
		k := manifests.Kinds[i]
		objs, err := listObjects(t.tx, k)
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			m := o.GetMeta()
			if m.Annotations[manifests.AnnotationApplySet] != set || keep[manifests.ObjectRef{Kind: k, Name: m.Name}] {
				continue
			}
			if m.Annotations[manifests.AnnotationPrune] == manifests.PruneDisabled || m.DeletionTimestamp != nil {
				continue
			}
			if k == manifests.KindCredentials && m.Name == manifests.LocalCredentials {
				continue
			}
			res, err := t.delete(k, m.Name, DeleteOptions{Declarative: true})
			if err != nil {
				return nil, fmt.Errorf("prune %s %q: %w", k, m.Name, err)
			}
			out = append(out, ApplyResult{Ref: manifests.Ref(o), Action: ActionPruned, Generation: m.Generation, Terminating: !res.Deleted})
		}
	}
	return out, nil
}
