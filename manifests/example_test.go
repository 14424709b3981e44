package manifests_test

import (
	"errors"
	"fmt"
	"strings"

	"github.com/anycloud/anycloud/manifests"
)

func ExampleDecode() {
	const manifest = `apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: train, labels: {team: ml}}
spec:
  image: ghcr.io/me/train:latest
  command: [python, train.py]
  credentials: my-aws
  vmType: g6e.xlarge
  spot: true
  env: {EPOCHS: "3"}
  secrets: [hf, wandb]
`
	docs, err := manifests.Decode("train.yaml", strings.NewReader(manifest))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, doc := range docs {
		d := doc.Object.(*manifests.Deployment)
		fmt.Printf("%s document %d: %s/%s\n", doc.File, doc.Index, d.Kind, d.Metadata.Name)
		fmt.Println("image:", d.Spec.Image)
		fmt.Println("command:", d.Spec.Command)
		fmt.Println("on:", d.Spec.Credentials, d.Spec.VMType, "spot:", d.Spec.Spot)
		fmt.Println("env:", d.Spec.Env, "secrets:", d.Spec.Secrets)
	}
	// Output:
	// train.yaml document 1: Deployment/train
	// image: ghcr.io/me/train:latest
	// command: [python train.py]
	// on: my-aws g6e.xlarge spot: true
	// env: map[EPOCHS:3] secrets: [hf wandb]
}

func ExampleDecode_unknownField() {
	const manifest = `apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: train}
spec:
  imagee: ghcr.io/me/train:latest
`
	_, err := manifests.Decode("train.yaml", strings.NewReader(manifest))
	fmt.Println(err)

	// Each problem is a FieldError, for programs that want the parts.
	var problems manifests.ErrorList
	if errors.As(err, &problems) {
		for _, p := range problems {
			fmt.Printf("file=%s doc=%d line=%d field=%s\n", p.File, p.Doc, p.Line, p.Field)
		}
	}
	// Output:
	// train.yaml:5: document 1 (Deployment/train): spec.imagee: unknown field "imagee" (did you mean "image"?)
	// file=train.yaml doc=1 line=5 field=spec.imagee
}

func ExampleLoad() {
	// "-" reads LoadOptions.Stdin, as `anycloud apply -f -` does.
	const stdin = `apiVersion: anycloud.dev/v1
kind: SecretBundle
metadata: {name: hf}
spec:
  fromEnv: [HF_TOKEN]
---
apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: train}
spec:
  image: ghcr.io/me/train:latest
  secrets: [hf]
`
	docs, err := manifests.Load([]string{"-"}, manifests.LoadOptions{Stdin: strings.NewReader(stdin)})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, doc := range docs {
		fmt.Printf("%s/%s\n", doc.Object.GetKind(), doc.Object.GetMeta().Name)
	}
	// Load defaults what was left out.
	fmt.Println("credentials:", docs[1].Object.(*manifests.Deployment).Spec.Credentials)
	// Output:
	// SecretBundle/hf
	// Deployment/train
	// credentials: local
}

func ExampleLoad_problems() {
	// Every problem in every document is reported at once, so that they
	// can all be fixed in one go; nothing may be written when there are any.
	const stdin = `apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: train}
spec:
  image: ghcr.io/me/train:latest
  env: {EPOCHS: 3}
---
apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: Eval}
spec:
  imgae: ghcr.io/me/eval:latest
`
	_, err := manifests.Load([]string{"-"}, manifests.LoadOptions{Stdin: strings.NewReader(stdin)})
	fmt.Println(err)
	// Output:
	// 2 problems:
	//   -:6: document 1 (Deployment/train): spec.env.EPOCHS: expected a string, got an integer (put it in quotes)
	//   -:12: document 2 (Deployment/Eval): spec.imgae: unknown field "imgae" (did you mean "image"?)
}
