package controlplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// watchDir keeps the store matching a directory of manifests, the way
// Flux keeps a cluster matching a Git checkout: on every change (fsnotify,
// plus a periodic re-read in case an event was missed) it loads the whole
// directory and applies it with prune, as `anycloud apply -f DIR -R
// --prune` would. A directory that does not load — a malformed file, an
// unset fromEnv variable — is reported and applies nothing, so what runs
// keeps running until the file is fixed.
type watchDir struct {
	dir      string
	set      string
	interval time.Duration
	srv      *api.Server
	store    state.Store
	log      logr.Logger

	mu     sync.Mutex
	status api.SourceStatus
}

func newWatchDir(dir string, interval time.Duration, srv *api.Server, store state.Store, log logr.Logger) (*watchDir, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("watch dir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("watch dir %s: not a directory", abs)
	}
	if interval <= 0 {
		interval = 30 * time.Second
	}
	w := &watchDir{dir: abs, set: manifests.DefaultApplySet([]string{abs}, true), interval: interval, srv: srv, store: store, log: log}
	w.status = api.SourceStatus{Dir: abs, ApplySet: w.set}
	return w, nil
}

// Status is the source's last outcome, for the API.
func (w *watchDir) Status() []api.SourceStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return []api.SourceStatus{w.status}
}

// Run applies now, then on every change and every interval.
func (w *watchDir) Run(ctx context.Context) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", w.dir, err)
	}
	defer fw.Close()
	w.addWatches(fw)
	w.log.Info("watching directory", "dir", w.dir, "applySet", w.set)
	w.apply(ctx)

	tick := time.NewTicker(w.interval)
	defer tick.Stop()
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return nil
			}
			if ev.Op.Has(fsnotify.Create) {
				w.addWatches(fw) // a new subdirectory
			}
			// Editors write in several steps: let them settle.
			settle = time.After(200 * time.Millisecond)
		case err, ok := <-fw.Errors:
			if !ok {
				return nil
			}
			w.log.Error(err, "watch error; relying on the periodic re-read", "dir", w.dir)
		case <-settle:
			settle = nil
			w.apply(ctx)
		case <-tick.C:
			w.apply(ctx)
		}
	}
}

// addWatches watches the directory and every subdirectory (not hidden
// ones, such as .git).
func (w *watchDir) addWatches(fw *fsnotify.Watcher) {
	filepath.WalkDir(w.dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if p != w.dir && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		fw.Add(p)
		return nil
	})
}

// apply loads and applies the directory once, recording the outcome.
func (w *watchDir) apply(ctx context.Context) {
	now := time.Now().UTC()
	ref := manifests.ObjectRef{Kind: "ApplySet", Name: w.set}
	fail := func(err error) {
		msg := err.Error()
		w.mu.Lock()
		changed := w.status.Ready || w.status.Message != msg
		w.status.Ready, w.status.Message, w.status.LastAttempt = false, msg, now
		w.mu.Unlock()
		if changed {
			w.log.Error(err, "directory not applied; what runs is left as it is", "dir", w.dir)
			w.store.RecordEvent(ctx, ref, state.Event{Type: state.EventWarning, Reason: "ApplyFailed", Message: msg})
		}
	}
	docs, err := manifests.Load([]string{w.dir}, manifests.LoadOptions{Recursive: true})
	if err != nil {
		fail(err)
		return
	}
	items, _, err := api.ItemsFromDocuments(docs, os.Getenv)
	if err != nil {
		fail(err)
		return
	}
	resp, err := w.srv.Apply(ctx, api.ApplyRequest{Items: items, ApplySet: w.set, Prune: true})
	if err != nil {
		fail(err)
		return
	}
	var created, configured, pruned int
	for _, r := range resp.Results {
		switch r.Action {
		case state.ActionCreated:
			created++
		case state.ActionConfigured:
			configured++
		case state.ActionPruned:
			pruned++
		}
	}
	msg := fmt.Sprintf("applied %d object(s): %d created, %d configured, %d pruned", len(items), created, configured, pruned)
	w.mu.Lock()
	wasReady := w.status.Ready
	w.status.Ready, w.status.Message, w.status.LastAttempt, w.status.LastApplied, w.status.Objects = true, msg, now, now, len(items)
	w.mu.Unlock()
	if created+configured+pruned > 0 || !wasReady {
		w.log.Info("directory applied", "dir", w.dir, "created", created, "configured", configured, "pruned", pruned)
		w.store.RecordEvent(ctx, ref, state.Event{Type: state.EventNormal, Reason: "Applied", Message: msg})
	}
}
