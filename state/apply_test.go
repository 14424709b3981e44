package state_test

import (
	"context"
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

var uidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestApplyCreateSetsSystemMetadata(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		clk := newClock()
		s := openStoreAt(t, t.TempDir(), state.BoltOptions{Now: clk.Now})
		ctx := context.Background()

		in := deployment("train", manifests.LocalCredentials)
		in.Metadata.Labels = map[string]string{"team": "ml"}
		// System fields in the input are not the user's to set.
		forged := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
		in.Metadata.UID = "forged-uid"
		in.Metadata.ResourceVersion = "999"
		in.Metadata.Generation = 7
		in.Metadata.CreationTimestamp = forged
		in.Metadata.DeletionTimestamp = &forged
		in.Metadata.Finalizers = []string{manifests.FinalizerVM}
		in.Status.Phase = manifests.PhaseRunning

		// The plan first: a dry run lists the fields a create sets.
		plan, err := s.Apply(ctx, []state.Write{{Object: in}}, state.ApplyOptions{DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.Apply(ctx, []state.Write{{Object: in}}, state.ApplyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		d := getDeployment(t, s, "train")
		m := d.Metadata
		if !uidRE.MatchString(m.UID) {
			t.Errorf("uid = %q, want a random (version 4) UUID", m.UID)
		}
		if m.ResourceVersion == "" || m.ResourceVersion == "999" {
			t.Errorf("resourceVersion = %q, want one the store assigned", m.ResourceVersion)
		}
		if m.Generation != 1 {
			t.Errorf("generation = %d, want 1", m.Generation)
		}
		if want := clk.Now(); !m.CreationTimestamp.Equal(want) {
			t.Errorf("creationTimestamp = %v, want %v", m.CreationTimestamp, want)
		}
		if m.DeletionTimestamp != nil || m.Finalizers != nil {
			t.Errorf("deletionTimestamp = %v, finalizers = %v: taken from the input, want neither", m.DeletionTimestamp, m.Finalizers)
		}
		if d.Status.Phase != manifests.PhasePending {
			t.Errorf("status.phase = %q, want %q", d.Status.Phase, manifests.PhasePending)
		}
		if df := diff(map[string]string{"team": "ml"}, m.Labels); df != "" {
			t.Errorf("labels:%s", df)
		}
		if df := diff(in.Spec, d.Spec); df != "" {
			t.Errorf("spec:%s", df)
		}
		wantRes := []state.ApplyResult{{
			Ref:        manifests.ObjectRef{Kind: manifests.KindDeployment, Name: "train", UID: m.UID},
			Action:     state.ActionCreated,
			Generation: 1,
		}}
		if df := diff(wantRes, res); df != "" {
			t.Errorf("Apply results:%s", df)
		}
		wantPlan := []state.Change{
			{Path: "metadata.labels.team", New: "ml"},
			{Path: "spec.command[0]", New: "python"},
			{Path: "spec.command[1]", New: "train.py"},
			{Path: "spec.credentials", New: "local"},
			{Path: "spec.image", New: "ghcr.io/me/train:latest"},
		}
		if len(plan) != 1 || plan[0].Action != state.ActionCreated {
			t.Fatalf("dry run: %+v", plan)
		}
		if df := diff(wantPlan, plan[0].Changes); df != "" {
			t.Errorf("dry-run changes:%s", df)
		}

		// A second object gets its own uid and a later resourceVersion.
		applyObject(t, s, deployment("eval", manifests.LocalCredentials))
		other := getDeployment(t, s, "eval")
		if other.Metadata.UID == m.UID {
			t.Errorf("two objects share uid %s", m.UID)
		}
		if other.Metadata.ResourceVersion == m.ResourceVersion {
			t.Errorf("two writes share resourceVersion %s", m.ResourceVersion)
		}
	})
}

func TestApplyDeploymentActionAndGeneration(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		tests := []struct {
			name       string
			change     func(d *manifests.Deployment)
			wantAction string
			wantGen    int64
		}{
			{"identical", func(d *manifests.Deployment) {}, state.ActionUnchanged, 1},
			{"image", func(d *manifests.Deployment) { d.Spec.Image = "ghcr.io/me/train:v2" }, state.ActionConfigured, 2},
			{"env", func(d *manifests.Deployment) { d.Spec.Env = map[string]string{"EPOCHS": "3"} }, state.ActionConfigured, 2},
			{"secrets", func(d *manifests.Deployment) { d.Spec.Secrets = []string{"hf"} }, state.ActionConfigured, 2},
			{"spot", func(d *manifests.Deployment) { d.Spec.Spot = manifests.SpotSpec{Enabled: true} }, state.ActionConfigured, 2},
			{"labels only", func(d *manifests.Deployment) { d.Metadata.Labels = map[string]string{"team": "ml"} }, state.ActionConfigured, 1},
			{"annotations only", func(d *manifests.Deployment) { d.Metadata.Annotations = map[string]string{"note": "x"} }, state.ActionConfigured, 1},
			{"status only (ignored)", func(d *manifests.Deployment) { d.Status.Phase = manifests.PhaseFailed }, state.ActionUnchanged, 1},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				s, _ := openStore(t)
				applyObject(t, s, deployment("train", manifests.LocalCredentials))
				before := getDeployment(t, s, "train")

				in := deployment("train", manifests.LocalCredentials)
				tc.change(in)
				res := applyObject(t, s, in)
				if res.Action != tc.wantAction || res.Generation != tc.wantGen {
					t.Errorf("Apply = %s generation %d, want %s generation %d", res.Action, res.Generation, tc.wantAction, tc.wantGen)
				}
				after := getDeployment(t, s, "train")
				if after.Metadata.Generation != tc.wantGen {
					t.Errorf("stored generation = %d, want %d", after.Metadata.Generation, tc.wantGen)
				}
				rvChanged := after.Metadata.ResourceVersion != before.Metadata.ResourceVersion
				if wantChanged := tc.wantAction != state.ActionUnchanged; rvChanged != wantChanged {
					t.Errorf("resourceVersion %s → %s: changed = %v, want %v", before.Metadata.ResourceVersion, after.Metadata.ResourceVersion, rvChanged, wantChanged)
				}
				if after.Metadata.UID != before.Metadata.UID || !after.Metadata.CreationTimestamp.Equal(before.Metadata.CreationTimestamp) {
					t.Errorf("uid or creationTimestamp changed by an update")
				}
				if after.Status.Phase != manifests.PhasePending {
					t.Errorf("status.phase = %q: apply changed the status", after.Status.Phase)
				}
			})
		}
	})
}

