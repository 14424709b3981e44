package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

func (s *Server) apply(w http.ResponseWriter, r *http.Request) {
	var req ApplyRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		writeStatus(w, Status{Code: 413, Reason: ReasonTooLarge, Message: fmt.Sprintf("the apply request is larger than %d MiB, the limit per request; apply the objects in several parts", maxBody>>20)})
		return
	}
	if err != nil {
		writeStatus(w, Status{Code: 400, Reason: ReasonBadRequest, Message: "read apply request: " + err.Error()})
		return
	}
	// Checked before decoding: encoding/json would turn invalid UTF-8
	// into U+FFFD without a word, changing a secret value.
	if !utf8.Valid(body) {
		writeStatus(w, Status{Code: 400, Reason: ReasonBadRequest, Message: "decode apply request: not valid UTF-8 (a secret value that is binary data must be encoded, e.g. base64)"})
		return
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		// encoding/json's messages quote neither values nor, here, keys
		// of ours; the request's own keys are fixed.
		writeStatus(w, Status{Code: 400, Reason: ReasonBadRequest, Message: "decode apply request: " + requestMessage(err)})
		return
	}
	out, err := s.Apply(r.Context(), req)
	if err != nil {
		s.writeError(w, err)
		return
	}
	writeJSON(w, 200, out)
}

// Apply validates, resolves and writes an apply request in one store
// transaction (prune included). The HTTP route and the watch-dir applier
// both use it.
func (s *Server) Apply(ctx context.Context, req ApplyRequest) (*ApplyResponse, error) {
	if req.Prune && req.ApplySet == "" {
		return nil, fmt.Errorf("prune needs an apply set: %w", state.ErrInvalid)
	}
	if req.Prune && len(req.Items) == 0 && !req.AllowEmpty {
		return nil, fmt.Errorf("refusing to prune apply set %q with a source that holds no objects: that would delete all of them; pass --allow-empty if that is what you want: %w", req.ApplySet, state.ErrInvalid)
	}
	writes, warnings, errs := s.prepare(req.Items)
	if len(errs) > 0 {
		return nil, errs
	}
	for _, w := range writes {
		m := w.Object.GetMeta()
		if req.ApplySet != "" {
			if m.Annotations == nil {
				m.Annotations = map[string]string{}
			}
			m.Annotations[manifests.AnnotationApplySet] = req.ApplySet
		}
	}
	// Credentials and bundles go before the deployments that name them.
	order := make([]int, len(writes))
	for i := range order {
		order[i] = i
	}
	rank := func(k manifests.Kind) int { return slices.Index(manifests.Kinds, k) }
	slices.SortStableFunc(order, func(a, b int) int {
		return rank(writes[a].Object.GetKind()) - rank(writes[b].Object.GetKind())
	})
	sorted := make([]state.Write, len(writes))
	for i, j := range order {
		sorted[i] = writes[j]
	}
	opts := state.ApplyOptions{DryRun: req.DryRun, RequireReferences: true}
	if req.Prune {
		opts.PruneSet = req.ApplySet
	}
	results, err := s.Store.Apply(ctx, sorted, opts)
	var aerr *state.ApplyError
	if errors.As(err, &aerr) && aerr.Index < len(order) {
		// Point at the file and document the failing object came from.
		it := req.Items[order[aerr.Index]]
		fe := &manifests.FieldError{Msg: aerr.Err.Error()}
		if it.Source != nil {
			fe.File, fe.Doc, fe.Line = it.Source.File, it.Source.Doc, it.Source.Line
		}
		if errors.Is(err, state.ErrInvalid) {
			return nil, manifests.ErrorList{fe}
		}
		// Keep the kind of failure (a conflict stays a 409).
		if it.Source == nil {
			return nil, err
		}
		fe.Msg = ""
		return nil, fmt.Errorf("%s: %w", strings.TrimSuffix(fe.Error(), ": "), aerr.Err)
	}
	if err != nil {
		return nil, err
	}
	// Results in request order, then what was pruned.
	out := ApplyResponse{Results: make([]state.ApplyResult, len(writes)), Warnings: warnings}
	for i, j := range order {
		out.Results[j] = results[i]
	}
	out.Results = append(out.Results, results[len(writes):]...)
	out.Warnings = append(out.Warnings, s.missingBundleWarnings(ctx, writes)...)
	if req.ApplySet == "" {
		for _, res := range out.Results {
			if res.ApplySet != "" && res.Action == state.ActionConfigured {
				out.Warnings = append(out.Warnings, fmt.Sprintf("%s/%s belongs to apply set %s (applied from a source, such as a Git directory): it stays in that set, so the next apply of that source writes it again (its values too, for a bundle) and a prune removes it when the source no longer holds it; change it in the source to make this last",
					strings.ToLower(string(res.Ref.Kind)), res.Ref.Name, res.ApplySet))
			}
		}
	}
	if !req.DryRun {
		for _, res := range out.Results {
			if res.Action != state.ActionUnchanged {
				s.Log.Info("object applied", "kind", res.Ref.Kind, "name", res.Ref.Name, "action", res.Action, "generation", res.Generation, "applySet", req.ApplySet)
			}
		}
	}
	return &out, nil
}

