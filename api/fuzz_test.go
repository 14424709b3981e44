package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-logr/logr"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// FuzzApply sends arbitrary bodies to the apply route of a server on a
// real store: no body makes it panic or answer 500, and no answer quotes
// the secret values it was sent.
func FuzzApply(f *testing.F) {
	home := f.TempDir()
	store, err := state.OpenBolt(home, state.BoltOptions{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	srv := &Server{Store: store, Sealing: store.SealingKey(), Log: logr.Discard(), Version: "fuzz"}
	h := srv.Handler()
	for _, s := range []string{
		`{"items":[{"object":{"apiVersion":"anycloud.dev/v1","kind":"SecretBundle","metadata":{"name":"s"},"spec":{}},"secrets":{"K":"FUZZSECRET-1"}}]}`,
		`{"items":[{"object":{"apiVersion":"anycloud.dev/v1","kind":"SecretBundle","metadata":{"name":"s"},"spec":{}},"secrets":{"FUZZSECRET-2 x":"v"}}]}`,
		`{"items":[{"object":{"apiVersion":"anycloud.dev/v1","kind":"SecretBundle","metadata":{"name":"s"},"spec":{}},"secrets":{"K":"FUZZSECRET-3\u0000"}}]}`,
		`{"items":[{"object":{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"image":"x","secrets":["s"]}}}],"dryRun":true}`,
		`{"items":[{"object":{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"image":"x","imagee":"y"}}}]}`,
		`{"items":[],"prune":true,"applySet":"x"}`,
		`{"items":[{"object":"FUZZSECRET-4"}]}`,
		"{\"items\":[{\"object\":{},\"secrets\":{\"K\":\"\xff\"}}]}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/apply", bytes.NewReader(body)))
		if rec.Code >= 500 {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
		// Secret values (and keys, which may be values typed in their
		// place) never come back.
		var req ApplyRequest
		if json.Unmarshal(body, &req) != nil {
			return
		}
		for _, it := range req.Items {
			for k, v := range it.Secrets {
				for _, s := range []string{k, v} {
					if len(s) >= 8 && strings.Contains(rec.Body.String(), s) && !manifests.ValidEnvKey(s) {
						t.Fatalf("the answer quotes %q, sent as a secret: %s", s, rec.Body)
					}
				}
				if len(v) >= 8 && strings.Contains(rec.Body.String(), v) {
					t.Fatalf("the answer quotes a secret value %q: %s", v, rec.Body)
				}
			}
		}
	})
}
