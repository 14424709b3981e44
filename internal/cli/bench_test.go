package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/anycloud/anycloud/internal/controlplane"
)

// BenchmarkApply10000Manifests applies a directory of 10,000 manifests
// (100 bundles and 9,900 deployments, one file each) through the CLI code
// path: read, decode strictly, validate, send over the socket, write in
// one store transaction. DESIGN §7: under 5 s.
func BenchmarkApply10000Manifests(b *testing.B) {
	dir := b.TempDir()
	for i := range 100 {
		writeBenchFile(b, dir, fmt.Sprintf("b%03d.yaml", i), fmt.Sprintf("apiVersion: anycloud.dev/v1\nkind: SecretBundle\nmetadata: {name: bundle-%d}\nspec:\n  stringData: {TOKEN: value-%d}\n", i, i))
	}
	for i := range 9900 {
		writeBenchFile(b, dir, fmt.Sprintf("d%05d.yaml", i), fmt.Sprintf(`apiVersion: anycloud.dev/v1
kind: Deployment
metadata:
  name: job-%d
  labels: {team: ml}
spec:
  image: ghcr.io/me/train:latest
  command: [python, train.py]
  vmType: g6e.xlarge
  spot: true
  env: {EPOCHS: "3"}
  secrets: [bundle-%d]
`, i, i%100))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		e := newBenchEnv(b)
		b.StartTimer()
		r := e.run("apply", "-f", dir)
		b.StopTimer()
		if r.err != nil {
			b.Fatalf("%v\n%s", r.err, r.stderr)
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.Sys)/(1<<20), "MiB-sys")
}

func writeBenchFile(b *testing.B, dir, name, content string) {
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		b.Fatal(err)
	}
}

// newBenchEnv is newEnv for benchmarks: the API and store only, so that
// the measurement is the apply itself.
func newBenchEnv(b *testing.B) *env {
	return newEnvFor(b, func(c *controlplane.Config) { c.APIOnly = true })
}
