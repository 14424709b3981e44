package state_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// next receives one event, failing after a deadline.
func next(t *testing.T, ch <-chan state.WatchEvent) state.WatchEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no watch event within 5s")
	}
	return state.WatchEvent{}
}

// waitClosed waits for a channel to be closed, draining it.
func waitClosed(t *testing.T, ch <-chan state.WatchEvent) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("watch channel not closed within 5s")
		}
	}
}

func TestWatchSendsSnapshotThenChangesInOrder(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		s, _ := openStore(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		apply(t, s, state.Write{Object: deployment("b", manifests.LocalCredentials)}, state.Write{Object: deployment("a", manifests.LocalCredentials)})

		snapshot, ch, err := s.Watch(ctx, manifests.KindDeployment)
		if err != nil {
			t.Fatal(err)
		}
		if df := diff([]string{"a", "b"}, names(snapshot)); df != "" {
			t.Errorf("snapshot:%s", df)
		}

		// Changes of another kind are not sent on this channel.
		apply(t, s, bundleWrite("hf", map[string]string{"K": "v"}))
		applyObject(t, s, deployment("c", manifests.LocalCredentials))
		a := getDeployment(t, s, "a")
		a.Spec.Image = "ghcr.io/me/train:v2"
		if _, err := s.Update(ctx, a); err != nil {
			t.Fatal(err)
		}
		a = getDeployment(t, s, "a")
		a.Status.Phase = manifests.PhaseRunning
		if _, err := s.UpdateStatus(ctx, a); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Delete(ctx, manifests.KindDeployment, "b", state.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		// An unchanged apply sends nothing.
		applyObject(t, s, deployment("c", manifests.LocalCredentials))
		applyObject(t, s, deployment("d", manifests.LocalCredentials))

		type seen struct{ Type, Name, Image, Phase string }
		want := []seen{
			{state.Added, "c", "ghcr.io/me/train:latest", manifests.PhasePending},
			{state.Modified, "a", "ghcr.io/me/train:v2", manifests.PhasePending},
			{state.Modified, "a", "ghcr.io/me/train:v2", manifests.PhaseRunning},
			{state.Deleted, "b", "ghcr.io/me/train:latest", manifests.PhasePending},
			{state.Added, "d", "ghcr.io/me/train:latest", manifests.PhasePending},
		}
		var got []seen
		var lastRV uint64
		for range want {
			ev := next(t, ch)
			d, ok := ev.Object.(*manifests.Deployment)
			if !ok {
				t.Fatalf("event object is %T, want a Deployment", ev.Object)
			}
			got = append(got, seen{ev.Type, d.Metadata.Name, d.Spec.Image, d.Status.Phase})
			rv := mustRV(t, d)
			if rv <= lastRV {
				t.Errorf("event %s %s at resourceVersion %d, not after %d", ev.Type, d.Metadata.Name, rv, lastRV)
			}
			lastRV = rv
		}
		if df := diff(want, got); df != "" {
			t.Errorf("events:%s", df)
		}
		select {
		case ev := <-ch:
			t.Errorf("unexpected event %s %s", ev.Type, ev.Object.GetMeta().Name)
		default:
		}

		cancel()
		waitClosed(t, ch)
	})
}

// Watch events carry the phase; users are filled where they are shown
// (state.ShowUsers), never by the store's reads.
func TestWatchEventsCarryComputedStatus(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		s, _ := openStore(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		apply(t, s, bundleWrite("hf", map[string]string{"K": "v"}))
		_, ch, err := s.Watch(ctx, manifests.KindSecretBundle)
		if err != nil {
			t.Fatal(err)
		}
		applyObject(t, s, deployment("train", manifests.LocalCredentials, "hf"))
		if _, err := s.Delete(ctx, manifests.KindSecretBundle, "hf", state.DeleteOptions{Declarative: true}); err != nil {
			t.Fatal(err)
		}
		ev := next(t, ch)
		b := ev.Object.(*manifests.SecretBundle)
		if len(b.Status.UsedBy) != 0 {
			t.Fatalf("the event carries users %v: the store's reads must not scan its index", b.Status.UsedBy)
		}
		if err := state.ShowUsers(ctx, s, b); err != nil {
			t.Fatal(err)
		}
		if ev.Type != state.Modified || b.Status.Phase != manifests.PhaseTerminating || len(b.Status.UsedBy) != 1 || b.Status.UsedBy[0].Name != "train" {
			t.Errorf("event = %s phase %q usedBy %v, want MODIFIED Terminating used by train", ev.Type, b.Status.Phase, b.Status.UsedBy)
		}
	})
}

func TestWatchesEndWhenTheStoreCloses(t *testing.T) {
	home := t.TempDir()
	s, err := state.OpenBolt(home, state.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, ch, err := s.Watch(ctx, manifests.KindDeployment)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, ch)
	cancel() // closing again after the store did must not panic
}

