package state_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// BenchmarkApplyVersusBoltFloor applies 10,000 deployments (100 bundles
// each named by 99) in one store transaction, and writes the same
// records' JSON into a bare bbolt file in one transaction: the floor no
// store on bbolt can beat. Both fsync once. It reports both, their ratio
// (goal: about 5x at most) and the bytes allocated per object (goal: a
// few KB).
func BenchmarkApplyVersusBoltFloor(b *testing.B) {
	const bundles, deployments = 100, 9900
	writes := func() []state.Write {
		w := make([]state.Write, 0, bundles+deployments)
		for i := range bundles {
			w = append(w, bundleWrite(fmt.Sprintf("bundle-%d", i), map[string]string{"TOKEN": fmt.Sprintf("value-%d", i)}))
		}
		for i := range deployments {
			d := deployment(fmt.Sprintf("job-%d", i), manifests.LocalCredentials, fmt.Sprintf("bundle-%d", i%bundles))
			d.Metadata.Labels = map[string]string{"team": "ml"}
			d.Spec.VMType, d.Spec.Spot, d.Spec.Env = "g6e.xlarge", manifests.SpotSpec{Enabled: true}, map[string]string{"EPOCHS": "3"}
			w = append(w, state.Write{Object: d})
		}
		return w
	}
	var applyTime, floorTime, applyCPU, floorCPU time.Duration
	var allocated uint64
	rounds := 0
	for b.Loop() {
		b.StopTimer()
		s, _ := openStore(b)
		w := writes()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		start, cpu0 := time.Now(), cpu()
		if _, err := s.Apply(context.Background(), w, state.ApplyOptions{}); err != nil {
			b.Fatal(err)
		}
		applyTime += time.Since(start)
		applyCPU += cpu() - cpu0
		b.StopTimer()
		runtime.ReadMemStats(&after)
		allocated += after.TotalAlloc - before.TotalAlloc

		// The floor: the same objects' JSON, one Put each, one commit.
		recs := make([][]byte, len(w))
		for i, x := range w {
			recs[i], _ = json.Marshal(x.Object)
		}
		db, err := bolt.Open(filepath.Join(b.TempDir(), "floor.db"), 0o600, nil)
		if err != nil {
			b.Fatal(err)
		}
		start, cpu0 = time.Now(), cpu()
		err = db.Update(func(tx *bolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("objects"))
			if err != nil {
				return err
			}
			for i, r := range recs {
				if err := bk.Put(fmt.Appendf(nil, "%08d", i), r); err != nil {
					return err
				}
			}
			return nil
		})
		floorTime += time.Since(start)
		floorCPU += cpu() - cpu0
		db.Close()
		if err != nil {
			b.Fatal(err)
		}
		rounds++
		b.StartTimer()
	}
	n := float64(bundles + deployments)
	b.ReportMetric(applyTime.Seconds()/float64(rounds), "s-apply")
	b.ReportMetric(floorTime.Seconds()/float64(rounds), "s-bolt-floor")
	b.ReportMetric(float64(applyTime)/float64(floorTime), "ratio")
	// CPU time says the same on a machine busy with other work, where
	// wall time mostly measures the wait for a core.
	b.ReportMetric(applyCPU.Seconds()/float64(rounds), "cpu-s-apply")
	b.ReportMetric(floorCPU.Seconds()/float64(rounds), "cpu-s-bolt-floor")
	b.ReportMetric(float64(allocated)/float64(rounds)/n, "B-alloc-per-object")
}

// cpu is this process's user and system CPU time.
func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
