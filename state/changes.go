package state

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/anycloud/anycloud/manifests"
)

// changes lists, field by field, how next differs from old (nil for a
// new object): labels, user annotations and the spec. Secret values are
// not in objects, so they cannot appear; a bundle's or credentials' key
// names are compared from their status, and a change of value is reported
// as such, without the value.
func changes(old, next manifests.Object, valuesChanged bool) []Change {
	before, after := map[string]string{}, map[string]string{}
	if old != nil {
		flatten(view(old), "", before)
	}
	flatten(view(next), "", after)
	paths := map[string]bool{}
	for p := range before {
		paths[p] = true
	}
	for p := range after {
		paths[p] = true
	}
	var out []Change
	for _, p := range slices.Sorted(maps.Keys(paths)) {
		if before[p] != after[p] {
			out = append(out, Change{Path: p, Old: before[p], New: after[p]})
		}
	}
	oldKeys, newKeys := secretKeys(old), secretKeys(next)
	for _, k := range newKeys {
		if !slices.Contains(oldKeys, k) {
			out = append(out, Change{Path: "secret." + k, New: "(set)"})
		}
	}
	for _, k := range oldKeys {
		if !slices.Contains(newKeys, k) {
			out = append(out, Change{Path: "secret." + k, Old: "(set)"})
		}
	}
	if valuesChanged && old != nil && slices.Equal(oldKeys, newKeys) {
		out = append(out, Change{Path: "secret values", New: "(changed)"})
	}
	return out
}

func secretKeys(o manifests.Object) []string {
	switch o := o.(type) {
	case *manifests.SecretBundle:
		return o.Status.Keys
	case *manifests.Credentials:
		return o.Status.SecretKeys
	}
	return nil
}

// view is what a person compares: labels, their own annotations, spec.
func view(o manifests.Object) map[string]any {
	m := o.GetMeta()
	ann := map[string]string{}
	for k, v := range m.Annotations {
		if !strings.HasPrefix(k, "anycloud.dev/") {
			ann[k] = v
		}
	}
	var spec any
	json.Unmarshal(o.SpecJSON(), &spec)
	return map[string]any{"metadata": map[string]any{"labels": m.Labels, "annotations": ann}, "spec": spec}
}

// flatten writes every leaf of a JSON-shaped value under its dotted path.
func flatten(v any, prefix string, out map[string]string) {
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			flatten(v[k], join(prefix, k), out)
		}
	case map[string]string:
		for k, s := range v {
			out[join(prefix, k)] = s
		}
	case []any:
		for i, e := range v {
			flatten(e, fmt.Sprintf("%s[%d]", prefix, i), out)
		}
	case nil:
	case string:
		out[prefix] = v
	default:
		b, _ := json.Marshal(v)
		out[prefix] = string(b)
	}
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}
