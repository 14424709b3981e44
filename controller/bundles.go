package controller

import (
	"context"
	"errors"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// missingBundles names the deployment's bundles that the store does not
// hold now, for reconcile.Input: a replacement is not started for them.
// A store error counts as present; the launch then reports it.
func (c *Controller) missingBundles(ctx context.Context, d *manifests.Deployment) []string {
	var out []string
	for _, b := range d.Spec.Secrets {
		if _, err := c.store.Get(ctx, manifests.KindSecretBundle, b); errors.Is(err, state.ErrNotFound) {
			out = append(out, b)
		}
	}
	return out
}
