package manifests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// Document is one object read from user input, with where it came from.
type Document struct {
	File   string
	Index  int // 1-based position of the document in its file
	Line   int // line of the document's first key
	Object Object
	// lines maps a field path (as in FieldError.Field) to its line, so
	// that validation errors found after decoding can point at the line.
	lines map[string]int
}

// LineOf returns the line of field path in the document, or the nearest
// enclosing field's line, or the document's line.
func (d *Document) LineOf(path string) int {
	for p := path; p != ""; {
		if l, ok := d.lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return d.Line
}

// Locate fills in e's file, document, line and object from d.
func (d *Document) Locate(e *FieldError) *FieldError {
	e.File, e.Doc = d.File, d.Index
	if e.Line == 0 {
		p := e.Field
		if e.Lookup != "" {
			p = e.Lookup
		}
		e.Line = d.LineOf(p)
	}
	e.Lookup = ""
	if e.Object == "" && d.Object != nil {
		e.Object = string(d.Object.GetKind())
		if name := d.Object.GetMeta().Name; name != "" {
			e.Object += "/" + name
		}
	}
	return e
}

// Decode reads every YAML document in r strictly. file names the input in
// errors ("-" for stdin). It returns the documents that decoded and every
// problem found; when the error is non-nil, the documents must not be used
// to write anything.
func Decode(file string, r io.Reader) ([]Document, error) {
	// Read whole, up to the limit: a stream that never ends, or a file of
	// gigabytes, must not grow the process.
	data, err := io.ReadAll(io.LimitReader(r, MaxFileBytes+1))
	if err != nil {
		return nil, ErrorList{{File: file, Msg: "read: " + err.Error()}}
	}
	if len(data) > MaxFileBytes {
		return nil, ErrorList{{File: file, Msg: fmt.Sprintf("larger than %s, the limit per manifest file; split it into several files", byteSize(MaxFileBytes))}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var (
		docs []Document
		errs ErrorList
	)
	for index := 1; ; index++ {
		var root yaml.Node
		err := dec.Decode(&root)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, &FieldError{File: file, Doc: index, Line: yamlErrorLine(err), Msg: cleanYAMLError(err)})
			break // the stream cannot be resynchronised after a syntax error
		}
		if len(root.Content) == 0 || isNull(root.Content[0]) {
			continue // an empty document, such as a trailing "---"
		}
		doc, derrs := decodeDocument(file, index, root.Content[0])
		errs = append(errs, derrs...)
		if doc != nil {
			docs = append(docs, *doc)
		}
	}
	return docs, errs.Err()
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

func yamlErrorLine(err error) int {
	m := yamlLineRE.FindStringSubmatch(err.Error())
	if m == nil {
		return 0
	}
	var n int
	fmt.Sscanf(m[1], "%d", &n)
	return n
}

func cleanYAMLError(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	return "malformed YAML: " + s
}

func decodeDocument(file string, index int, n *yaml.Node) (*Document, ErrorList) {
	loc := func(line int, field, msg string) *FieldError {
		return &FieldError{File: file, Doc: index, Line: line, Field: field, Msg: msg}
	}
	if n.Kind != yaml.MappingNode {
		return nil, ErrorList{loc(n.Line, "", "expected a mapping with apiVersion, kind, metadata and spec, got "+describeNode(n))}
	}
	var errs ErrorList
	apiVersion, avLine := scalarField(n, "apiVersion")
	kind, kindLine := scalarField(n, "kind")
	switch {
	case apiVersion == "":
		errs = append(errs, loc(n.Line, "apiVersion", "required (use "+APIVersion+")"))
	case apiVersion != APIVersion:
		errs = append(errs, loc(avLine, "apiVersion", fmt.Sprintf("unsupported apiVersion %q (use %s)", apiVersion, APIVersion)))
	}
	obj, err := New(Kind(kind))
	if kind == "" {
		errs = append(errs, loc(n.Line, "kind", "required (one of Deployment, SecretBundle, Credentials)"))
	} else if err != nil {
		errs = append(errs, loc(kindLine, "kind", fmt.Sprintf("unknown kind %q (one of Deployment, SecretBundle, Credentials)", kind)))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "metadata" && n.Content[i+1].Kind == yaml.MappingNode {
			// Known before the walk so that its errors name the object.
			obj.GetMeta().Name, _ = scalarField(n.Content[i+1], "name")
		}
	}
	doc := &Document{File: file, Index: index, Line: n.Line, Object: obj, lines: map[string]int{}}
	w := walker{doc: doc}
	w.walk(n, reflect.TypeOf(obj).Elem(), "")
	errs = append(errs, w.errs...)
	if len(errs) > 0 {
		for _, e := range errs {
			doc.Locate(e)
		}
		return nil, errs
	}
	budget := maxNodeVisits
	generic, err := plainValue(n, &budget)
	if err != nil {
		return nil, ErrorList{loc(n.Line, "", err.Error())}
	}
	raw, err := json.Marshal(generic)
	if err != nil {
		return nil, ErrorList{loc(n.Line, "", err.Error())}
	}
	if err := json.Unmarshal(raw, obj); err != nil {
		// The walk checked every type; this is a safety net.
		return nil, ErrorList{loc(n.Line, "", err.Error())}
	}
	return doc, nil
}

// maxNodeVisits bounds the nodes one document expands to, aliases
// followed: a few aliases of aliases (a "billion laughs") must not expand
// into gigabytes.
const maxNodeVisits = 1 << 21

// plainValue converts a node tree that the walk has checked into the plain
// values encoding/json takes, in one linear pass. yaml.v3's own decoding
// of a mapping compares every key with every other (14 s for a bundle of
// 40,000 keys); the walk has already refused duplicate keys.
func plainValue(n *yaml.Node, budget *int) (any, error) {
	if *budget--; *budget < 0 {
		return nil, errors.New("the document expands to too many nodes (aliases of aliases?)")
	}
	switch n.Kind {
	case yaml.AliasNode:
		return plainValue(n.Alias, budget)
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return plainValue(n.Content[0], budget)
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind == yaml.AliasNode {
				k = k.Alias
			}
			v, err := plainValue(n.Content[i+1], budget)
			if err != nil {
				return nil, err
			}
			m[k.Value] = v
		}
		return m, nil
	case yaml.SequenceNode:
		l := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := plainValue(c, budget)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		return l, nil
	case yaml.ScalarNode:
		if n.Tag == "!!str" {
			return n.Value, nil
		}
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, errors.New("a scalar does not decode (put it in quotes)")
		}
		return v, nil
	}
	return nil, fmt.Errorf("unexpected YAML node at line %d", n.Line)
}

func scalarField(m *yaml.Node, key string) (string, int) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key && m.Content[i+1].Kind == yaml.ScalarNode {
			return m.Content[i+1].Value, m.Content[i+1].Line
		}
	}
	return "", 0
}

// walker checks a YAML node tree against a Go type: every mapping key must
// be a field of the struct it fills, and every scalar must have the type of
// its field. It records each field's line for later errors.
type walker struct {
	doc  *Document
	errs ErrorList
}

var timeType = reflect.TypeOf(time.Time{})

// boolForms are the structs that may also be written as true or false
// (their UnmarshalJSON reads both forms).
var boolForms = map[reflect.Type]bool{reflect.TypeOf(SpotSpec{}): true}

func (w *walker) fail(n *yaml.Node, path, msg string) {
	w.errs = append(w.errs, &FieldError{Line: n.Line, Field: path, Msg: msg})
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if path != "" {
		w.doc.lines[path] = n.Line
	}
	if isNull(n) {
		return // null is the zero value of anything
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == timeType:
		if n.Kind != yaml.ScalarNode {
			w.fail(n, path, "expected a timestamp, got "+describeNode(n))
		}
	case t.Kind() == reflect.Struct && n.Kind == yaml.ScalarNode && n.Tag == "!!bool" && boolForms[t]:
		// true or false where the type allows it (spot: true).
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			what := "a mapping"
			if boolForms[t] {
				what = "true or false (or a mapping of options)"
			}
			w.fail(n, path, "expected "+what+", got "+describeNode(n))
			return
		}
		fields := jsonFields(t)
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			sub := joinPath(path, k.Value)
			shown := sub
			if !fieldNameRE.MatchString(k.Value) {
				shown = path // the key may be a value: keep it out of the path too
			}
			if !w.once(seen, k, shown) {
				continue
			}
			ft, ok := fields[k.Value]
			if !ok {
				w.fail(k, shown, fmt.Sprintf("unknown field %s%s", quoteField(k.Value), suggest(k.Value, fields)))
				continue
			}
			w.walk(v, ft, sub)
			w.doc.lines[sub] = k.Line // a field's line is its key's, not its value's
		}
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "expected a mapping, got "+describeNode(n))
			return
		}
		seen := map[string]int{}
		envKeys := envKeyMap(path)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			sub := joinPath(path, k.Value)
			shown := sub
			if envKeys && !ValidEnvKey(k.Value) {
				shown = path // the key may be a value: keep it out of the path
			}
			if k.Kind != yaml.ScalarNode || k.Tag != "!!str" {
				msg := fmt.Sprintf("expected a string key, got %s (quote it: %q)", describeNode(k), k.Value)
				if envKeys {
					msg = fmt.Sprintf("expected a string key, got %s (quote it)", describeNode(k))
				}
				w.fail(k, shown, msg)
				continue
			}
			if !w.once(seen, k, shown) {
				continue
			}
			w.walk(v, t.Elem(), sub)
			w.doc.lines[sub] = k.Line
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.fail(n, path, "expected a list, got "+describeNode(n))
			return
		}
		for i, item := range n.Content {
			w.walk(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case t.Kind() == reflect.String:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
			msg := "expected a string, got " + describeNode(n)
			if n.Kind == yaml.ScalarNode {
				// Never echo the value: it may be a secret (stringData).
				msg += " (put it in quotes)"
			}
			w.fail(n, path, msg)
		}
	case t.Kind() == reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			w.fail(n, path, "expected true or false, got "+describeNode(n))
		}
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			w.fail(n, path, "expected an integer, got "+describeNode(n))
		}
	}
}

