package state

import (
	"context"

	bolt "go.etcd.io/bbolt"

	"github.com/anycloud/anycloud/manifests"
)

// watchBuffer is how many changes a watcher may lag behind before it is
// dropped (its channel closed) and must watch again.
const watchBuffer = 4096

type watcher struct {
	ch     chan WatchEvent
	closed bool
}

func (w *watcher) close() {
	if !w.closed {
		w.closed = true
		close(w.ch)
	}
}

// Watch implements Store. The snapshot and the subscription are taken under
// the write lock, so no change falls between them.
func (s *Bolt) Watch(ctx context.Context, k manifests.Kind) ([]manifests.Object, <-chan WatchEvent, error) {
	w := &watcher{ch: make(chan WatchEvent, watchBuffer)}
	s.mu.Lock()
	var snapshot []manifests.Object
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		snapshot, err = listObjects(boltTx{tx}, k)
		return err
	})
	if err != nil {
		s.mu.Unlock()
		return nil, nil, err
	}
	if s.watchers[k] == nil {
		s.watchers[k] = map[*watcher]struct{}{}
	}
	s.watchers[k][w] = struct{}{}
	s.mu.Unlock()

	go func() {
		<-ctx.Done()
		s.mu.Lock()
		delete(s.watchers[k], w)
		w.close()
		s.mu.Unlock()
	}()
	return snapshot, w.ch, nil
}

// publish sends committed changes to watchers; s.mu is held. A watcher
// whose buffer is full is closed rather than allowed to stall writes.
func (s *Bolt) publish(events []WatchEvent) {
	for _, ev := range events {
		for w := range s.watchers[ev.Object.GetKind()] {
			select {
			case w.ch <- WatchEvent{Type: ev.Type, Object: manifests.DeepCopy(ev.Object)}:
			default:
				delete(s.watchers[ev.Object.GetKind()], w)
				w.close()
			}
		}
	}
}
