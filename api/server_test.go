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

func newTestServer(t *testing.T) http.Handler {
	t.Helper()
	store, err := state.OpenBolt(t.TempDir(), state.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return (&Server{Store: store, Sealing: store.SealingKey(), Log: logr.Discard()}).Handler()
}

func postApply(t *testing.T, h http.Handler, body []byte) (int, Status) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/apply", bytes.NewReader(body)))
	var st Status
	json.Unmarshal(rec.Body.Bytes(), &st)
	return rec.Code, st
}

func TestApplyRequestOverTheLimitIsRefusedWith413(t *testing.T) {
	h := newTestServer(t)
	value := strings.Repeat("x", manifests.MaxRequestBytes)
	body, _ := json.Marshal(ApplyRequest{Items: []ApplyItem{{
		Object:  json.RawMessage(`{"apiVersion":"anycloud.dev/v1","kind":"SecretBundle","metadata":{"name":"big"},"spec":{}}`),
		Secrets: map[string]string{"K": value},
	}}})
	code, st := postApply(t, h, body)
	if code != 413 || !strings.Contains(st.Message, "16 MiB, the limit per request") || strings.Contains(st.Message, "xxxx") {
		t.Errorf("got %d %+v", code, st)
	}
}

func TestApplyRefusesObjectsAsStrictlyAsYAML(t *testing.T) {
	h := newTestServer(t)
	for name, obj := range map[string]string{
		"unknown field":  `{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"image":"x","imagee":"y"}}`,
		"key set twice":  `{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"image":"x","image":"y"}}`,
		"wrong type":     `{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"image":"x","spot":"yes"}}`,
		"nested unknown": `{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"d","labelz":{}},"spec":{"image":"x"}}`,
		"unknown in aws": `{"apiVersion":"anycloud.dev/v1","kind":"Credentials","metadata":{"name":"c"},"spec":{"provider":"aws","aws":{"regoin":"x"}}}`,
	} {
		body, _ := json.Marshal(ApplyRequest{Items: []ApplyItem{{Object: json.RawMessage(obj)}}})
		if code, st := postApply(t, h, body); code != 422 || st.Reason != ReasonInvalid {
			t.Errorf("%s: got %d %+v, want 422 Invalid", name, code, st)
		}
	}
}

func TestApplyRefusesARequestThatIsNotUTF8(t *testing.T) {
	h := newTestServer(t)
	body := []byte(`{"items":[{"object":{"apiVersion":"anycloud.dev/v1","kind":"SecretBundle","metadata":{"name":"s"},"spec":{}},"secrets":{"K":"ab` + "\xff" + `cd-value"}}]}`)
	code, st := postApply(t, h, body)
	if code != 400 || !strings.Contains(st.Message, "not valid UTF-8") || strings.Contains(st.Message, "cd-value") {
		t.Errorf("got %d %+v", code, st)
	}
}
