package cli

import (
	"strings"
	"testing"

	"github.com/anycloud/anycloud/manifests"
)

func TestJSONPathRendersFieldsOfEachObject(t *testing.T) {
	d := &manifests.Deployment{
		TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindDeployment},
		Metadata: manifests.ObjectMeta{Name: "hello"},
		Spec:     manifests.DeploymentSpec{Image: "img", Secrets: []string{"a", "b"}},
		Status:   manifests.DeploymentStatus{Attempt: 3, VM: &manifests.VMStatus{ID: "c0ffee"}},
	}
	for tmpl, want := range map[string]string{
		"{.status.vm.id}":                              "c0ffee",
		"{.metadata.name} {.spec.secrets[1]}":          "hello b",
		"vm={.status.vm.id},attempt={.status.attempt}": "vm=c0ffee,attempt=3",
		"{.spec.secrets}":                              `["a","b"]`,
		"{.status.vm.nothing}{.spec.secrets[9]}":       "",
	} {
		jp, err := parseJSONPath(tmpl)
		if err != nil {
			t.Fatalf("%s: %v", tmpl, err)
		}
		if got, _ := jp.eval(d); got != want {
			t.Errorf("%s = %q, want %q", tmpl, got, want)
		}
	}
	for _, bad := range []string{"{.a", "{status}", "{.items[*].x}"} {
		if _, err := parseJSONPath(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestQuickstartKillCommandKillsOnlyThisControlPlanesContainer: the
// README's `docker kill $(docker ps -q --filter label=anycloud.deployment=hello)`
// killed every control plane's "hello" on a shared engine. The command it
// gives now names exactly this control plane's VM.
func TestQuickstartKillCommandKillsOnlyThisControlPlanesContainer(t *testing.T) {
	mine, theirs := newDockerEnv(t), newDockerEnv(t)
	for _, e := range []*dockerEnv{mine, theirs} {
		e.must("submit", e.image, "--name", "hello", "--wait", "--timeout", "60s")
	}
	before := theirs.running("hello")
	id := strings.TrimSpace(mine.must("get", "deploy", "hello", "-o", "jsonpath={.status.vm.id}").stdout)
	target := mine.running("hello")
	if !strings.HasPrefix(id, target.ID) {
		t.Fatalf("jsonpath gave %q, want the id of %s", id, target.ID)
	}
	mine.kill(ctr{ID: id})
	mine.eventually("my hello replaced", func() bool {
		for _, c := range mine.containers("hello") {
			if c.State == "running" && c.ID != target.ID {
				return true
			}
		}
		return false
	})
	if c := theirs.running("hello"); c.ID != before.ID {
		t.Errorf("the other control plane's container was killed: %s, was %s", c.ID, before.ID)
	}
}