// prepare decodes, validates and resolves every item, reporting every
// problem at once.
func (s *Server) prepare(items []ApplyItem) ([]state.Write, []string, manifests.ErrorList) {
	var (
		writes   []state.Write
		warnings []string
		errs     manifests.ErrorList
	)
	for i, it := range items {
		src := it.Source
		if src == nil {
			src = &Source{Doc: i + 1}
		}
		fail := func(field, msg string, obj string) {
			errs = append(errs, &manifests.FieldError{File: src.File, Doc: src.Doc, Line: src.Line, Field: field, Object: obj, Msg: msg})
		}
		// As strict as YAML decoding: unknown fields, keys set twice and
		// wrong types are refused, not dropped.
		o, err := manifests.DecodeJSON(it.Object)
		var fe *manifests.FieldError
		if errors.As(err, &fe) {
			fail(fe.Field, fe.Msg, "")
			continue
		}
		if err != nil {
			fail("", err.Error(), "")
			continue
		}
		id := fmt.Sprintf("%s/%s", o.GetKind(), o.GetMeta().Name)
		manifests.Default(o)
		for _, e := range manifests.Validate(o) {
			e.File, e.Doc, e.Object = src.File, src.Doc, id
			if e.Line == 0 {
				e.Line = src.Line
			}
			errs = append(errs, e)
		}
		values, verrs := s.resolveSecrets(o, it.Secrets)
		for _, e := range verrs {
			fail(e.Field, e.Msg, id)
		}
		if d, ok := o.(*manifests.Deployment); ok {
			if keys := manifests.SensitiveEnvKeys(d.Spec.Env); len(keys) > 0 {
				warnings = append(warnings, fmt.Sprintf("deployment %s: env %v look(s) sensitive; keep secrets in a bundle: anycloud secrets new NAME KEY=VALUE, then list it in spec.secrets", d.Metadata.Name, keys))
			}
		}
		writes = append(writes, state.Write{Object: o, Secrets: values})
	}
	return writes, warnings, errs
}

// resolveSecrets gathers the values of a bundle (client-resolved fromEnv
// and stringData, plus spec.sealed opened here) or credentials.
func (s *Server) resolveSecrets(o manifests.Object, given map[string]string) (map[string]string, manifests.ErrorList) {
	var errs manifests.ErrorList
	fail := func(field, format string, args ...any) {
		errs = append(errs, &manifests.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	switch o := o.(type) {
	case *manifests.Deployment:
		if len(given) > 0 {
			fail("spec", "a Deployment carries no secret values; put them in a SecretBundle")
		}
		return nil, errs
	case *manifests.Credentials:
		if given == nil {
			return nil, nil
		}
		for k := range given {
			if k != "secretAccessKey" {
				fail("spec.aws", "unexpected secret field %s", manifests.KeyName(k))
			}
		}
		if o.Spec.AWS == nil || o.Spec.AWS.AccessKeyID == "" {
			fail("spec.aws.accessKeyId", "required with a secret access key")
		}
		for _, p := range manifests.CheckSecrets(fmt.Sprintf("credentials %q", o.Metadata.Name), given) {
			fail("spec.aws", "%s", p)
		}
		return given, errs
	case *manifests.SecretBundle:
		values := make(map[string]string, len(given)+len(o.Spec.StringData)+len(o.Spec.Sealed))
		for k, v := range given {
			values[k] = v
		}
		for k, v := range o.Spec.StringData {
			values[k] = v
		}
		for _, k := range slices.Sorted(maps.Keys(o.Spec.Sealed)) {
			if s.Sealing == nil {
				fail("spec.sealed."+k, "this control plane has no sealing key")
				continue
			}
			v, err := s.Sealing.OpenSealed(o.Metadata.Name, k, o.Spec.Sealed[k])
			if err != nil {
				fail("spec.sealed."+k, "%v", err)
				continue
			}
			values[k] = string(v)
		}
		for _, k := range o.Spec.FromEnv {
			if _, ok := values[k]; !ok {
				fail("spec.fromEnv", "%s was not resolved: it is read from the environment of the process that applies", k)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(values)) {
			if !manifests.ValidEnvKey(k) {
				fail("spec", "a key is not a valid environment variable name (not shown, as it may be a value)")
			}
		}
		if len(values) == 0 {
			fail("spec", "a bundle needs at least one value")
		}
		for _, p := range manifests.CheckSecrets(fmt.Sprintf("secret bundle %q", o.Metadata.Name), values) {
			fail("spec", "%s", p)
		}
		return values, errs
	}
	return nil, errs
}

// missingBundleWarnings tells the user about bundles that do not exist:
// the deployment is accepted and waits for them (DESIGN §3).
func (s *Server) missingBundleWarnings(ctx context.Context, writes []state.Write) []string {
	inApply := map[string]bool{}
	for _, w := range writes {
		if w.Object.GetKind() == manifests.KindSecretBundle {
			inApply[w.Object.GetMeta().Name] = true
		}
	}
	var out []string
	for _, w := range writes {
		d, ok := w.Object.(*manifests.Deployment)
		if !ok {
			continue
		}
		for _, b := range d.Spec.Secrets {
			if inApply[b] {
				continue
			}
			if _, err := s.Store.Get(ctx, manifests.KindSecretBundle, b); errors.Is(err, state.ErrNotFound) {
				out = append(out, fmt.Sprintf("deployment %s: secret bundle %q does not exist yet; no VM is created until it does", d.Metadata.Name, b))
			}
		}
	}
	return out
}

// requestMessage rewords a decode error of the request envelope without
// quoting what was sent.
func requestMessage(err error) string {
	var (
		te *json.UnmarshalTypeError
		se *json.SyntaxError
	)
	switch {
	case errors.As(err, &te):
		return fmt.Sprintf("field %s: wrong type (a JSON %s)", te.Field, te.Value)
	case errors.As(err, &se):
		return fmt.Sprintf("malformed JSON at byte %d", se.Offset)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "an unknown field (a request has items, dryRun, applySet, prune and allowEmpty; an item has object, secrets and source)"
	}
	return "malformed JSON"
}
