package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/anycloud/anycloud/manifests"
)

// Output formats of -o.
const (
	outputTable = ""
	outputWide  = "wide"
	outputJSON  = "json"
	outputYAML  = "yaml"
	outputName  = "name"
)

func validateOutput(o string) error {
	switch o {
	case outputTable, outputWide, outputJSON, outputYAML, outputName:
		return nil
	}
	if tmpl, ok := strings.CutPrefix(o, outputJSONPath); ok {
		if _, err := parseJSONPath(tmpl); err != nil {
			return usage(err)
		}
		return nil
	}
	return usageErrorf("unknown output format %q (wide, json, yaml, name or jsonpath=TEMPLATE)", o)
}

// table writes aligned columns.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)}
	if len(headers) > 0 {
		t.row(headers...)
	}
	return t
}

func (t *table) row(cols ...string) { fmt.Fprintln(t.tw, strings.Join(cols, "\t")) }
func (t *table) flush()             { t.tw.Flush() }

// age renders a duration the way kubectl does: 5s, 3m, 2h, 4d.
func age(now, then time.Time) string {
	if then.IsZero() {
		return "<unknown>"
	}
	d := now.Sub(then)
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// objectName is kubectl's -o name form: deployment/train.
func objectName(o manifests.Object) string {
	return strings.ToLower(string(o.GetKind())) + "/" + o.GetMeta().Name
}

func refName(r manifests.ObjectRef) string {
	return strings.ToLower(string(r.Kind)) + "/" + r.Name
}

// printObjects writes objects in a structured format: one object, or a
// list of them.
func printObjects(w io.Writer, format string, objs []manifests.Object, single bool) error {
	if tmpl, ok := strings.CutPrefix(format, outputJSONPath); ok {
		jp, err := parseJSONPath(tmpl)
		if err != nil {
			return err
		}
		for _, o := range objs {
			line, err := jp.eval(o)
			if err != nil {
				return err
			}
			fmt.Fprintln(w, line)
		}
		return nil
	}
	switch format {
	case outputName:
		for _, o := range objs {
			fmt.Fprintln(w, objectName(o))
		}
		return nil
	case outputJSON, outputYAML:
		var v any = objs
		if single && len(objs) == 1 {
			v = objs[0]
		} else {
			if objs == nil {
				objs = []manifests.Object{}
			}
			v = map[string]any{"apiVersion": manifests.APIVersion, "kind": "List", "items": objs}
		}
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		if format == outputYAML {
			if b, err = yaml.JSONToYAML(b); err != nil {
				return err
			}
			_, err = w.Write(b)
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	}
	return fmt.Errorf("unsupported format %q", format)
}

// readiness summarises a deployment's Ready condition: "True", "False" or
// "Unknown", with the reason when not ready.
func readiness(d *manifests.Deployment) string {
	c := manifests.FindCondition(d.Status.Conditions, manifests.ConditionReady)
	if c == nil {
		return "Unknown"
	}
	if c.Status == manifests.ConditionTrue || c.Reason == "" {
		return c.Status
	}
	return c.Status + " (" + c.Reason + ")"
}

func phaseOf(d *manifests.Deployment) string {
	if d.Metadata.DeletionTimestamp != nil {
		return manifests.PhaseTerminating
	}
	return orNone(d.Status.Phase)
}

// vmID is the deployment's VM, and the VM it replaces while that one
// drains (make before break): "i-new (+i-old draining)".
func vmID(d *manifests.Deployment) string {
	id := "<none>"
	if d.Status.VM != nil {
		id = shorten(d.Status.VM.ID, 19)
	}
	if dr := d.Status.Draining; dr != nil {
		id += " (+" + shorten(dr.ID, 19) + " draining)"
	}
	return id
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// printTable writes the human table for a kind.
func printTable(w io.Writer, now time.Time, kind manifests.Kind, objs []manifests.Object, wide, headers bool) {
	var t *table
	switch kind {
	case manifests.KindDeployment:
		h := []string{"NAME", "READY", "PHASE", "VM", "CREDENTIALS", "AGE"}
		if wide {
			h = append(h, "IMAGE", "VM-TYPE", "SPOT", "ADDRESS", "RECOVERIES", "SECRETS")
		}
		t = newTable(w)
		if headers {
			t.row(h...)
		}
		for _, o := range objs {
			d := o.(*manifests.Deployment)
			cols := []string{d.Metadata.Name, readiness(d), phaseOf(d), vmID(d), d.Spec.Credentials, age(now, d.Metadata.CreationTimestamp)}
			if wide {
				addr := "<none>"
				if d.Status.VM != nil && d.Status.VM.Address != "" {
					addr = d.Status.VM.Address
				}
				cols = append(cols, d.Spec.Image, orNone(d.Spec.VMType), fmt.Sprint(d.Spec.Spot.Enabled), addr,
					fmt.Sprint(d.Status.Recoveries), orNone(strings.Join(d.Spec.Secrets, ",")))
			}
			t.row(cols...)
		}
	case manifests.KindSecretBundle:
		h := []string{"NAME", "KEYS", "USED-BY", "STATUS", "UPDATED", "AGE"}
		t = newTable(w)
		if headers {
			t.row(h...)
		}
		for _, o := range objs {
			b := o.(*manifests.SecretBundle)
			users := make([]string, len(b.Status.UsedBy))
			for i, u := range b.Status.UsedBy {
				users[i] = u.Name
			}
			t.row(b.Metadata.Name, orNone(strings.Join(b.Status.Keys, ",")), orNone(strings.Join(users, ",")),
				orNone(b.Status.Phase), age(now, b.Status.UpdatedAt), age(now, b.Metadata.CreationTimestamp))
		}
	case manifests.KindCredentials:
		h := []string{"NAME", "PROVIDER", "REGION", "AUTH", "USED-BY", "AGE"}
		if wide {
			h = append(h, "ENDPOINT")
		}
		t = newTable(w)
		if headers {
			t.row(h...)
		}
		for _, o := range objs {
			c := o.(*manifests.Credentials)
			region, auth, endpoint := "-", "docker engine", "-"
			if a := c.Spec.AWS; a != nil {
				region = orNone(a.Region)
				switch {
				case a.AccessKeyID != "":
					auth = "static keys (" + a.AccessKeyID + ")"
				case a.Profile != "":
					auth = "profile " + a.Profile
				default:
					auth = "default chain"
				}
				if a.EndpointURL != "" {
					endpoint = a.EndpointURL
				}
			}
			cols := []string{c.Metadata.Name, c.Spec.Provider, region, auth, fmt.Sprint(len(c.Status.UsedBy)), age(now, c.Metadata.CreationTimestamp)}
			if wide {
				cols = append(cols, endpoint)
			}
			t.row(cols...)
		}
	}
	t.flush()
}
