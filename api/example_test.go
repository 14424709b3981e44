package api_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// Apply a bundle and the deployment that uses it in one request, read
// the bundle back (key names, never values), and see the in-use
// protection refuse its deletion.
func Example() {
	c, _, _, stop, err := startAPI() // a control plane's API on a unix socket of its own
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	ctx := context.Background()
	var resp *api.ApplyResponse

	resp, err = c.Apply(ctx, api.ApplyRequest{Items: []api.ApplyItem{
		{
			Object:  json.RawMessage(`{"apiVersion":"anycloud.dev/v1","kind":"SecretBundle","metadata":{"name":"hf"},"spec":{}}`),
			Secrets: map[string]string{"HF_TOKEN": "hf_example"},
		},
		{Object: json.RawMessage(`{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"train"},"spec":{"image":"ghcr.io/me/train:1","secrets":["hf"]}}`)},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range resp.Results {
		fmt.Printf("%s/%s %s\n", r.Ref.Kind, r.Ref.Name, r.Action)
	}
	o, _ := c.Get(ctx, manifests.KindSecretBundle, "hf")
	b := o.(*manifests.SecretBundle)
	fmt.Println("keys:", b.Status.Keys)

	_, err = c.Delete(ctx, manifests.KindSecretBundle, "hf", state.DeleteOptions{})
	fmt.Println("conflict:", api.IsConflict(err))
	// Output:
	// SecretBundle/hf created
	// Deployment/train created
	// keys: [HF_TOKEN]
	// conflict: true
}
