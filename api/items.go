package api

import (
	"encoding/json"
	"fmt"

	"github.com/anycloud/anycloud/manifests"
)

// ItemsFromDocuments turns decoded documents into apply items: a bundle's
// fromEnv names are read from the environment here, on the applying
// machine, and its stringData values move out of the object into the
// item's secrets. Every problem is reported at once, naming the file,
// document and field; a value is never part of a message.
func ItemsFromDocuments(docs []manifests.Document, getenv func(string) string) ([]ApplyItem, []string, error) {
	var (
		items    []ApplyItem
		warnings []string
		errs     manifests.ErrorList
	)
	for i := range docs {
		d := &docs[i]
		var secrets map[string]string
		obj := d.Object
		switch o := obj.(type) {
		case *manifests.SecretBundle:
			o = manifests.DeepCopy(o)
			secrets = map[string]string{}
			for j, k := range o.Spec.FromEnv {
				v, ok := lookupEnv(getenv, k)
				if !ok {
					errs = append(errs, d.Locate(&manifests.FieldError{Field: fmt.Sprintf("spec.fromEnv[%d]", j), Msg: fmt.Sprintf("environment variable %s is not set (fromEnv reads the applying process's environment)", k)}))
					continue
				}
				secrets[k] = v
			}
			if len(o.Spec.StringData) > 0 {
				e := d.Locate(&manifests.FieldError{Field: "spec.stringData", Msg: "plaintext secret values in a file; prefer fromEnv or `anycloud secrets seal`"})
				warnings = append(warnings, e.Error())
				for k, v := range o.Spec.StringData {
					secrets[k] = v
				}
				o.Spec.StringData = nil
			}
			obj = o
		case *manifests.Credentials:
			if a := o.Spec.AWS; a != nil && a.SecretAccessKeyFromEnv != "" {
				v, ok := lookupEnv(getenv, a.SecretAccessKeyFromEnv)
				if !ok {
					errs = append(errs, d.Locate(&manifests.FieldError{Field: "spec.aws.secretAccessKeyFromEnv", Msg: fmt.Sprintf("environment variable %s is not set", a.SecretAccessKeyFromEnv)}))
					break
				}
				secrets = map[string]string{"secretAccessKey": v}
			}
		}
		if secrets != nil {
			// Checked here, on the applying machine: JSON would turn
			// invalid UTF-8 into U+FFFD on the way to the control plane.
			what := fmt.Sprintf("secret bundle %q", obj.GetMeta().Name)
			if obj.GetKind() == manifests.KindCredentials {
				what = fmt.Sprintf("credentials %q", obj.GetMeta().Name)
			}
			for _, p := range manifests.CheckSecrets(what, secrets) {
				errs = append(errs, d.Locate(&manifests.FieldError{Field: "spec", Msg: p}))
			}
		}
		raw, err := json.Marshal(obj)
		if err != nil {
			return nil, warnings, err
		}
		items = append(items, ApplyItem{Object: raw, Secrets: secrets, Source: &Source{File: d.File, Doc: d.Index, Line: d.Line}})
	}
	return items, warnings, errs.Err()
}

// lookupEnv treats an empty variable as unset: an empty secret is almost
// always a mistake.
func lookupEnv(getenv func(string) string, k string) (string, bool) {
	v := getenv(k)
	return v, v != ""
}