func TestApplyBundleActionAndGeneration(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		initial := map[string]string{"HF_TOKEN": "hf-1", "WANDB_API_KEY": "wb-1"}
		tests := []struct {
			name       string
			labels     map[string]string
			values     map[string]string
			wantAction string
			wantGen    int64
			wantValues map[string]string
		}{
			{"same values", nil, map[string]string{"HF_TOKEN": "hf-1", "WANDB_API_KEY": "wb-1"}, state.ActionUnchanged, 1, initial},
			{"nil values keep the stored ones", nil, nil, state.ActionUnchanged, 1, initial},
			{"changed value", nil, map[string]string{"HF_TOKEN": "hf-2", "WANDB_API_KEY": "wb-1"}, state.ActionConfigured, 2, map[string]string{"HF_TOKEN": "hf-2", "WANDB_API_KEY": "wb-1"}},
			{"key removed", nil, map[string]string{"HF_TOKEN": "hf-1"}, state.ActionConfigured, 2, map[string]string{"HF_TOKEN": "hf-1"}},
			{"key added", nil, map[string]string{"HF_TOKEN": "hf-1", "WANDB_API_KEY": "wb-1", "X": "y"}, state.ActionConfigured, 2, map[string]string{"HF_TOKEN": "hf-1", "WANDB_API_KEY": "wb-1", "X": "y"}},
			{"labels only", map[string]string{"team": "ml"}, initial, state.ActionConfigured, 1, initial},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				s, _ := openStore(t)
				ctx := context.Background()
				apply(t, s, bundleWrite("hf", initial))
				before := getBundle(t, s, "hf")

				b := bundle("hf")
				b.Metadata.Labels = tc.labels
				res := apply(t, s, state.Write{Object: b, Secrets: tc.values})[0]
				if res.Action != tc.wantAction || res.Generation != tc.wantGen {
					t.Errorf("Apply = %s generation %d, want %s generation %d", res.Action, res.Generation, tc.wantAction, tc.wantGen)
				}
				after := getBundle(t, s, "hf")
				rvChanged := after.Metadata.ResourceVersion != before.Metadata.ResourceVersion
				if wantChanged := tc.wantAction != state.ActionUnchanged; rvChanged != wantChanged {
					t.Errorf("resourceVersion changed = %v, want %v", rvChanged, wantChanged)
				}
				values, gen, err := s.OpenSecrets(ctx, manifests.KindSecretBundle, "hf")
				if err != nil {
					t.Fatal(err)
				}
				if gen != tc.wantGen {
					t.Errorf("OpenSecrets generation = %d, want %d", gen, tc.wantGen)
				}
				if df := diff(tc.wantValues, values); df != "" {
					t.Errorf("OpenSecrets values:%s", df)
				}
				if df := diff(sortedKeys(tc.wantValues), after.Status.Keys); df != "" {
					t.Errorf("status.keys:%s", df)
				}
			})
		}
	})
}

