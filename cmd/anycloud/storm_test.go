package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider/local"
	"github.com/anycloud/anycloud/state"
)

// TestKillStormLosesNothingAndLeavesNoDuplicateOrOrphan kills the real
// control plane with SIGKILL over and over while parallel writers apply,
// delete, rewrite bundles and rotate the cipher key through its API, then
// lets it converge. It reports the rounds, the acknowledged objects lost,
// and the duplicate and orphan containers left on the engine: all three
// counts must be 0.
func TestKillStormLosesNothingAndLeavesNoDuplicateOrOrphan(t *testing.T) {
	docker := testenv.RequireDocker(t)
	image := testenv.RequireDemoImage(t)
	rounds := 15
	if testing.Short() {
		rounds = 5
	}
	home := testenv.ShortTempDir(t)
	start := func() *exec.Cmd {
		cmd := exec.Command(binary, "controller", "--home", home, "--resync", "2s", "--orphan-grace", "3s")
		logf, _ := os.OpenFile(filepath.Join(home, "storm.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c := api.NewClient(filepath.Join(home, api.SocketFile))
		for deadline := time.Now().Add(30 * time.Second); c.Ping(context.Background()) != nil; {
			if time.Now().After(deadline) {
				log, _ := os.ReadFile(filepath.Join(home, "storm.log"))
				t.Fatalf("the control plane did not come back:\n%s", log)
			}
			time.Sleep(20 * time.Millisecond)
		}
		return cmd
	}
	ctl := start()
	cluster := clusterOf(t, home)
	t.Cleanup(func() { removeCluster(docker, cluster) })
	c := api.NewClient(filepath.Join(home, api.SocketFile))

	// What the writers were told succeeded.
	var (
		mu      sync.Mutex
		created = map[string]bool{} // acknowledged applies, not deleted since
		deleted = map[string]bool{} // acknowledged deletes
		bundles = map[string]string{}
	)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bundle := fmt.Sprintf("b%d", w)
			for i := 0; ctx.Err() == nil; i++ {
				value := fmt.Sprintf("v-%d-%d", w, i)
				b := fmt.Sprintf(`{"apiVersion":"anycloud.dev/v1","kind":"SecretBundle","metadata":{"name":%q},"spec":{}}`, bundle)
				if _, err := c.Apply(ctx, api.ApplyRequest{Items: []api.ApplyItem{{Object: json.RawMessage(b), Secrets: map[string]string{"TOKEN": value}}}}); err == nil {
					mu.Lock()
					bundles[bundle] = value
					mu.Unlock()
				}
				name := fmt.Sprintf("w%d-%d", w, i)
				d := fmt.Sprintf(`{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":%q},"spec":{"image":%q,"secrets":[%q]}}`, name, image, bundle)
				if _, err := c.Apply(ctx, api.ApplyRequest{Items: []api.ApplyItem{{Object: json.RawMessage(d)}}}); err == nil {
					mu.Lock()
					created[name] = true
					mu.Unlock()
				}
				if i%3 == 2 { // delete an earlier one
					victim := fmt.Sprintf("w%d-%d", w, i-2)
					_, err := c.Delete(ctx, manifests.KindDeployment, victim, state.DeleteOptions{})
					mu.Lock()
					if err == nil || (errors.Is(err, state.ErrNotFound) && created[victim]) {
						deleted[victim] = true
					}
					// A delete that got no answer (the control plane was
					// killed meanwhile) may have happened: the victim is no
					// longer an acknowledged deployment either way.
					delete(created, victim)
					mu.Unlock()
				}
				if w == 0 && i%4 == 3 {
					c.RotateKey(ctx)
				}
				time.Sleep(time.Duration(150+rand.IntN(200)) * time.Millisecond)
			}
		}()
	}
	for range rounds {
		time.Sleep(time.Duration(150+rand.IntN(500)) * time.Millisecond)
		ctl.Process.Signal(syscall.SIGKILL)
		ctl.Wait()
		ctl = start()
	}
	stop()
	wg.Wait()
	defer func() { ctl.Process.Signal(syscall.SIGTERM); ctl.Wait() }()

	// Converge: every acknowledged deployment stored and Ready on exactly
	// one running container; nothing else of ours running.
	bg := context.Background()
	lost := 0
	for name := range created {
		if _, err := c.Get(bg, manifests.KindDeployment, name); errors.Is(err, state.ErrNotFound) {
			t.Errorf("acknowledged deployment %s was lost", name)
			lost++
		}
	}
	for name, want := range bundles {
		if _, err := c.Get(bg, manifests.KindSecretBundle, name); err != nil {
			t.Errorf("acknowledged bundle %s (last value %s): %v", name, want, err)
			lost++
		}
	}
	var duplicates, orphans, notReady int
	deadline := time.Now().Add(3 * time.Minute)
	for {
		objs, err := c.List(bg, manifests.KindDeployment)
		if err != nil {
			t.Fatal(err)
		}
		uids := map[string]bool{}
		notReady = 0
		for _, o := range objs {
			d := o.(*manifests.Deployment)
			uids[d.Metadata.UID] = true
			if deleted[d.Metadata.Name] && d.Metadata.DeletionTimestamp == nil {
				t.Fatalf("deployment %s was deleted (acknowledged) and is back", d.Metadata.Name)
			}
			rc := manifests.FindCondition(d.Status.Conditions, manifests.ConditionReady)
			if d.Metadata.DeletionTimestamp != nil || rc == nil || rc.Status != manifests.ConditionTrue {
				notReady++
			}
		}
		res, err := docker.ContainerList(bg, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", local.LabelCluster+"="+cluster)})
		if err != nil {
			t.Fatal(err)
		}
		running := map[string]int{}
		orphans = 0
		for _, ct := range res.Items {
			if ct.State != "running" {
				continue
			}
			uid := ct.Labels[local.LabelUID]
			if !uids[uid] {
				orphans++
			}
			running[uid]++
		}
		duplicates = 0
		for uid, n := range running {
			if uids[uid] && n > 1 {
				duplicates += n - 1
			}
		}
		if notReady == 0 && duplicates == 0 && orphans == 0 {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("kill -9 storm: rounds=%d writers=3 acknowledged-deployments=%d deleted=%d objects-lost=%d duplicates=%d orphans=%d not-ready=%d",
		rounds, len(created), len(deleted), lost, duplicates, orphans, notReady)
	if lost != 0 || duplicates != 0 || orphans != 0 || notReady != 0 {
		log, _ := os.ReadFile(filepath.Join(home, "storm.log"))
		if len(log) > 8000 {
			log = log[len(log)-8000:]
		}
		t.Fatalf("after the storm: lost=%d duplicates=%d orphans=%d not-ready=%d\n%s", lost, duplicates, orphans, notReady, log)
	}
	// Every acknowledged value is there (or a later one, whose answer the
	// kill cut off), under whatever key the rotations left: a backup,
	// opened with the home's keys, shows it.
	backup := filepath.Join(t.TempDir(), "b.db")
	if r := anycloud(t, home, nil, "backup", backup); r.code != 0 {
		t.Fatalf("backup after the storm: %+v", r)
	}
	restored := t.TempDir()
	for src, dst := range map[string]string{backup: state.DBFile, filepath.Join(home, "cipher.key"): "cipher.key", filepath.Join(home, "seal.key"): "seal.key"} {
		b, _ := os.ReadFile(src)
		os.WriteFile(filepath.Join(restored, dst), b, 0o600)
	}
	s, err := state.OpenBolt(restored, state.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for name, want := range bundles {
		v, _, err := s.OpenSecrets(bg, manifests.KindSecretBundle, name)
		var w, i, got int
		fmt.Sscanf(want, "v-%d-%d", &w, &i)
		fmt.Sscanf(v["TOKEN"], fmt.Sprintf("v-%d-%%d", w), &got)
		if err != nil || got < i {
			t.Errorf("bundle %s: %q (%v), want %s or later", name, v["TOKEN"], err, want)
		}
	}
}
