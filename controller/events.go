package controller

import (
	"context"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/reconcile"
	"github.com/anycloud/anycloud/state"
	"github.com/go-logr/logr"
)

func (c *Controller) recordEvents(ctx context.Context, d *manifests.Deployment, evs []reconcile.Event) {
	for _, e := range evs {
		c.event(ctx, d, e.Type, e.Reason, e.Message)
	}
}

func (c *Controller) event(ctx context.Context, d *manifests.Deployment, typ, reason, msg string) {
	if err := c.store.RecordEvent(ctx, manifests.Ref(d), state.Event{Type: typ, Reason: reason, Message: msg}); err != nil {
		logr.FromContextOrDiscard(ctx).Error(err, "record event", "reason", reason)
	}
}
