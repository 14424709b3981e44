package cli

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/anycloud/anycloud/manifests"
)

// outputJSONPath is the prefix of -o jsonpath=TEMPLATE: kubectl's form,
// for the subset scripts need: text with {.field.field[N]} expressions,
// printed once per object. A script can then name exactly one VM, such as
// the container to kill in the quickstart, without a filter that would
// also match another control plane's containers on a shared engine.
const outputJSONPath = "jsonpath="

// jsonPath is a parsed template: literal text and field paths, in turn.
type jsonPath struct {
	parts []jsonPathPart
}

type jsonPathPart struct {
	text string
	path []string // nil for text; each step a field name or "[N]"
}

func parseJSONPath(tmpl string) (*jsonPath, error) {
	jp := &jsonPath{}
	for tmpl != "" {
		i := strings.IndexByte(tmpl, '{')
		if i < 0 {
			jp.parts = append(jp.parts, jsonPathPart{text: tmpl})
			break
		}
		if i > 0 {
			jp.parts = append(jp.parts, jsonPathPart{text: tmpl[:i]})
		}
		j := strings.IndexByte(tmpl[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("jsonpath: unclosed '{'")
		}
		expr := strings.TrimSpace(tmpl[i+1 : i+j])
		if !strings.HasPrefix(expr, ".") {
			return nil, fmt.Errorf("jsonpath: %q: want a path such as {.status.vm.id}", expr)
		}
		var path []string
		for _, seg := range strings.Split(expr[1:], ".") {
			if seg == "" {
				continue
			}
			name, idx, _ := strings.Cut(seg, "[")
			if name != "" {
				path = append(path, name)
			}
			for idx != "" {
				n, rest, ok := strings.Cut(idx, "]")
				if _, err := strconv.Atoi(n); !ok || err != nil {
					return nil, fmt.Errorf("jsonpath: %q: only [N] indexes are supported", expr)
				}
				path = append(path, "["+n+"]")
				idx = strings.TrimPrefix(rest, "[")
			}
		}
		jp.parts = append(jp.parts, jsonPathPart{path: path})
		tmpl = tmpl[i+j+1:]
	}
	return jp, nil
}

// eval renders the template for one object. A path that leads nowhere
// renders as nothing, as kubectl's does with --allow-missing-template-keys.
func (jp *jsonPath) eval(o manifests.Object) (string, error) {
	b, err := json.Marshal(o)
	if err != nil {
		return "", err
	}
	var root any
	if err := json.Unmarshal(b, &root); err != nil {
		return "", err
	}
	var sb strings.Builder
	for _, p := range jp.parts {
		if p.path == nil {
			sb.WriteString(p.text)
			continue
		}
		v := root
		for _, step := range p.path {
			switch x := v.(type) {
			case map[string]any:
				v = x[step]
			case []any:
				n, _ := strconv.Atoi(strings.Trim(step, "[]"))
				if !strings.HasPrefix(step, "[") || n >= len(x) {
					v = nil
				} else {
					v = x[n]
				}
			default:
				v = nil
			}
		}
		switch x := v.(type) {
		case nil:
		case string:
			sb.WriteString(x)
		default:
			out, _ := json.Marshal(x)
			sb.Write(out)
		}
	}
	return sb.String(), nil
}