// envKeyMap reports whether the mapping at path holds secret values under
// environment variable names: a key there that is not a name is never
// echoed, since it is often a value typed where the key belongs
// (`TOKEN sk-…` for `TOKEN: sk-…`). Deployment env values are plain and
// shown by status, so its keys are echoed.
func envKeyMap(path string) bool {
	return path == "spec.stringData" || path == "spec.sealed"
}

// once reports whether key k is the first of its name in a mapping, and
// records a problem when it is not.
func (w *walker) once(seen map[string]int, k *yaml.Node, path string) bool {
	if first, ok := seen[k.Value]; ok {
		w.fail(k, path, fmt.Sprintf("set twice; first at line %d", first))
		return false
	}
	seen[k.Value] = k.Line
	return true
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!str":
			return "a string"
		case "!!int":
			return "an integer"
		case "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "null"
		}
		return "a scalar"
	}
	return "an unexpected node"
}

// jsonFields maps the JSON names of t's fields, including inlined embedded
// structs, to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// suggest offers the known field closest to a misspelt one.
func suggest(got string, fields map[string]reflect.Type) string {
	best, bestD := "", 3
	for k := range fields {
		if d := editDistance(strings.ToLower(got), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// LoadOptions say how Load walks its sources.
type LoadOptions struct {
	// Recursive descends into subdirectories.
	Recursive bool
	// Stdin is read for the source "-".
	Stdin io.Reader
}

// Load reads, defaults and validates every object in the given files and
// directories ("-" is stdin). It reports every problem in every source at
// once, including the same object defined twice; when the error is
// non-nil nothing must be written.
func Load(sources []string, opts LoadOptions) ([]Document, error) {
	var (
		docs []Document
		errs ErrorList
	)
	add := func(file string, r io.Reader) {
		d, err := Decode(file, r)
		docs = append(docs, d...)
		var l ErrorList
		if errors.As(err, &l) {
			errs = append(errs, l...)
		} else if err != nil {
			errs = append(errs, &FieldError{File: file, Msg: err.Error()})
		}
	}
	for _, src := range sources {
		if src == "-" {
			if opts.Stdin == nil {
				errs = append(errs, &FieldError{File: "-", Msg: "no standard input"})
				continue
			}
			add("-", opts.Stdin)
			continue
		}
		files, err := manifestFiles(src, opts.Recursive)
		if err != nil {
			errs = append(errs, &FieldError{File: src, Msg: err.Error()})
			continue
		}
		for _, f := range files {
			fh, err := os.Open(f)
			if err != nil {
				errs = append(errs, &FieldError{File: f, Msg: err.Error()})
				continue
			}
			add(f, fh)
			fh.Close()
		}
	}
	errs = append(errs, Check(docs)...)
	return docs, errs.Err()
}

// Check defaults and validates decoded documents and refuses the same
// object defined twice.
func Check(docs []Document) ErrorList {
	var errs ErrorList
	seen := map[string]*Document{}
	for i := range docs {
		d := &docs[i]
		Default(d.Object)
		for _, e := range Validate(d.Object) {
			errs = append(errs, d.Locate(e))
		}
		// In a file, a bundle must say where its values come from; the
		// imperative `secrets new` sends them beside the object instead.
		// Likewise static AWS keys: a file names the variable that holds
		// the secret key; `credentials new` reads it itself.
		if c, ok := d.Object.(*Credentials); ok && c.Spec.AWS != nil && c.Spec.AWS.AccessKeyID != "" && c.Spec.AWS.SecretAccessKeyFromEnv == "" {
			errs = append(errs, d.Locate(&FieldError{Field: "spec.aws.secretAccessKeyFromEnv", Msg: "required with accessKeyId: name the environment variable that holds the secret access key"}))
		}
		if b, ok := d.Object.(*SecretBundle); ok && len(b.Spec.FromEnv)+len(b.Spec.Sealed)+len(b.Spec.StringData) == 0 {
			errs = append(errs, d.Locate(&FieldError{Field: "spec", Msg: "a bundle needs at least one key in fromEnv, sealed or stringData"}))
		}
		key := fmt.Sprintf("%s/%s", d.Object.GetKind(), d.Object.GetMeta().Name)
		if first, ok := seen[key]; ok && d.Object.GetMeta().Name != "" {
			errs = append(errs, d.Locate(&FieldError{Field: "metadata.name", Msg: fmt.Sprintf("%s is defined twice; first in %s document %d", key, first.File, first.Index)}))
			continue
		}
		seen[key] = d
	}
	return errs
}

// manifestFiles lists the YAML and JSON files of src in lexical order.
func manifestFiles(src string, recursive bool) ([]string, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if !fi.IsDir() {
		return []string{src}, nil
	}
	var files []string
	// os.DirFS, unlike filepath.WalkDir, follows src when it is a
	// symbolic link to a directory.
	err = fs.WalkDir(os.DirFS(src), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != "." && (!recursive || strings.HasPrefix(d.Name(), ".")) {
				return fs.SkipDir
			}
			return nil
		}
		switch strings.ToLower(path.Ext(p)) {
		case ".yaml", ".yml", ".json":
			files = append(files, filepath.Join(src, filepath.FromSlash(p)))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(files)
	return files, nil
}
