package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

func newStore(t *testing.T) *state.Bolt {
	t.Helper()
	home, err := os.MkdirTemp("", "hub")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	s, err := state.OpenBolt(home, state.BoltOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func applyDeployment(t *testing.T, s state.Store, name string) {
	t.Helper()
	if err := tryApply(s, name); err != nil {
		t.Fatal(err)
	}
}

func tryApply(s state.Store, name string) error {
	d := &manifests.Deployment{TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindDeployment},
		Metadata: manifests.ObjectMeta{Name: name}, Spec: manifests.DeploymentSpec{Image: "x", Credentials: manifests.LocalCredentials}}
	_, err := s.Apply(context.Background(), []state.Write{{Object: d}}, state.ApplyOptions{})
	return err
}

func receive(t *testing.T, s *subscriber, event string) message {
	t.Helper()
	select {
	case m, ok := <-s.ch:
		if !ok {
			t.Fatalf("subscriber dropped while waiting for %s", event)
		}
		if m.event != event {
			t.Fatalf("got %s %s, want %s", m.event, m.data, event)
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10s", event)
	}
	return message{}
}

func TestHubFansOneWatchOutAndDropsASlowPage(t *testing.T) {
	store := newStore(t)
	applyDeployment(t, store, "web")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHub(ctx, store, logr.Discard())

	fast := h.subscribe()
	var rows []Row
	if err := json.Unmarshal(receive(t, fast, eventReset).data, &rows); err != nil || len(rows) != 1 || rows[0].Name != "web" {
		t.Fatalf("reset = %+v, %v", rows, err)
	}
	slow := h.subscribe() // never reads after its reset
	receive(t, slow, eventReset)

	// More changes than a page may lag behind: the slow page is dropped,
	// the fast one sees every change, and the store is never held up.
	n := subBuffer + 10
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			if err := tryApply(store, fmt.Sprintf("d%03d", i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := range n {
		m := receive(t, fast, eventRow)
		if want := fmt.Sprintf(`"name":"d%03d"`, i); !json.Valid(m.data) || !contains(m.data, want) {
			t.Fatalf("row %d = %s", i, m.data)
		}
	}
	<-done
	drained := 0
	for range slow.ch {
		drained++
	}
	if drained > subBuffer {
		t.Errorf("the slow page got %d messages after its reset, more than its buffer", drained)
	}
	if got := h.subscribers(); got != 1 {
		t.Errorf("%d subscribers, want the fast one only", got)
	}
	h.unsubscribe(slow) // a no-op for a dropped page

	// The last page out stops the watch; the next one starts another.
	h.unsubscribe(fast)
	h.mu.Lock()
	running := h.run != nil
	h.mu.Unlock()
	if running {
		t.Error("the watch runs with nobody listening")
	}
	again := h.subscribe()
	defer h.unsubscribe(again)
	if err := json.Unmarshal(receive(t, again, eventReset).data, &rows); err != nil || len(rows) != n+1 {
		t.Errorf("reset after a restart: %d rows, %v", len(rows), err)
	}
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }
