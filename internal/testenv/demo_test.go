package testenv

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// Two checkouts of the same source build the same demo image: two suites
// on one machine (make test beside go test -race) each build it, and a
// tag that moved between their images would leave one suite's pushed or
// running image nameless under it (seen: "unable to remove repository
// reference … container … is using its referenced image").
func TestTwoCheckoutsBuildTheSameDemoImage(t *testing.T) {
	c := RequireDocker(t)
	id := func(root string) string {
		t.Helper()
		if err := buildDemo(c, root); err != nil {
			t.Fatal(err)
		}
		img, err := c.ImageInspect(context.Background(), DemoImage)
		if err != nil {
			t.Fatal(err)
		}
		return img.ID
	}
	// Another checkout: the module file and the demo, at another path.
	other := t.TempDir()
	for _, f := range []string{"go.mod", "go.sum", "examples/demo/main.go", "examples/demo/Dockerfile"} {
		data, err := os.ReadFile(filepath.Join(RepoRoot(), f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(other, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(other, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	here := id(RepoRoot())
	if there := id(other); there != here {
		t.Errorf("%s is %s built here and %s built from another checkout of the same source", DemoImage, here, there)
	}
	// Leave the tag on this checkout's image for the tests after this one.
	if again := id(RepoRoot()); again != here {
		t.Errorf("%s moved from %s to %s on a second build here", DemoImage, here, again)
	}
}
