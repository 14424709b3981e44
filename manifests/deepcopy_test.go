package manifests

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fill sets every field of v reachable through pointers, slices and maps
// to a non-zero value, so that a copy that forgets a field shows.
func fill(v reflect.Value, depth int) {
	switch v.Kind() {
	case reflect.Pointer:
		if depth > 6 {
			return
		}
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), depth+1)
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), depth+1)
			}
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range 2 {
			fill(s.Index(i), depth+1)
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, depth+1)
		fill(e, depth+1)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(7)
	}
}

func TestDeepCopyCopiesEveryFieldAndSharesNothing(t *testing.T) {
	for _, k := range []Kind{KindDeployment, KindSecretBundle, KindCredentials} {
		o, _ := New(k)
		fill(reflect.ValueOf(o).Elem(), 0)
		c := DeepCopy(o)
		if diff := cmp.Diff(o, c); diff != "" {
			t.Errorf("%s: copy differs (-orig +copy):\n%s", k, diff)
		}
		a, _ := json.Marshal(o)
		b, _ := json.Marshal(c)
		if string(a) != string(b) {
			t.Errorf("%s: copy marshals differently", k)
		}
		// Changing the copy's maps in place leaves the original as it was.
		reflect.ValueOf(c).Elem().FieldByName("Metadata").FieldByName("Labels").SetMapIndex(reflect.ValueOf("new"), reflect.ValueOf("y"))
		if _, ok := o.GetMeta().Labels["new"]; ok {
			t.Errorf("%s: the copy shares its labels with the original", k)
		}
	}
}

func BenchmarkDeepCopyDeployment(b *testing.B) {
	o, _ := New(KindDeployment)
	fill(reflect.ValueOf(o).Elem(), 0)
	for b.Loop() {
		DeepCopy(o)
	}
}