func TestApplyKeepsSystemAnnotationsTheUserDidNotSet(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		s, _ := openStore(t)
		ctx := context.Background()
		applyObject(t, s, deployment("train", manifests.LocalCredentials))
		d := getDeployment(t, s, "train")
		d.Metadata.Annotations = map[string]string{manifests.AnnotationRestartedAt: "2025-03-01T12:00:00Z"}
		if _, err := s.Update(ctx, d); err != nil {
			t.Fatal(err)
		}

		// Re-applying the manifest, which does not carry the resubmit marker,
		// neither drops it nor counts as a change.
		res := applyObject(t, s, deployment("train", manifests.LocalCredentials))
		if res.Action != state.ActionUnchanged {
			t.Errorf("re-apply = %s, want %s", res.Action, state.ActionUnchanged)
		}
		in := deployment("train", manifests.LocalCredentials)
		in.Metadata.Annotations = map[string]string{"note": "hello"}
		applyObject(t, s, in)
		want := map[string]string{manifests.AnnotationRestartedAt: "2025-03-01T12:00:00Z", "note": "hello"}
		if df := diff(want, getDeployment(t, s, "train").Metadata.Annotations); df != "" {
			t.Errorf("annotations:%s", df)
		}
	})
}

func TestApplyWithRequireReferencesAcceptsCredentialsFromTheSameBatch(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		s, _ := openStore(t)
		writes := []state.Write{
			credentialsWrite("my-aws", "secret"),
			{Object: deployment("train", "my-aws")},
		}
		res, err := s.Apply(context.Background(), writes, state.ApplyOptions{RequireReferences: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 2 || res[1].Action != state.ActionCreated {
			t.Errorf("results = %+v, want both created", res)
		}
	})
}

func TestApplyIsAllOrNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		tests := []struct {
			name    string
			opts    state.ApplyOptions
			last    state.Write
			wantErr error
		}{
			{
				name:    "deployment whose credentials do not exist",
				opts:    state.ApplyOptions{RequireReferences: true},
				last:    state.Write{Object: deployment("late", "missing", "hf")},
				wantErr: state.ErrInvalid,
			},
			{
				name:    "bundle created without values",
				last:    state.Write{Object: bundle("empty")},
				wantErr: state.ErrInvalid,
			},
			{
				name:    "credentials with an access key id but no secret",
				last:    state.Write{Object: awsCredentials("nokey")},
				wantErr: state.ErrInvalid,
			},
			{
				name:    "secret values on a deployment",
				last:    state.Write{Object: deployment("late", manifests.LocalCredentials), Secrets: map[string]string{"A": "b"}},
				wantErr: state.ErrInvalid,
			},
			{
				name:    "invalid name",
				last:    state.Write{Object: deployment("Not_A_Name", manifests.LocalCredentials)},
				wantErr: state.ErrInvalid,
			},
			{
				name:    "the built-in local credentials",
				last:    state.Write{Object: &manifests.Credentials{TypeMeta: typeMeta(manifests.KindCredentials), Metadata: manifests.ObjectMeta{Name: manifests.LocalCredentials}, Spec: manifests.CredentialsSpec{Provider: manifests.ProviderLocal}}},
				wantErr: state.ErrProtected,
			},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				s, _ := openStore(t)
				ctx := context.Background()
				apply(t, s, bundleWrite("hf", map[string]string{"HF_TOKEN": "old"}))
				applyObject(t, s, deployment("existing", manifests.LocalCredentials))
				rvBefore := listRV(t, s)
				_, watch, err := s.Watch(ctx, manifests.KindSecretBundle)
				if err != nil {
					t.Fatal(err)
				}

				writes := []state.Write{
					bundleWrite("hf", map[string]string{"HF_TOKEN": "new"}), // update
					bundleWrite("wandb", map[string]string{"WANDB_API_KEY": "w"}),
					credentialsWrite("my-aws", "secret"),
					{Object: deployment("train", "my-aws", "hf", "wandb")},
					{Object: deployment("existing", manifests.LocalCredentials, "hf")}, // update
					tc.last,
				}
				res, err := s.Apply(ctx, writes, tc.opts)
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Apply error = %v, want %v", err, tc.wantErr)
				}
				var applyErr *state.ApplyError
				if !errors.As(err, &applyErr) || applyErr.Index != len(writes)-1 {
					t.Errorf("Apply error %v does not name the failing write, index %d", err, len(writes)-1)
				}
				if res != nil {
					t.Errorf("results = %+v, want none on error", res)
				}

				if got, want := listNames(t, s, manifests.KindSecretBundle), []string{"hf"}; diff(want, got) != "" {
					t.Errorf("bundles after failed apply:%s", diff(want, got))
				}
				if got, want := listNames(t, s, manifests.KindCredentials), []string{manifests.LocalCredentials}; diff(want, got) != "" {
					t.Errorf("credentials after failed apply:%s", diff(want, got))
				}
				if got, want := listNames(t, s, manifests.KindDeployment), []string{"existing"}; diff(want, got) != "" {
					t.Errorf("deployments after failed apply:%s", diff(want, got))
				}
				if d := getDeployment(t, s, "existing"); d.Metadata.Generation != 1 || d.Spec.Secrets != nil {
					t.Errorf("existing deployment was changed: generation %d, secrets %v", d.Metadata.Generation, d.Spec.Secrets)
				}
				values, gen, err := s.OpenSecrets(ctx, manifests.KindSecretBundle, "hf")
				if err != nil {
					t.Fatal(err)
				}
				if values["HF_TOKEN"] != "old" || gen != 1 {
					t.Errorf("bundle hf = %v generation %d, want the old value at generation 1", values, gen)
				}
				for _, k := range []manifests.Kind{manifests.KindSecretBundle, manifests.KindCredentials} {
					for _, name := range []string{"hf", "wandb", "my-aws"} {
						users, err := s.Users(ctx, k, name)
						if err != nil || len(users) != 0 {
							t.Errorf("Users(%s %s) = %v, %v; want none", k, name, users, err)
						}
					}
				}
				if _, _, err := s.OpenSecrets(ctx, manifests.KindCredentials, "my-aws"); !isNotFound(err) {
					t.Errorf("OpenSecrets(my-aws) error = %v, want not found", err)
				}
				if rv := listRV(t, s); rv != rvBefore {
					t.Errorf("store resourceVersion %s → %s after a failed apply", rvBefore, rv)
				}
				select {
				case ev := <-watch:
					t.Errorf("watch saw %s %s after a failed apply", ev.Type, ev.Object.GetMeta().Name)
				default:
				}
			})
		}
	})
}

func TestApplyDryRunWritesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		s, _ := openStore(t)
		ctx := context.Background()
		apply(t, s, bundleWrite("hf", map[string]string{"HF_TOKEN": "old"}))
		applyObject(t, s, deployment("existing", manifests.LocalCredentials))
		rvBefore := listRV(t, s)
		_, watch, err := s.Watch(ctx, manifests.KindDeployment)
		if err != nil {
			t.Fatal(err)
		}

		writes := []state.Write{
			bundleWrite("hf", map[string]string{"HF_TOKEN": "new"}),
			credentialsWrite("my-aws", "secret"),
			{Object: deployment("train", "my-aws", "hf")},
			{Object: deployment("existing", manifests.LocalCredentials)},
		}
		res, err := s.Apply(ctx, writes, state.ApplyOptions{DryRun: true, RequireReferences: true})
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			Ref    manifests.ObjectRef
			Action string
			Gen    int64
		}
		var got []result
		for _, r := range res {
			if r.Ref.UID == "" {
				t.Errorf("dry-run result for %s has no uid", r.Ref.Name)
			}
			got = append(got, result{manifests.ObjectRef{Kind: r.Ref.Kind, Name: r.Ref.Name}, r.Action, r.Generation})
		}
		want := []result{
			{manifests.ObjectRef{Kind: manifests.KindSecretBundle, Name: "hf"}, state.ActionConfigured, 2},
			{manifests.ObjectRef{Kind: manifests.KindCredentials, Name: "my-aws"}, state.ActionCreated, 1},
			{manifests.ObjectRef{Kind: manifests.KindDeployment, Name: "train"}, state.ActionCreated, 1},
			{manifests.ObjectRef{Kind: manifests.KindDeployment, Name: "existing"}, state.ActionUnchanged, 1},
		}
		if df := diff(want, got); df != "" {
			t.Errorf("dry-run results:%s", df)
		}

		if rv := listRV(t, s); rv != rvBefore {
			t.Errorf("store resourceVersion %s → %s after a dry run", rvBefore, rv)
		}
		if exists(t, s, manifests.KindDeployment, "train") || exists(t, s, manifests.KindCredentials, "my-aws") {
			t.Errorf("dry run created objects")
		}
		values, gen, err := s.OpenSecrets(ctx, manifests.KindSecretBundle, "hf")
		if err != nil {
			t.Fatal(err)
		}
		if values["HF_TOKEN"] != "old" || gen != 1 {
			t.Errorf("bundle hf = %v generation %d after a dry run, want the old value at generation 1", values, gen)
		}
		if users, _ := s.Users(ctx, manifests.KindSecretBundle, "hf"); len(users) != 0 {
			t.Errorf("dry run recorded users %v", users)
		}
		select {
		case ev := <-watch:
			t.Errorf("watch saw %s %s after a dry run", ev.Type, ev.Object.GetMeta().Name)
		default:
		}
	})
}
