package dashboard

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// Stream event names, as the page's script listens for them.
const (
	// eventReset carries every row: the page replaces its table.
	eventReset = "reset"
	// eventRow carries one created or changed row.
	eventRow = "row"
	// eventGone carries the name of a deleted deployment.
	eventGone = "gone"
)

// message is one server-sent event, encoded once for every subscriber.
type message struct {
	event string
	data  []byte
}

// subBuffer is how many messages a page may lag behind before it is
// dropped; its browser reconnects and starts again from a reset.
const subBuffer = 256

type subscriber struct {
	ch chan message
}

// hub fans one store watch of deployments out to every open page. It
// watches only while at least one page is subscribed, so that an unused
// dashboard costs the store nothing: the store copies every change for
// each watcher, on its write path. Rows are encoded once per change,
// however many pages listen; a page that falls behind is dropped rather
// than allowed to hold the others up.
type hub struct {
	// base bounds every watch: it ends when the server stops.
	base  context.Context
	store Reader
	log   logr.Logger
	// retry is the pause before watching again after the store refused.
	retry time.Duration

	mu   sync.Mutex
	subs map[*subscriber]struct{}
	// run is the current watch (nil when nobody listens); its cancel
	// stops it.
	run *watchRun
	// rows is the latest row of every deployment, encoded, while a watch
	// runs; nil before its first snapshot.
	rows map[string][]byte
}

type watchRun struct{ cancel context.CancelFunc }

func newHub(base context.Context, store Reader, log logr.Logger) *hub {
	return &hub{base: base, store: store, log: log, retry: time.Second, subs: map[*subscriber]struct{}{}}
}

// subscribe adds a page. The first message it gets is a reset with every
// row. It must be paired with unsubscribe.
func (h *hub) subscribe() *subscriber {
	s := &subscriber{ch: make(chan message, subBuffer)}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[s] = struct{}{}
	if h.run == nil {
		wctx, cancel := context.WithCancel(h.base)
		run := &watchRun{cancel: cancel}
		h.run = run
		go h.watch(wctx, run)
	} else if h.rows != nil {
		s.ch <- h.resetLocked()
	}
	return s
}

// unsubscribe removes a page; the last one out stops the watch.
func (h *hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s]; ok {
		delete(h.subs, s)
		close(s.ch)
	}
	if len(h.subs) == 0 && h.run != nil {
		h.run.cancel()
		h.run, h.rows = nil, nil
	}
}

// subscribers is how many pages listen.
func (h *hub) subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// watch follows the store until ctx ends, watching again when the store
// drops it for falling behind.
func (h *hub) watch(ctx context.Context, run *watchRun) {
	for ctx.Err() == nil {
		snapshot, ch, err := h.store.Watch(ctx, manifests.KindDeployment)
		if err != nil {
			if ctx.Err() == nil {
				h.log.Error(err, "watch deployments for the dashboard; retrying")
			}
			select {
			case <-ctx.Done():
			case <-time.After(h.retry):
			}
			continue
		}
		rows := make(map[string][]byte, len(snapshot))
		for _, o := range snapshot {
			rows[o.GetMeta().Name] = encodeRow(o)
		}
		h.mu.Lock()
		if h.run != run {
			h.mu.Unlock()
			return
		}
		h.rows = rows
		h.broadcastLocked(h.resetLocked())
		h.mu.Unlock()
		for ev := range ch {
			name := ev.Object.GetMeta().Name
			var m message
			var row []byte
			if ev.Type == state.Deleted {
				m = message{event: eventGone, data: mustJSON(map[string]string{"name": name})}
			} else {
				row = encodeRow(ev.Object)
				m = message{event: eventRow, data: row}
			}
			h.mu.Lock()
			if h.run != run {
				h.mu.Unlock()
				return
			}
			if row == nil {
				delete(h.rows, name)
			} else {
				h.rows[name] = row
			}
			h.broadcastLocked(m)
			h.mu.Unlock()
		}
	}
}

// broadcastLocked sends m to every page that has room; h.mu is held. A
// full page is dropped: its stream ends and the browser reconnects.
func (h *hub) broadcastLocked(m message) {
	for s := range h.subs {
		select {
		case s.ch <- m:
		default:
			delete(h.subs, s)
			close(s.ch)
		}
	}
	if len(h.subs) == 0 && h.run != nil {
		h.run.cancel()
		h.run, h.rows = nil, nil
	}
}

// resetLocked is the reset message of the current rows, sorted by name;
// h.mu is held.
func (h *hub) resetLocked() message {
	names := make([]string, 0, len(h.rows))
	for n := range h.rows {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	b.WriteByte('[')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(h.rows[n])
	}
	b.WriteByte(']')
	return message{event: eventReset, data: []byte(b.String())}
}

func encodeRow(o manifests.Object) []byte {
	d, ok := o.(*manifests.Deployment)
	if !ok {
		return mustJSON(Row{Name: o.GetMeta().Name})
	}
	return mustJSON(RowOf(d))
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Rows hold strings, numbers, times, slices and maps of strings.
		panic("dashboard: encode: " + err.Error())
	}
	return b
}