func TestRecordEventCountsRepeats(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		clk := newClock()
		s := openStoreAt(t, t.TempDir(), state.BoltOptions{Now: clk.Now})
		ctx := context.Background()
		applyObject(t, s, deployment("train", manifests.LocalCredentials))
		ref := manifests.ObjectRef{Kind: manifests.KindDeployment, Name: "train"}
		record := func(typ, reason, msg string) {
			t.Helper()
			if err := s.RecordEvent(ctx, ref, state.Event{Type: typ, Reason: reason, Message: msg}); err != nil {
				t.Fatal(err)
			}
			clk.Advance(time.Second)
		}
		t0 := clk.Now()
		record(state.EventWarning, "SecretBundleNotFound", `bundle "hf" not found`)
		record(state.EventWarning, "SecretBundleNotFound", `bundle "hf" not found`)
		record(state.EventWarning, "SecretBundleNotFound", `bundle "hf" not found`)
		record(state.EventNormal, "Launching", "launching a VM")

		got, err := s.Events(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		want := []state.Event{
			{Type: state.EventWarning, Reason: "SecretBundleNotFound", Message: `bundle "hf" not found`, Count: 3, FirstSeen: t0, LastSeen: t0.Add(2 * time.Second)},
			{Type: state.EventNormal, Reason: "Launching", Message: "launching a VM", Count: 1, FirstSeen: t0.Add(3 * time.Second), LastSeen: t0.Add(3 * time.Second)},
		}
		if df := diff(want, got); df != "" {
			t.Errorf("events:%s", df)
		}

		// Another object's events are its own.
		if other, err := s.Events(ctx, manifests.ObjectRef{Kind: manifests.KindDeployment, Name: "eval"}); err != nil || len(other) != 0 {
			t.Errorf("events of eval = %v, %v; want none", other, err)
		}
	})
}

func TestRecordEventKeepsOnlyTheNewest(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		s, _ := openStore(t)
		ctx := context.Background()
		applyObject(t, s, deployment("train", manifests.LocalCredentials))
		ref := manifests.ObjectRef{Kind: manifests.KindDeployment, Name: "train"}
		const n = 120
		for i := range n {
			if err := s.RecordEvent(ctx, ref, state.Event{Type: state.EventNormal, Reason: "Step", Message: fmt.Sprintf("step %d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.Events(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 || len(got) >= n {
			t.Fatalf("kept %d of %d events, want a cap below %d", len(got), n, n)
		}
		for i, ev := range got {
			if want := fmt.Sprintf("step %d", n-len(got)+i); ev.Message != want {
				t.Fatalf("event %d = %q, want %q (the newest, oldest first)", i, ev.Message, want)
			}
		}
		t.Logf("kept %d events", len(got))
	})
}

func TestEventsAreRemovedWithTheirObject(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		tests := []struct {
			kind  manifests.Kind
			write state.Write
			opts  state.DeleteOptions
		}{
			{manifests.KindDeployment, state.Write{Object: deployment("x", manifests.LocalCredentials)}, state.DeleteOptions{}},
			{manifests.KindSecretBundle, bundleWrite("x", map[string]string{"K": "v"}), state.DeleteOptions{}},
			{manifests.KindCredentials, credentialsWrite("x", "secret"), state.DeleteOptions{Force: true}},
		}
		for _, tc := range tests {
			t.Run(string(tc.kind), func(t *testing.T) {
				s, _ := openStore(t)
				ctx := context.Background()
				apply(t, s, tc.write)
				ref := manifests.ObjectRef{Kind: tc.kind, Name: "x"}
				if err := s.RecordEvent(ctx, ref, state.Event{Type: state.EventNormal, Reason: "Created", Message: "made"}); err != nil {
					t.Fatal(err)
				}
				if evs, _ := s.Events(ctx, ref); len(evs) != 1 {
					t.Fatalf("events before delete = %v, want one", evs)
				}
				if _, err := s.Delete(ctx, tc.kind, "x", tc.opts); err != nil {
					t.Fatal(err)
				}
				if evs, err := s.Events(ctx, ref); err != nil || len(evs) != 0 {
					t.Errorf("events after delete = %v, %v; want none", evs, err)
				}
				// A new object of the same name starts with no history.
				apply(t, s, tc.write)
				if evs, _ := s.Events(ctx, ref); len(evs) != 0 {
					t.Errorf("new object inherited events %v", evs)
				}
			})
		}
	})
}

func TestWatcherThatFallsBehindIsClosedNotWaitedFor(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		s, _ := openStore(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		_, ch, err := s.Watch(ctx, manifests.KindDeployment)
		if err != nil {
			t.Fatal(err)
		}
		// One transaction with more changes than a watcher may lag behind.
		const n = 5000
		writes := make([]state.Write, n)
		for i := range writes {
			writes[i] = state.Write{Object: deployment(fmt.Sprintf("d-%04d", i), manifests.LocalCredentials)}
		}
		done := make(chan error, 1)
		go func() {
			_, err := s.Apply(ctx, writes, state.ApplyOptions{})
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Apply stalled behind a watcher that does not read")
		}
		// The watcher does not read until its buffer is full: then the
		// next event cannot be delivered and the watch must close (bbolt
		// publishes as it commits; etcd's watch forwards a little later,
		// and a reader that kept up would never fall behind).
		deadline := time.Now().Add(time.Minute)
		for len(ch) < cap(ch) {
			if time.Now().After(deadline) {
				t.Fatalf("the watcher's buffer holds %d of %d events a minute after the apply", len(ch), cap(ch))
			}
			time.Sleep(5 * time.Millisecond)
		}
		received := 0
		for range ch {
			received++
		}
		if received == 0 || received >= n {
			t.Errorf("watcher received %d of %d events before it was closed, want some but not all", received, n)
		}
		// Watching again gives a snapshot with everything.
		snapshot, _, err := s.Watch(ctx, manifests.KindDeployment)
		if err != nil {
			t.Fatal(err)
		}
		if len(snapshot) != n {
			t.Errorf("snapshot has %d deployments, want %d", len(snapshot), n)
		}
	})
}
