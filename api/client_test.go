package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// serve runs the API of a fresh bbolt store on a unix socket of its own
// and returns a client of it.
func serve(t testing.TB) (*api.Client, *state.Bolt) {
	c, store, _ := serveAt(t)
	return c, store
}

func serveAt(t testing.TB) (*api.Client, *state.Bolt, string) {
	t.Helper()
	c, store, sock, stop, err := startAPI()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return c, store, sock
}

// startAPI serves a fresh store's API in a temporary home until stop.
func startAPI() (*api.Client, *state.Bolt, string, func(), error) {
	dir, err := os.MkdirTemp("", "api")
	if err != nil {
		return nil, nil, "", nil, err
	}
	store, err := state.OpenBolt(dir, state.BoltOptions{})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, "", nil, err
	}
	sock := filepath.Join(dir, api.SocketFile)
	ln, err := api.Listen(sock)
	if err != nil {
		store.Close()
		os.RemoveAll(dir)
		return nil, nil, "", nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := &api.Server{Store: store, Sealing: store.SealingKey(), Log: logr.Discard(), Version: "test"}
	go func() { done <- srv.ServeListener(ctx, ln) }()
	stop := func() {
		cancel()
		<-done
		store.Close()
		os.RemoveAll(dir)
	}
	return api.NewClient(sock), store, sock, stop, nil
}

func object(kind, name, spec string) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"apiVersion":"anycloud.dev/v1","kind":%q,"metadata":{"name":%q},"spec":%s}`, kind, name, spec))
}

func TestTheSocketIsTheOwnersOnly(t *testing.T) {
	c, _, sock := serveAt(t)
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The socket's mode is what keeps other users of the machine out.
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("api socket %s: mode %v (%v), want a 0600 socket", sock, fi.Mode(), err)
	}
}

func TestSecretValuesCannotBeReadBack(t *testing.T) {
	c, store := serve(t)
	ctx := context.Background()
	const canary = "CANARY-api-1b2c3d"
	if _, err := c.Apply(ctx, api.ApplyRequest{Items: []api.ApplyItem{{Object: object("SecretBundle", "hf", "{}"), Secrets: map[string]string{"HF_TOKEN": canary}}}}); err != nil {
		t.Fatal(err)
	}
	o, err := c.Get(ctx, manifests.KindSecretBundle, "hf")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(o)
	list, _ := c.List(ctx, manifests.KindSecretBundle)
	lb, _ := json.Marshal(list)
	evs, _ := c.Events(ctx, manifests.KindSecretBundle, "hf")
	eb, _ := json.Marshal(evs)
	for what, body := range map[string][]byte{"get": b, "list": lb, "events": eb} {
		if strings.Contains(string(body), canary) {
			t.Errorf("%s returned the value: %s", what, body)
		}
	}
	if !strings.Contains(string(b), "HF_TOKEN") {
		t.Errorf("get does not list the key name: %s", b)
	}
	// The value is there, for the controller only.
	if values, _, err := store.OpenSecrets(ctx, manifests.KindSecretBundle, "hf"); err != nil || values["HF_TOKEN"] != canary {
		t.Errorf("the store does not hold the value: %v", err)
	}
}

func TestErrorsCarryTheirStatusAndDetails(t *testing.T) {
	c, _ := serve(t)
	ctx := context.Background()
	if _, err := c.Get(ctx, manifests.KindDeployment, "nope"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("get of a missing deployment: %v, want one that is state.ErrNotFound", err)
	}
	_, err := c.Apply(ctx, api.ApplyRequest{Items: []api.ApplyItem{{Object: object("Deployment", "Bad_Name", `{"image":""}`)}}})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status.Code != 422 || len(ae.Status.Details.Errors) < 2 {
		t.Fatalf("an invalid deployment: %v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "metadata.name") || !strings.Contains(msg, "spec.image") {
		t.Errorf("the error does not name every field at fault: %s", msg)
	}
	// A bundle in use: 409, listing the users.
	if _, err := c.Apply(ctx, api.ApplyRequest{Items: []api.ApplyItem{
		{Object: object("SecretBundle", "hf", "{}"), Secrets: map[string]string{"K": "v"}},
		{Object: object("Deployment", "train", `{"image":"x","secrets":["hf"]}`)},
	}}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Delete(ctx, manifests.KindSecretBundle, "hf", state.DeleteOptions{})
	if !api.IsConflict(err) || !errors.As(err, &ae) || ae.Status.Reason != api.ReasonInUse || len(ae.Status.Details.Users) != 1 || ae.Status.Details.Users[0].Name != "train" {
		t.Errorf("delete of a bundle in use: %v", err)
	}
}

func TestStatusForIsTheOneTable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{state.ErrNotFound, http.StatusNotFound},
		{fmt.Errorf("wrapped: %w", state.ErrConflict), http.StatusConflict},
		{state.ErrInUse, http.StatusConflict},
		{state.ErrTerminating, http.StatusConflict},
		{state.ErrInvalid, http.StatusUnprocessableEntity},
		{state.ErrProtected, http.StatusForbidden},
		{manifests.ErrorList{&manifests.FieldError{Field: "spec.image", Msg: "required"}}, http.StatusUnprocessableEntity},
		{errors.New("disk full"), http.StatusInternalServerError},
	} {
		if got := api.StatusFor(tc.err).Code; got != tc.code {
			t.Errorf("StatusFor(%v) = %d, want %d", tc.err, got, tc.code)
		}
	}
}

// The store's reads leave a bundle's users empty (they grow with the
// number of deployments); the API fills them on get, list and watch.
func TestTheAPIShowsTheUsersOfABundle(t *testing.T) {
	c, _ := serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	items := []api.ApplyItem{
		{Object: object("SecretBundle", "hf", "{}"), Secrets: map[string]string{"K": "v"}},
		{Object: object("Deployment", "train", `{"image":"x","secrets":["hf"]}`)},
	}
	if _, err := c.Apply(ctx, api.ApplyRequest{Items: items}); err != nil {
		t.Fatal(err)
	}
	users := func(o manifests.Object) string {
		var names []string
		for _, u := range o.(*manifests.SecretBundle).Status.UsedBy {
			names = append(names, u.Name)
		}
		return strings.Join(names, ",")
	}
	o, err := c.Get(ctx, manifests.KindSecretBundle, "hf")
	if err != nil || users(o) != "train" {
		t.Errorf("get: used by %q (%v), want train", users(o), err)
	}
	list, err := c.List(ctx, manifests.KindSecretBundle)
	if err != nil || len(list) != 1 || users(list[0]) != "train" {
		t.Errorf("list: %v (%v), want hf used by train", list, err)
	}
	var watched []string
	errDone := errors.New("done")
	err = c.Watch(ctx, manifests.KindSecretBundle, func(ev state.WatchEvent) error {
		watched = append(watched, users(ev.Object))
		return errDone
	})
	if !errors.Is(err, errDone) || len(watched) != 1 || watched[0] != "train" {
		t.Errorf("watch: used by %q (%v), want train", watched, err)
	}
}
